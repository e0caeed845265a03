"""Which vocabulary a run trains with: a given file, the run's own (on resume), or one built from the captions."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from catlip.errors import CatlipError

# Extractor options per method, read from the config (methods without an extractor train without labels: CLIP).
EXTRACTOR_OPTIONS = {
    "catlip": lambda m: {"proper_nouns": m.proper_nouns},
    "superclass": lambda m: {"stopwords": m.subword_stopwords},
}


def _caption_files(cfg, tmp_dir: Path, progress: bool) -> list[Path]:
    """Caption files for the labels stage's counter: shard / manifest paths as they are; the synthetic set and
    image folders (whose captions live in code or in many sidecar files) are written to one text file first."""
    from collections import Counter

    import webdataset as wds

    from catlip.data.sources import open_sources

    paths: list[Path] = []
    loose = []
    for spec in cfg.data.train:
        low = spec.lower()
        if spec != "synthetic" and (".tar" in low or low.endswith((".csv", ".tsv", ".jsonl"))) and "://" not in spec:
            paths += [Path(u) for u in wds.shardlists.expand_urls(spec)]
        else:
            loose.append(spec)
    if loose:
        source = open_sources(dataclasses.replace(cfg.data, train=loose), seed=cfg.train.seed, stats=Counter())
        out = tmp_dir / "captions.txt"
        with open(out, "w", encoding="utf-8") as f:
            for i in tqdm(range(len(source)), desc="captions", unit="sample", disable=not progress, mininterval=1):
                try:
                    caps = source.captions(i)
                except OSError:
                    continue  # counted by the loader when training reaches it
                f.writelines(" ".join(c.split()) + "\n" for c in caps)
        paths.append(out)
    return paths


def _column(cfg) -> str | None:
    # The counter finds "captions"/"caption"/"text" by itself (webdataset .json members hold "captions");
    # only a non-default manifest column must be named.
    return None if cfg.data.caption_column == "caption" else cfg.data.caption_column


def build_run_vocabulary(cfg, *, progress: bool = True):
    """A fresh vocabulary for ``cfg`` from its training captions, or None when the method needs no labels."""
    from catlip.labels.vocab import Vocabulary, build_vocabulary

    name = cfg.method.name
    if name not in EXTRACTOR_OPTIONS:
        return None
    if name == "superclass":
        # the paper classifies over the whole CLIP BPE table, so class ids equal BPE ids
        return Vocabulary.full_bpe(stopwords=cfg.method.subword_stopwords)
    with tempfile.TemporaryDirectory() as tmp:
        paths = _caption_files(cfg, Path(tmp), progress)
        vocab, _ = build_vocabulary(paths, name, EXTRACTOR_OPTIONS[name](cfg.method),
                                    min_count=cfg.data.vocab_min_count, top_k=cfg.data.vocab_top_k or None,
                                    workers=max(1, cfg.data.num_workers), column=_column(cfg),
                                    progress=progress)
    if len(vocab) == 0:
        raise CatlipError(f"no label reaches data.vocab_min_count={cfg.data.vocab_min_count} in the training "
                          "captions; lower it or pass data.vocab")
    return vocab


def resolve_vocabulary(cfg, run_dir: Path, *, resuming: bool, build: bool, progress: bool = True):
    """``data.vocab`` if set; else the run's saved ``vocab.json`` (resume, or a non-main rank); else a new one.

    Nothing is saved here: the caller checks the vocabulary against a checkpoint first.
    """
    if cfg.method.name not in EXTRACTOR_OPTIONS and not cfg.data.vocab:
        return None  # contrastive methods train on the text itself
    from catlip.labels.vocab import Vocabulary

    saved = run_dir / "vocab.json"
    if cfg.data.vocab:
        if not Path(cfg.data.vocab).exists():
            raise CatlipError(f"data.vocab={cfg.data.vocab} does not exist")
        return Vocabulary.load(cfg.data.vocab)
    if (resuming or not build) and saved.exists():
        return Vocabulary.load(saved)
    return build_run_vocabulary(cfg, progress=progress) if build else None
