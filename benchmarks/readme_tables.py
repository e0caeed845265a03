"""Rewrite the README's performance section from the committed benchmark JSON, so the two never disagree.

    .venv/bin/python benchmarks/readme_tables.py          # updates README.md between the PERF markers
"""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("catlip", "superclass", "clip")


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def gpu_table(d: dict) -> list[str]:
    rows = {r["method"]: r for r in d["train_step"] if "error" not in r}
    clip = rows["clip"]
    first = next(iter(rows.values()))
    out = [f"**Training step, GPU** (`benchmarks/train_step.py --device cuda`; {d['device']}, bf16 autocast, "
           f"torch {d.get('torch', '?').split(' ')[0]}, {first['backbone']} at {first['image_size']} px, batch {first['batch']}, no `torch.compile`; "
           "each method in its own process):", "",
           "| method | images/s | step (s) | peak memory (GiB) | TFLOP/step | MFU | vs CLIP: speed / memory |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for m in METHODS:
        r = rows[m]
        out.append(f"| {m} | {r['img_per_s']:.0f} | {r['step_s']:.3f} | {r['peak_mem_mb'] / 1024:.1f} | "
                   f"{r['tflops_per_step']:.1f} | {r['mfu'] * 100:.1f}% | {r['img_per_s'] / clip['img_per_s']:.2f}× / "
                   f"{r['peak_mem_mb'] / clip['peak_mem_mb']:.2f}× |")
    return out


def cpu_table(d: dict) -> list[str]:
    out = [f"**Training step, CPU** (`benchmarks/train_step.py`; {d['device']}, "
           f"{d.get('torch_threads') or 'default'} threads):", "",
           "| backbone, batch | method | images/s | step (s) | RSS growth (GB) | vs CLIP speed |",
           "|---|---|---:|---:|---:|---:|"]
    for backbone in dict.fromkeys(r["backbone"] for r in d["train_step"]):
        rows = {r["method"]: r for r in d["train_step"] if r["backbone"] == backbone and "error" not in r}
        for m in METHODS:
            r = rows[m]
            out.append(f"| {backbone}, {r['batch']} | {m} | {r['img_per_s']:.2f} | {r['step_s']:.2f} | "
                       f"{r['rss_growth_mb'] / 1000:.2f} | {r['img_per_s'] / rows['clip']['img_per_s']:.2f}× |")
    if "data_loader" in d:
        dl = d["data_loader"]
        out += ["", f"Data loader alone ({dl['augment']}, {dl['image_size']} px) on {dl['source']}: "
                f"{dl['img_per_s_per_worker']:.0f} images/s per worker ({dl.get('device', d['device'])}, data.decode="
                f"{dl.get('decode', 'fast')})."]
    return out


def labels_table(d: dict) -> list[str]:
    tagger, agree = d["tagger_ud_ewt_dev"], d["agreement"]
    return [f"**Caption → labels** (`benchmarks/labels.py`; the {d['captions']:,} Flickr8k captions, one process, "
            f"CPU time, load average {d['machine']['load_average_at_start'][0]:.1f} at the start):", "",
            d["markdown"].split("\n\n| agreement")[0], "",
            f"Tagger on UD English-EWT dev: Penn accuracy {tagger['ours']['accuracy']:.3f}, noun-vs-not F1 "
            f"{tagger['ours']['noun_f1']:.3f} (NLTK's perceptron: {tagger['nltk_perceptron']['accuracy']:.3f} / "
            f"{tagger['nltk_perceptron']['noun_f1']:.3f}). Agreement with a paper-faithful NLTK noun pipeline: "
            f"precision {agree['ours_paper_vs_paper_nltk']['precision']:.3f}, recall "
            f"{agree['ours_paper_vs_paper_nltk']['recall']:.3f}; `--style corenet` reproduces the original code's "
            f"labels (F1 {agree['ours_corenet_vs_corenet_reference']['f1']:.3f})."] + language_line(d) + \
        gold_table(d.get("gold"))


def language_line(d: dict) -> list[str]:
    """The caption language filter's cost and drops (synsets, ``languages=en``), when measured."""
    f = d.get("language_filter")
    if not f:
        return []
    return ["", f"Language filter (`method.label_options.languages={f['languages']}`, synsets): "
            f"+{f['cost_us_per_caption']['warm']:.1f} µs per caption warm ({f['cost_us_per_caption']['cold']:.1f} "
            f"cold); the detector is asked about {f['detector_asked_share']:.1%} of the captions (a word neither the "
            f"tagger nor WordNet knows) at {f['detector_us_per_call']:.0f} µs a call; English captions dropped: "
            f"{f['skipped']:,} of {d['captions']:,}."]


def gold_table(g: dict | None) -> list[str]:
    """Accuracy against the hand-labelled captions (`benchmarks/labels.py --gold-only`), when measured."""
    if not g:
        return []
    return ["", f"Against hand-labelled Flickr8k test captions (`{g['file']}`: the sense each caption means, "
            "multi-word nouns as one synset; scene words such as \"background\" or \"front\" may be predicted but "
            "are not required):", "", g["markdown"]]


def label_errors_table(d: dict) -> list[str]:
    """The six classes of wrong CatLIP labels counted before and after the fixes (`benchmarks/label_errors.py`)."""
    names = {"plural_lemma": "plural read as its own lemma (shoes → \"place\")",
             "lowercase_instance": "named entity for a lower-case word (jersey → New Jersey)",
             "adjective_compound": "adjective + noun as an unrelated compound (yellow jacket → barbiturate)",
             "ing_after_noun": "-ing verb after a noun read as a noun (standing → status)",
             "initial_noun_lost": "caption-initial bare noun lost",
             "title_case": "Title Case caption labelled differently from lower case",
             "bare_start_rewrite": "… every \"A …\" caption rewritten as a bare-noun start: things lost",
             "title_case_rewrite": "… every \"A …\" caption rewritten in Title Case: labels changed",
             "spelling_noise": "British spelling, accent, hyphen, domain"}
    before, after = d["before"], d["after"]
    out = [f"**Wrong CatLIP labels by class** (`benchmarks/label_errors.py --baseline-src`; all "
           f"{after['captions']:,} Flickr8k captions; before = the extractor before the fixes, same run):", "",
           "| error class | before | after |", "|---|---:|---:|"]
    for key, label in names.items():
        out.append(f"| {label} | {before['counts'][key]:,} | {after['counts'][key]:,} |")
    out.append(f"| **total** | **{before['total']:,}** | **{after['total']:,}** ({d['reduction']['total']}× fewer) |")
    return out


def patch_drop_table(d: dict) -> list[str]:
    """Images/s with a fraction of the ViT's patch tokens dropped (FLIP), as a multiple of the same method at 0."""
    rows = [r for r in d.get("train_step_patch_drop", []) if "error" not in r]
    if not rows:
        return []
    base = {(r["backbone"], r["method"]): r for r in d["train_step"] if "error" not in r}
    drops = sorted({r["patch_drop"] for r in rows})
    out = [f"**Token dropping** (`model.patch_drop`, same run, {d['device']}): images/s, and × the same method "
           "without dropping:", "",
           "| backbone, batch | method | 0 | " + " | ".join(f"{p:g}" for p in drops) + " |",
           "|---|---|---:|" + "---:|" * len(drops)]
    for (backbone, method), b in base.items():
        cells = []
        for p in drops:
            r = next((r for r in rows if r["backbone"] == backbone and r["method"] == method and r["patch_drop"] == p),
                     None)
            cells.append("–" if r is None else f"{r['img_per_s']:.2f} ({r['img_per_s'] / b['img_per_s']:.2f}×)")
        out.append(f"| {backbone}, {b['batch']} | {method} | {b['img_per_s']:.2f} | " + " | ".join(cells) + " |")
    return out


def loader_table(d: dict) -> list[str]:
    env = d["environment"]
    out = [f"**Training loader** (`benchmarks/loader.py`; {d['shards']['images']:,} photos re-encoded at "
           f"{d['shards']['sides'][0]}–{d['shards']['sides'][1]} px, RandomResizedCrop({d['image_size']}) + flip + "
           f"labels; {env['cpu']} x{env['cores']}, load average {env['load_average'][0]:.1f}): images per CPU-second "
           "of the workers and the main process", "",
           "| decoder | workers | images / CPU-s | × reference |", "|---|---:|---:|---:|"]
    for r in d["rows"]:
        out.append(f"| {r['decoder']} | {r['workers']} | {r['img_per_s_per_core']:.0f} | "
                   f"{r['ratio_to_reference']:.2f}× |")
    return out


def section() -> str:
    parts = ["All numbers come from the committed JSON in `benchmarks/results/`; each table is one run, and "
             "ratios are taken within a run."]
    for name, fn in (("train_step_cuda.json", gpu_table), ("train_step_cuda.json", patch_drop_table),
                     ("train_step_cpu.json", cpu_table), ("train_step_cpu.json", patch_drop_table),
                     ("loader.json", loader_table), ("labels.json", labels_table),
                     ("label_errors.json", label_errors_table)):
        data = _load(name)
        lines = fn(data) if data else []
        if lines:
            parts.append("\n".join(lines))
    return "\n\n".join(parts)


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = re.sub(r"<!-- PERF:BEGIN -->.*<!-- PERF:END -->",
                 lambda _: f"<!-- PERF:BEGIN -->\n{section()}\n<!-- PERF:END -->", text, flags=re.S)
    readme.write_text(new)
    print("README.md performance section updated" if new != text else "README.md already up to date")


if __name__ == "__main__":
    main()
