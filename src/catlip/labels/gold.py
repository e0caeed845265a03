"""A hand-labelled caption set and a scorer: how close an extractor comes to what a careful reader would assign.

The set (tests/data/gold_captions.jsonl) is one JSON object per line:
    {"id": "<image>#<n>", "caption": "...",
     "labels":  [{"key": "n%08d", "word": "<caption word(s)>", "synset": "<first lemma>"}, ...],
     "generic": [same form],   "note": "optional", "source": "how the caption was selected"}
`labels` are the WordNet 3.0 noun synsets the caption means (the sense meant, one synset for a multi-word noun
WordNet lists); `generic` holds nouns that may be labelled but need not be: scene words ("background", "front",
"air", "group"), noun modifiers ("a *water* shower"), abstract nouns ("fun") and absent things ("with no shirt").

The committed set holds 356 captions of the Flickr8k test split (1,000 images), labelled by hand from the WordNet
glosses, not by any extractor: the first caption of every 5th test image in file-name order (200, the caption
number cycling 0..4), then the first test captions (at most two per image) showing each hard case: plural nouns
that are WordNet lemmas of their own ("shoes", "pants", "waters"), colour + garment collocations ("yellow jacket",
"white house", "red jersey"), "-ing" words after nouns, captions starting with a bare noun, capitalised names, and
compounds ("ice cream", "swimming pool", "tennis ball"). Each record's "source" says which rule picked it.

`score(extract, gold)` is micro-averaged over all captions: a predicted key is correct if it is in the caption's
`labels` or `generic`; recall counts `labels` only. So generic nouns are neither required nor penalised.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

_FIELDS = ("labels", "generic")


def load_gold(path: str | Path) -> list[dict]:
    """Read the gold JSONL file; every record has "id", "caption" and "labels"/"generic" lists of {"key", ...}."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("caption"), str) or "id" not in rec:
                raise ValueError(f"{path}:{lineno}: a record needs an 'id' and a 'caption' string")
            for field in _FIELDS:
                items = rec.setdefault(field, [])
                if not isinstance(items, list) or not all(isinstance(x, dict) and "key" in x for x in items):
                    raise ValueError(f"{path}:{lineno}: '{field}' must be a list of objects with a 'key'")
            records.append(rec)
    return records


def score(extract: Callable[[str], Iterable[str]] | object, gold: list[dict]) -> dict:
    """Micro precision / recall / F1 of `extract` (a function caption -> keys, or an object with .extract) on
    `gold`, plus the per-caption errors: "missed" (gold labels not predicted, with their words) and "wrong"
    (predicted keys in neither list), and the most frequent missed and wrong keys over the set."""
    fn = getattr(extract, "extract", extract)
    predicted = correct = found = wanted = 0
    misses, missed_keys, wrong_keys = [], Counter(), Counter()
    for rec in gold:
        pred = list(dict.fromkeys(fn(rec["caption"])))
        labels = {x["key"]: x for x in rec["labels"]}
        allowed = labels.keys() | {x["key"] for x in rec["generic"]}
        wrong = [k for k in pred if k not in allowed]
        missed = [labels[k] for k in labels if k not in pred]
        predicted += len(pred)
        correct += len(pred) - len(wrong)
        wanted += len(labels)
        found += len(labels) - len(missed)
        missed_keys.update(x["key"] for x in missed)
        wrong_keys.update(wrong)
        if missed or wrong:
            missed = [{"key": x["key"], "word": x.get("word"), "synset": x.get("synset")} for x in missed]
            misses.append({"id": rec["id"], "caption": rec["caption"], "predicted": pred, "missed": missed,
                           "wrong": wrong})
    p = correct / predicted if predicted else 0.0
    r = found / wanted if wanted else 0.0
    return {"captions": len(gold), "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "predicted": predicted, "correct": correct, "gold_labels": wanted, "found": found,
            "captions_exact": len(gold) - len(misses), "misses": misses,
            "missed_keys": missed_keys.most_common(), "wrong_keys": wrong_keys.most_common()}
