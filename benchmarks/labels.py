"""Benchmark the caption → label engine against a reference of the original CatLIP (corenet) code on NLTK.

Run: .venv/bin/python benchmarks/labels.py   (writes benchmarks/results/labels.json, prints a markdown table)

Everything is measured in this one process, on the 40k Flickr8k captions (../shared/data/flickr8k):
  * speed (captions/s, CPU time of this process = per core, and wall time) of ours and of the reference, cold
    (fresh caches, resources already loaded; load time reported separately) and warm (second pass), timed
    chunk by chunk in turn so that other load on a shared machine affects all extractors alike;
  * label agreement (micro precision/recall over captions) of ours with the corenet reference and with a
    paper-faithful NLTK pipeline (pos_tag nouns → morphy → first synset);
  * part-of-speech accuracy on UD English-EWT dev (ours and NLTK's perceptron, gold tokens);
  * vocabulary build time over the 9 Flickr8k shards with 1 and 2 worker processes;
  * accuracy against the hand-labelled gold set tests/data/gold_captions.jsonl (micro precision/recall/F1; a
    predicted key is right if it is a gold label or an optional "generic" noun, recall counts gold labels only)
    for ours (paper style), ours (corenet rule) and the paper pipeline on NLTK. `--gold-only` runs just this
    part (seconds) and merges it into the existing JSON under "gold", leaving the other keys as they are;
  * the synsets source's language filter (default languages=en): its CPU cost per caption (paper style with the
    filter minus languages=off: two fresh extractors timed chunk by chunk in turn after the speed run, so both
    find the shared tagger cache equally warm), how often its detector is asked, what one detector call costs,
    and how many of these all-English captions it drops.
NLTK runs offline from an nltk_data folder built by ../shared/data/nltk/make-nltk-data.sh into .nltk_data/.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "results" / "labels.json"
GOLD = ROOT / "tests" / "data" / "gold_captions.jsonl"


def ensure_nltk_data() -> Path:
    dest = ROOT / ".nltk_data"
    if not (dest / "corpora" / "wordnet" / "data.noun").is_file():
        subprocess.run(["bash", str(SHARED / "nltk" / "make-nltk-data.sh"), str(dest)], check=True)
    os.environ["NLTK_DATA"] = str(dest)
    return dest


def read_captions() -> list[str]:
    lines = (SHARED / "flickr8k" / "captions.token.txt").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines if "\t" in line]


# ---------------------------------------------------------------------- references on NLTK


class CorenetReference:
    """The logic of corenet's WordnetTaggedClassificationDataset._convert_caption_to_labels, on NLTK:
    clean + lower-case, word-tokenize, pos_tag (result unused, as in corenet), lemmatize as a noun, keep the word
    when wn.synset(f"{lemma}.n.01") exists and is named after the lemma. Keys as "n%08d", deduplicated."""

    def __init__(self):
        import ftfy
        import nltk
        from nltk.corpus import wordnet
        from nltk.stem import WordNetLemmatizer
        from nltk.tokenize import NLTKWordTokenizer

        self.nltk, self.wn, self.fix_text = nltk, wordnet, ftfy.fix_text
        self.lemmatizer = WordNetLemmatizer()
        # word_tokenize = punkt sentence split + this tokenizer; captions are single sentences and punkt is not
        # part of the offline data, so the word tokenizer is used directly.
        self.tokenize = NLTKWordTokenizer().tokenize
        self.html = re.compile("<.*?>")

    def clean(self, caption: str) -> str:
        caption = urllib.parse.unquote(str(caption)).replace("+", " ")
        caption = re.sub(self.html, "", caption).strip("\n")
        caption = re.sub(" +", " ", caption)
        return self.fix_text(caption).strip().lower()

    def extract(self, caption: str) -> list[str]:
        words = self.nltk.pos_tag(self.tokenize(self.clean(caption)))
        out: list[str] = []
        for word, _pos in words:
            try:
                lemma = self.lemmatizer.lemmatize(word)
                synset = self.wn.synset(f"{lemma}.n.01")
            except Exception:  # corenet skips any lookup failure the same way
                continue
            if synset.name() != f"{lemma}.n.01":
                continue
            key = "n%08d" % synset.offset()
            if key not in out:
                out.append(key)
        return out


class PaperNltk:
    """The paper's Eq. (1) on NLTK: pos_tag → NN/NNS → wordnet.morphy(word, NOUN) → first noun synset."""

    def __init__(self):
        import nltk
        from nltk.corpus import wordnet
        from nltk.tokenize import NLTKWordTokenizer

        self.nltk, self.wn = nltk, wordnet
        self.tokenize = NLTKWordTokenizer().tokenize

    def extract(self, caption: str) -> list[str]:
        out: list[str] = []
        for word, pos in self.nltk.pos_tag(self.tokenize(caption)):
            if pos not in ("NN", "NNS"):
                continue
            lemma = self.wn.morphy(word.lower(), self.wn.NOUN)
            synsets = self.wn.synsets(lemma, self.wn.NOUN) if lemma else []
            if synsets:
                key = "n%08d" % synsets[0].offset()
                if key not in out:
                    out.append(key)
        return out


