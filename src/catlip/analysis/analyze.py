"""`catlip analyze`: corpus synset statistics and target-label overlap, written as JSON, PNG plots and HTML."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from catlip.analysis import plots
from catlip.analysis.coverage import DEFAULT_ALPHAS, coverage_curve, samples_per_target
from catlip.labels.corpus_index import best_matches
from catlip.analysis.report import write_html, write_json
from catlip.analysis.stats import DEFAULT_TAUS, CorpusStats, growth_curve, rank_counts, top_keys, vtau_curve
from catlip.analysis.stream import ScanOptions, scan
from catlip.labels.corpus import expand_inputs
from catlip.analysis.targets import TargetSet, load_targets
from catlip.errors import DataError

LOOSE_ALPHA = 0.5  # one hop (parent, child or the synset itself): the loosest match we count as "related"


def _synset_sources() -> list[str]:
    """The label sources whose keys are WordNet synsets (``catlip.labels.registry``), the default first."""
    from catlip.labels import registry

    return [s.name for s in registry.SOURCES.values() if s.synset_keys]


def _names(key: str, wordnet) -> tuple[str, list[str]]:
    lemmas = wordnet.synset_lemmas(key)
    return lemmas[0].replace("_", " "), lemmas


def _taus(counts) -> list[int]:
    """The default V_tau grid up to the first value that empties the vocabulary (the rest are all zeros)."""
    top = max(counts.values(), default=0)
    return [t for t in DEFAULT_TAUS if t <= top] + [t for t in DEFAULT_TAUS if t > top][:1]


def _spread(counts: list[int]) -> dict:
    if not counts:
        return {"classes": 0, "median": 0.0, "mean": 0.0}
    return {"classes": len(counts), "median": float(statistics.median(counts)),
            "mean": round(sum(counts) / len(counts), 3)}


def target_summary(ts: TargetSet, stats: CorpusStats, pool: dict, rule: str, wordnet,
                   alphas: Sequence[float]) -> dict:
    """Coverage of one target set by the corpus synsets in ``pool`` (key -> samples)."""
    matches = best_matches([t.wnid for t in ts.known], pool, wordnet.hypernym_paths)
    rows = []
    for t in ts.targets:
        m = matches.get(t.wnid) if t.wnid else None
        rows.append({"index": t.index, "name": t.name, "wnid": t.wnid, "how": t.how,
                     "best_key": m.key if m else None, "best_name": _names(m.key, wordnet)[0] if m else None,
                     "distance": m.distance if m else None, "similarity": round(m.similarity, 4) if m else 0.0,
                     "samples": m.count if m else 0, "captions": stats.caption_counts.get(m.key, 0) if m else 0})
    exact = samples_per_target(matches, 1.0)
    loose = samples_per_target(matches, LOOSE_ALPHA)
    return {"name": ts.name, "source": ts.source, "num_targets": len(ts.targets), "num_resolved": len(ts.known),
            "num_unknown": len(ts.unknown), "unknown": [t.name for t in ts.unknown],
            "corpus_synsets": len(pool), "corpus_synsets_rule": rule,
            "coverage": coverage_curve(matches, alphas, num_targets=len(ts.targets)),
            "samples_per_target": {"loose_alpha": LOOSE_ALPHA, "exact": _spread(exact), "loose": _spread(loose),
                                   "exact_sorted": exact, "loose_sorted": loose},
            "matches": rows}


def _pool(stats: CorpusStats, vocab, min_count: int) -> tuple[dict, str]:
    """The corpus synsets a target may match: the vocabulary's keys, or every synset seen >= min_count times."""
    if vocab is not None:
        return {k: stats.sample_counts.get(k, 0) for k in vocab.keys}, f"keys of the vocabulary ({len(vocab.keys)})"
    pool = {k: stats.sample_counts[k] for k, c in stats.caption_counts.items() if c >= min_count}
    return pool, f"synsets in >= {min_count} caption(s)"


