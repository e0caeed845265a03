"""Transfer Init (CatLIP Sec. 4.2): initialise a target classifier from the rows of the pre-trained head.

Each target class is mapped to vocabulary entries:

* CatLIP vocabularies (WordNet synset keys): ``exact`` when the class's wnid, its name's first noun sense (after
  morphy) or any other sense of the name is in the vocabulary; else ``similar``: the vocabulary synset of highest
  path similarity (>= alpha) to the class's synset; else, for names of several words ("restaurant kitchen"),
  ``averaged``: the nouns the CatLIP extractor finds in the name, each mapped exactly or by similarity, rows
  averaged; else ``random``.
* SuperClass vocabularies (BPE ids): the rows of the name's BPE tokens, averaged when there are several.

Unmapped classes keep the random initialisation and are listed in the coverage report, never dropped.
The paper gives no value for alpha; we default to 0.5, i.e. the class's synset or a direct hypernym/hyponym
(path similarity 1/(d+1) >= 0.5 means distance <= 1).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from catlip.evaluate.datasets import ClassList

KINDS = ("exact", "similar", "averaged", "random")
DEFAULT_ALPHA = 0.5


@dataclass
class ClassMapping:
    index: int
    name: str
    wnid: str | None
    kind: str  # one of KINDS
    keys: list[str] = field(default_factory=list)  # vocabulary keys whose head rows are used
    rows: list[int] = field(default_factory=list)  # their vocabulary ids
    similarity: float | None = None  # path similarity of a "similar" match
    detail: str = ""


@dataclass
class CoverageReport:
    dataset: str
    vocab_method: str
    alpha: float
    classes: list[ClassMapping]

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(m.kind == k for m in self.classes) for k in KINDS}

    @property
    def unmapped(self) -> list[str]:
        return [m.name for m in self.classes if m.kind == "random"]

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "vocab_method": self.vocab_method, "alpha": self.alpha,
                "num_classes": len(self.classes), "counts": self.counts, "unmapped": self.unmapped,
                "classes": [asdict(m) for m in self.classes]}

    def summary(self) -> str:
        c, n = self.counts, len(self.classes)
        parts = ", ".join(f"{k} {c[k]}" for k in KINDS)
        line = f"Transfer Init coverage of {self.dataset or 'target'} ({n} classes, alpha={self.alpha}): {parts}"
        if self.unmapped:
            shown = ", ".join(self.unmapped[:20]) + (f", … (+{len(self.unmapped) - 20})" if len(self.unmapped) > 20 else "")
            line += f"\n  random init (unmapped): {shown}"
        return line


def clean_name(name: str, lower: bool = True) -> str:
    """'/r/restaurant_kitchen' -> 'restaurant kitchen'; 'sea lion (animal)' -> 'sea lion'."""
    name = re.sub(r"^(/[a-z]/)+", "", name.strip())
    name = name.lower() if lower else name
    name = re.sub(r"\([^)]*\)", " ", name).replace("/", " ").replace("_", " ").replace("-", " ")
    return " ".join(name.split())


class ClassMapper:
    """Maps class names (and wnids) to vocabulary entries; built once per vocabulary."""

    def __init__(self, vocab: Any, alpha: float = DEFAULT_ALPHA, wordnet: Any = None):
        self.vocab = vocab
        self.alpha = alpha
        self.method = getattr(vocab, "method", "catlip")
        self._wordnet = wordnet
        self._index = None
        self._extractor = None

    # --------------------------------------------------------- public

    def map(self, classes: ClassList, dataset: str = "") -> CoverageReport:
        fn = self._map_subwords if self.method == "superclass" else self._map_synsets
        out = [fn(i, name, wnid) for i, (name, wnid) in enumerate(zip(classes.names, classes.wnids))]
        return CoverageReport(dataset, self.method, self.alpha, out)

    # --------------------------------------------------------- CatLIP: WordNet synsets

    @property
    def wordnet(self):
        if self._wordnet is None:
            from catlip.labels.wordnet import get_wordnet

            self._wordnet = get_wordnet()
        return self._wordnet

    def _row(self, key: str) -> int | None:
        return self.vocab.id(key)

    def _senses(self, phrase: str) -> list[str]:
        senses: list[str] = []
        for base in self.wordnet.morphy(phrase) or []:
            senses += [s for s in self.wordnet.noun_synsets(base) if s not in senses]
        return senses

    def _similar(self, target: str) -> tuple[str, float] | None:
        if self._index is None:
            from catlip.analysis.coverage import CorpusIndex

            counts = getattr(self.vocab, "counts", None)
            keys = list(self.vocab.keys)
            if isinstance(counts, dict):
                counts = {k: int(counts.get(k, 0)) for k in keys}
            elif counts is not None and len(counts) == len(keys):
                counts = dict(zip(keys, map(int, counts)))
            else:
                counts = dict.fromkeys(keys, 0)
            self._index = CorpusIndex(counts, self._safe_paths)
        try:
            match = self._index.best_match(target)
        except KeyError:
            return None
        if match is None or match.similarity < self.alpha - 1e-9:
            return None
        return match.key, match.similarity

    def _safe_paths(self, key: str) -> list[list[str]]:
        try:
            return self.wordnet.hypernym_paths(key)
        except KeyError:  # a vocabulary key WordNet does not know (e.g. a hand-made test entry)
            return [[key]]

    def _map_word(self, phrase: str, wnid: str | None = None) -> tuple[str, list[str], float | None, str]:
        """(kind, keys, similarity, detail) for one phrase; kind is exact, similar or random."""
        if wnid and self._row(wnid) is not None:
            return "exact", [wnid], None, "wnid in vocabulary"
        senses = self._senses(phrase)
        present = [s for s in senses if self._row(s) is not None]
        if present:
            which = "first noun sense" if present[0] == senses[0] else f"noun sense #{senses.index(present[0]) + 1}"
            return "exact", [present[0]], None, which
        target = wnid or (senses[0] if senses else None)
        if target:
            hit = self._similar(target)
            if hit:
                return "similar", [hit[0]], hit[1], f"nearest vocabulary synset to {target}"
        return "random", [], None, "not a WordNet noun" if not target else f"nothing within similarity {self.alpha}"

    def _map_synsets(self, index: int, name: str, wnid: str | None) -> ClassMapping:
        phrase = clean_name(name)
        kind, keys, sim, detail = self._map_word(phrase, wnid)
        if kind != "random" or len(phrase.split()) < 2:
            return ClassMapping(index, name, wnid, kind, keys, [self._row(k) for k in keys], sim, detail)
        # Several words and no synset for the whole name: the nouns the CatLIP extractor finds in the name
        # (part-of-speech tagged, collocations first, as the paper labels captions) are mapped one by one and
        # their rows averaged ("restaurant kitchen"); adjectives ("European", "black") never contribute.
        tried = set(self._senses(phrase)) | {wnid}
        nouns = [k for k in self._extract(clean_name(name, lower=False)) if k not in tried]
        mapped, missing = [], []
        for key in nouns:
            hit = key if self._row(key) is not None else (self._similar(key) or (None,))[0]
            (mapped if hit else missing).append((key, hit))
        if not mapped:
            why = "no noun of the name maps" if nouns else detail
            return ClassMapping(index, name, wnid, "random", [], [], None, why)
        keys = list(dict.fromkeys(hit for _, hit in mapped))
        detail = "nouns " + ", ".join(self._name(k) for k, _ in mapped)
        if missing:
            detail += "; unmapped nouns " + ", ".join(self._name(k) for k, _ in missing)
        return ClassMapping(index, name, wnid, "averaged", keys, [self._row(k) for k in keys], None, detail)

    def _extract(self, text: str) -> list[str]:
        if self._extractor is None:  # the extractor the vocabulary was built with (same options)
            from catlip.labels import get_extractor

            make = getattr(self.vocab, "extractor", None)
            self._extractor = make() if callable(make) else get_extractor(self.method, **dict(self.vocab.options))
        return self._extractor.extract(text)

    def _name(self, key: str) -> str:
        try:
            return self.wordnet.name(key)
        except KeyError:
            return key

    # --------------------------------------------------------- SuperClass: BPE tokens

    def _map_subwords(self, index: int, name: str, wnid: str | None) -> ClassMapping:
        tokens = self._extract(clean_name(name))
        keys = [t for t in tokens if self._row(t) is not None]
        missing = [t for t in tokens if self._row(t) is None]
        if not keys:
            return ClassMapping(index, name, wnid, "random", [], [], None, "no BPE token in vocabulary")
        kind = "exact" if len(tokens) == 1 else "averaged"
        detail = f"{len(keys)} of {len(tokens)} BPE tokens" + (f"; missing {missing}" if missing else "")
        return ClassMapping(index, name, wnid, kind, keys, [self._row(k) for k in keys], None, detail)


def map_classes(classes: ClassList, vocab: Any, alpha: float = DEFAULT_ALPHA, dataset: str = "",
                wordnet: Any = None) -> CoverageReport:
    return ClassMapper(vocab, alpha, wordnet).map(classes, dataset)


def transferred_rows(weight: torch.Tensor, bias: torch.Tensor | None, report: CoverageReport
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight (C, D), bias (C,), mapped mask (C,)): each mapped class's rows averaged; zeros where unmapped."""
    num, dim = len(report.classes), weight.shape[1]
    w = torch.zeros(num, dim, dtype=weight.dtype)
    b = torch.zeros(num, dtype=weight.dtype)
    mask = torch.zeros(num, dtype=torch.bool)
    for m in report.classes:
        if not m.rows:
            continue
        rows = torch.tensor(m.rows)
        w[m.index] = weight.detach().cpu()[rows].mean(0)
        if bias is not None:
            b[m.index] = bias.detach().cpu()[rows].mean(0)
        mask[m.index] = True
    return w, b, mask


def transfer_init(weight: torch.Tensor, bias: torch.Tensor | None, report: CoverageReport, seed: int = 0) -> nn.Linear:
    """A new ``nn.Linear`` for the target classes: mapped rows copied (averaged), the rest at random init.

    The random rows use the same seeded ``nn.Linear`` initialisation as a Random Init probe, so the two differ
    only where a mapping exists.
    """
    torch.manual_seed(seed)
    lin = nn.Linear(weight.shape[1], len(report.classes))
    w, b, mask = transferred_rows(weight, bias, report)
    with torch.no_grad():
        lin.weight[mask] = w[mask].float()
        lin.bias[mask] = b[mask].float()
    return lin