# ---------------------------------------------------------------------- measurements


def _rates(n: int, wall: float, cpu: float) -> dict:
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "captions_per_s_cpu": round(n / cpu),
            "captions_per_s_wall": round(n / wall)}


def interleaved_speed(makers: dict, captions: list[str], chunks: int = 20) -> tuple[dict, dict]:
    """Time every extractor on the same chunk before moving to the next chunk (rotating who goes first), so
    that load from other processes on this shared machine hits all of them alike. Pass 1 is cold (fresh
    caches; resources loaded beforehand and timed as `load_s`), pass 2 warm."""
    extractors, result = {}, {}
    for name, make in makers.items():
        t0 = time.perf_counter()
        extractors[name] = make()
        extractors[name].extract("A warm-up caption about a dog .")  # NLTK reads its data lazily on first use
        result[name] = {"load_s": round(time.perf_counter() - t0, 3)}
    # Loaded resources (NLTK's tagger weights and WordNet objects, our tables) are moved out of the cyclic GC's
    # reach, so one extractor's heap does not slow the others' garbage collections in this shared process.
    gc.collect()
    gc.freeze()
    size = -(-len(captions) // chunks)
    parts = [captions[i:i + size] for i in range(0, len(captions), size)]
    labels = {name: [] for name in makers}
    names = list(makers)
    for phase in ("cold", "warm"):
        spent = {name: [0.0, 0.0] for name in names}
        for k, part in enumerate(parts):
            for name in names[k % len(names):] + names[:k % len(names)]:
                extract = extractors[name].extract
                wall, cpu = time.perf_counter(), time.process_time()
                out = [extract(c) for c in part]
                spent[name][0] += time.perf_counter() - wall
                spent[name][1] += time.process_time() - cpu
                if phase == "cold":
                    labels[name] += out
        for name in names:
            result[name][phase] = _rates(len(captions), *spent[name])
    for name in names:
        print(f"{name}: load {result[name]['load_s']:.2f}s, cold {result[name]['cold']['captions_per_s_cpu']:,}/s, "
              f"warm {result[name]['warm']['captions_per_s_cpu']:,}/s", file=sys.stderr)
    return labels, result


def language_filter(captions: list[str]) -> dict:
    """What the synsets source's language filter costs and drops on `captions` (see the module docstring)."""
    from catlip.labels.synsets import SynsetExtractor

    pair = {"on": SynsetExtractor(), "off": SynsetExtractor(languages="off")}
    asked: list[str] = []
    detect = pair["on"].language.foreign
    pair["on"].language.foreign = lambda text: asked.append(text) or detect(text)  # which captions reach it
    parts = [captions[i:i + 2000] for i in range(0, len(captions), 2000)]
    cost = {}
    for phase in ("cold", "warm"):
        spent = {"on": 0.0, "off": 0.0}
        for k, part in enumerate(parts):
            for name in (("on", "off") if k % 2 else ("off", "on")):
                extract, cpu = pair[name].extract, time.process_time()
                for caption in part:
                    extract(caption)
                spent[name] += time.process_time() - cpu
        cost[phase] = round((spent["on"] - spent["off"]) / len(captions) * 1e6, 2)
    ex = pair["on"]
    cpu = time.process_time()
    for text in asked:
        ex.language.detector.classify(text)
    per_call = (time.process_time() - cpu) / max(len(asked), 1)
    skipped = sum(ex.skipped.values()) // 2  # each caption was labelled twice (cold and warm)
    return {"languages": ex.options["languages"], "cost_us_per_caption": cost,
            "detector_asked": len(asked) // 2, "detector_asked_share": round(len(asked) / 2 / len(captions), 4),
            "detector_us_per_call": round(per_call * 1e6, 1), "skipped": skipped,
            "skipped_share": round(skipped / len(captions), 6)}


def agreement(ours: list[list[str]], ref: list[list[str]]) -> dict:
    """Micro precision/recall of `ours` against `ref`, plus the share of captions with identical label sets."""
    tp = sum(len(set(a) & set(b)) for a, b in zip(ours, ref))
    n_ours, n_ref = sum(map(len, ours)), sum(map(len, ref))
    same = sum(set(a) == set(b) for a, b in zip(ours, ref))
    p, r = tp / max(n_ours, 1), tp / max(n_ref, 1)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-12), 4),
            "identical_captions": round(same / len(ours), 4), "labels_ours": n_ours, "labels_ref": n_ref}