def build_summary(stats: CorpusStats, files: list, wordnet, *, target_sets=(), vocab=None, min_count: int = 1,
                  top: int = 50, alphas: Sequence[float] = DEFAULT_ALPHAS, extractor: dict | None = None,
                  title: str = "Corpus synset analysis", input_note: str = "", seed: int = 0) -> dict:
    from catlip import __version__

    counts = stats.caption_counts
    corpus = {"num_files": len(files), "num_samples": stats.num_samples, "num_captions": stats.num_captions,
              "num_labelled_captions": stats.num_labelled_captions,
              "num_unlabelled_captions": stats.num_unlabelled_captions,
              "unlabelled_share": stats.num_unlabelled_captions / stats.num_captions if stats.num_captions else 0.0,
              "label_occurrences": stats.label_occurrences,
              "labels_per_caption": round(stats.label_occurrences / stats.num_captions, 3) if stats.num_captions else 0.0,
              "unique_synsets": len(counts), "singleton_synsets": sum(1 for c in counts.values() if c == 1),
              "skipped_total": int(sum(stats.skipped.values())), "skipped": dict(stats.skipped)}
    pool, rule = _pool(stats, vocab, min_count)
    top_rows = []
    for rank, (key, count) in enumerate(top_keys(counts, top), 1):
        name, lemmas = _names(key, wordnet)
        top_rows.append({"rank": rank, "key": key, "name": name, "lemmas": lemmas, "captions": count,
                         "samples": stats.sample_counts[key]})
    summary = {
        "format_version": 1, "title": title, "catlip_version": __version__, "input_note": input_note,
        "options": {"min_count": min_count, "top": top, "alphas": list(alphas), "seed": seed},
        "extractor": extractor or {"method": _synset_sources()[0], "options": {}}, "files": files, "corpus": corpus,
        "growth": [{"captions": n, "unique_synsets": u} for n, u in growth_curve(stats.first_seen, stats.num_captions)],
        "long_tail": [{"rank": r, "captions": c} for r, c in rank_counts(counts)],
        "vtau": vtau_curve(counts, _taus(counts)),
        "targets": [target_summary(ts, stats, pool, rule, wordnet, alphas) for ts in target_sets],
        "top_synsets": top_rows, "unlabelled_examples": stats.unlabelled_examples(),
    }
    if vocab is not None:
        inside = sum(c for k, c in counts.items() if vocab.id(k) is not None)
        summary["vocabulary"] = {"size": len(vocab), "hash": vocab.hash, "occurrences_in_vocab": inside,
                                 "share_in_vocab": inside / stats.label_occurrences if stats.label_occurrences else 0.0}
    return summary


def render(summary: dict, out: Path) -> None:
    """Plots, summary.json and index.html into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    p = {"long_tail": plots.plot_long_tail([(r["rank"], r["captions"]) for r in summary["long_tail"]], out / "long_tail.png"),
         "growth": plots.plot_growth([(g["captions"], g["unique_synsets"]) for g in summary["growth"]], out / "growth.png"),
         "vtau": plots.plot_vtau(summary["vtau"], out / "vtau.png")}
    if summary["targets"]:
        p["coverage"] = plots.plot_coverage(summary["targets"], out / "coverage.png")
    for i, t in enumerate(summary["targets"]):
        sp = t["samples_per_target"]
        t["plot"] = plots.plot_samples_per_target(t["name"], sp["exact_sorted"], sp["loose_sorted"],
                                                  sp["loose_alpha"], out / f"samples_per_target_{i}.png")
    summary["plots"] = p
    write_json(out / "summary.json", summary)
    write_html(out / "index.html", summary)


def analyze(inputs: Sequence[str], out: str | Path, *, targets: Sequence[str] = (), vocab_path: str | None = None,
            workers: int = 1, column: str | None = None, min_count: int = 1, top: int = 50,
            alphas: Sequence[float] = DEFAULT_ALPHAS, unlabelled: int = 20, seed: int = 0, title: str | None = None,
            input_note: str = "", progress: bool = True) -> dict:
    """Scan the captions of ``inputs``, compare with each target set and write the report into ``out``."""
    from catlip.labels.wordnet import get_wordnet

    files = expand_inputs(list(inputs))
    synset_sources = _synset_sources()
    vocab, method, options = None, synset_sources[0], {}
    if vocab_path:
        from catlip.labels.vocab import Vocabulary

        vocab = Vocabulary.load(vocab_path)
        if not vocab.source.synset_keys:
            raise DataError(f"{vocab_path} is a {vocab.labels!r} vocabulary; synset analysis needs one whose keys "
                            f"are WordNet synsets ({', '.join(synset_sources)})")
        method, options = vocab.labels, dict(vocab.options)
    wordnet = get_wordnet()
    target_sets = [load_targets(spec, wordnet) for spec in targets]  # bad target files fail before the long scan
    scan_options = ScanOptions(method, tuple(sorted(options.items())), column, unlabelled, seed)
    result = scan(files, scan_options, workers=workers, progress=progress)
    summary = build_summary(result.stats, result.files, wordnet, target_sets=target_sets, vocab=vocab,
                            min_count=min_count, top=top, alphas=alphas,
                            extractor={"method": method, "options": options},
                            title=title or f"Synset analysis of {Path(files[0]).parent.name or files[0]}",
                            input_note=input_note, seed=seed)
    try:
        render(summary, Path(out))
    except OSError as err:
        raise DataError(f"cannot write the report into {out}: {err}") from err
    return summary