def tagger_accuracy() -> dict:
    from nltk.tag import PerceptronTagger

    from catlip.labels.tagger import NOUN_TAGS, PROPER_TAGS, evaluate_conllu, read_conllu

    path = SHARED / "ud_english_ewt" / "en_ewt-ud-dev.conllu"
    ours = evaluate_conllu(path)
    perceptron, nouns = PerceptronTagger(), NOUN_TAGS | PROPER_TAGS
    total = correct = tp = fp = fn = 0
    for sent in read_conllu(path):
        for (_, gold), (_, pred) in zip(sent, perceptron.tag([w for w, _ in sent])):
            total += 1
            correct += gold == pred
            tp += gold in nouns and pred in nouns
            fp += pred in nouns and gold not in nouns
            fn += gold in nouns and pred not in nouns
    return {"ours": {k: round(v, 4) if isinstance(v, float) else v for k, v in ours.items()},
            "nltk_perceptron": {"accuracy": round(correct / total, 4), "noun_f1": round(2 * tp / (2 * tp + fp + fn), 4)}}


def vocab_build_speed(tmp: Path) -> dict:
    """`catlip vocab build` end to end (fresh process, as a user runs it) with 1 and 2 workers."""
    shards = sorted(str(p) for p in (SHARED / "flickr8k").glob("*.tar"))
    catlip = str(Path(sys.executable).parent / "catlip")
    out, files = {}, []
    for workers in (1, 2):
        dst = tmp / f"vocab_w{workers}.json"
        t0 = time.perf_counter()
        subprocess.run([catlip, "vocab", "build", "--input", *shards, "--min-count", "5", "--workers",
                        str(workers), "--output", str(dst)], check=True, capture_output=True)
        wall = time.perf_counter() - t0
        files.append(dst.read_bytes())
        n = json.loads(files[-1])["num_captions"]
        out[f"workers_{workers}"] = {"wall_s": round(wall, 2), "captions_per_s": round(n / wall)}
    out["byte_identical"] = files[0] == files[1]
    out["shards"], out["captions"] = len(shards), n
    out["speedup"] = round(out["workers_1"]["wall_s"] / out["workers_2"]["wall_s"], 2)
    return out


GOLD_EXTRACTORS = {"ours_paper": "ours (paper: POS nouns → first sense)", "ours_corenet": "ours (corenet rule)",
                   "paper_nltk": "paper pipeline on NLTK"}


def gold_accuracy(path: Path = GOLD, top: int = 20) -> dict:
    """Precision/recall/F1 on the hand-labelled gold captions for our two styles and the NLTK paper pipeline,
    with the `top` most frequent errors of ours (paper style): gold keys missed and keys predicted wrongly."""
    from catlip.labels.gold import load_gold, score
    from catlip.labels.synsets import SynsetExtractor
    from catlip.labels.wordnet import get_wordnet

    gold = load_gold(path)
    makers = {"ours_paper": SynsetExtractor, "ours_corenet": lambda: SynsetExtractor(style="corenet"),
              "paper_nltk": PaperNltk}
    out = {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path), "captions": len(gold),
           "gold_labels": sum(len(r["labels"]) for r in gold), "generic": sum(len(r["generic"]) for r in gold),
           "extractors": {}}
    scores = {}
    for name, make in makers.items():
        scores[name] = s = score(make(), gold)
        out["extractors"][name] = {k: round(s[k], 4) if isinstance(s[k], float) else s[k]
                                   for k in ("precision", "recall", "f1", "predicted", "correct", "gold_labels",
                                             "found", "captions_exact")}
    wn, errors, examples = get_wordnet(), Counter(), {}
    for m in scores["ours_paper"]["misses"]:
        found = [("missed", x["key"], x["word"]) for x in m["missed"]] + [("wrong", k, None) for k in m["wrong"]]
        for kind, key, word in found:
            errors[kind, key] += 1
            ex = examples.setdefault((kind, key), {"words": set(), "example": m["caption"]})
            if word:
                ex["words"].add(word)
    top_errors = [{"kind": kind, "key": key, "synset": wn.name(key), "count": n,
                   "words": sorted(examples[kind, key]["words"]), "example": examples[kind, key]["example"]}
                  for (kind, key), n in errors.most_common(top)]
    out["ours_paper_top_errors"] = top_errors
    out["markdown"] = gold_markdown(out)
    return out


def gold_markdown(g: dict) -> str:
    lines = [f"| gold set ({g['captions']} captions, {g['gold_labels']:,} labels) | precision | recall | F1 |",
             "|---|---:|---:|---:|"]
    for name, m in g["extractors"].items():
        lines.append(f"| {GOLD_EXTRACTORS.get(name, name)} | {m['precision']:.3f} | {m['recall']:.3f} | "
                     f"{m['f1']:.3f} |")
    return "\n".join(lines)


def markdown(r: dict) -> str:
    s = r["speed"]
    rows = [("ours (paper: POS nouns → first sense)", s["ours_paper"]), ("ours (corenet rule)", s["ours_corenet"]),
            ("reference: corenet logic on NLTK", s["reference_corenet_nltk"]),
            ("paper pipeline on NLTK", s["paper_nltk"]), ("ours SuperClass BPE", s["ours_superclass"])]

    lines = ["| extractor | load s | cold captions/s | warm captions/s |", "|---|---:|---:|---:|"]
    for name, m in rows:
        lines.append(f"| {name} | {m['load_s']:.2f} | {m['cold']['captions_per_s_cpu']:,} | "
                     f"{m['warm']['captions_per_s_cpu']:,} |")
    ratio, a, t, v = r["ratio_vs_reference"], r["agreement"], r["tagger_ud_ewt_dev"], r["vocab_build"]
    lines += ["", f"Speed-up over the reference (same run, CPU time): cold {ratio['cold']}×, warm {ratio['warm']}×.",
              "", "| agreement (micro) | precision | recall | identical captions |", "|---|---:|---:|---:|"]
    for name, m in a.items():
        lines.append(f"| {name.replace('_', ' ')} | {m['precision']:.3f} | {m['recall']:.3f} | "
                     f"{m['identical_captions']:.3f} |")
    lines += ["", f"UD English-EWT dev (gold tokens): ours Penn accuracy {t['ours']['accuracy']:.3f}, noun F1 "
              f"{t['ours']['noun_f1']:.3f}; NLTK perceptron {t['nltk_perceptron']['accuracy']:.3f} / "
              f"{t['nltk_perceptron']['noun_f1']:.3f}.",
              f"Vocabulary build, 9 Flickr8k shards: 1 worker {v['workers_1']['wall_s']} s, 2 workers "
              f"{v['workers_2']['wall_s']} s (×{v['speedup']}; whole command incl. start-up), byte-identical: "
              f"{v['byte_identical']}."]
    if "language_filter" in r:
        f = r["language_filter"]
        lines += ["", f"Language filter (synsets, languages={f['languages']}): +{f['cost_us_per_caption']['cold']} µs "
                  f"per caption cold, +{f['cost_us_per_caption']['warm']} µs warm; detector asked for "
                  f"{f['detector_asked_share']:.1%} of captions ({f['detector_us_per_call']} µs a call); "
                  f"{f['skipped']} of {r['captions']:,} English captions dropped."]
    if "gold" in r:
        lines += ["", gold_markdown(r["gold"])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="use only the first N captions (quick check)")
    parser.add_argument("--output", default=str(OUT))
    parser.add_argument("--gold", default=str(GOLD), help="hand-labelled caption set (JSONL)")
    parser.add_argument("--gold-only", action="store_true",
                        help="only the gold-set section, merged into the existing --output JSON under 'gold'")
    args = parser.parse_args()
    ensure_nltk_data()
    sys.path.insert(0, str(ROOT / "src"))
    from catlip.labels import get_extractor

    if args.gold_only:
        out = Path(args.output)
        result = json.loads(out.read_text()) if out.is_file() else {}
        result["gold"] = gold_accuracy(Path(args.gold).resolve())
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        print(result["gold"]["markdown"])
        return

    captions = read_captions()[: args.limit]
    load_avg = os.getloadavg()
    labels, speed_results = interleaved_speed({
        "ours_paper": lambda: get_extractor("catlip"),
        "ours_corenet": lambda: get_extractor("catlip", style="corenet"),
        "ours_superclass": lambda: get_extractor("superclass"),
        "reference_corenet_nltk": CorenetReference,
        "paper_nltk": PaperNltk,
    }, captions)
    ours, ref = speed_results["ours_paper"], speed_results["reference_corenet_nltk"]
    result = {
        "captions": len(captions),
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": [round(x, 2) for x in load_avg]},
        "speed": speed_results,
        "ratio_vs_reference": {
            "cold": round(ours["cold"]["captions_per_s_cpu"] / ref["cold"]["captions_per_s_cpu"], 1),
            "warm": round(ours["warm"]["captions_per_s_cpu"] / ref["warm"]["captions_per_s_cpu"], 1)},
        "agreement": {
            "ours_paper_vs_corenet_reference": agreement(labels["ours_paper"], labels["reference_corenet_nltk"]),
            "ours_paper_vs_paper_nltk": agreement(labels["ours_paper"], labels["paper_nltk"]),
            "ours_corenet_vs_corenet_reference": agreement(labels["ours_corenet"], labels["reference_corenet_nltk"]),
        },
        "tagger_ud_ewt_dev": tagger_accuracy(),
        "vocab_build": vocab_build_speed(Path(tempfile.mkdtemp())),
        "gold": gold_accuracy(Path(args.gold).resolve()),
        "language_filter": language_filter(captions),
        "targets": {"captions_per_s_per_core": 50000, "ratio_vs_reference": 25, "ratio_stretch": 50},
    }
    result["markdown"] = markdown(result)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(result["markdown"])


if __name__ == "__main__":
    main()
