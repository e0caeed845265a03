"""Which vocabulary a run trains with: a given file, the run's own (on resume), or one built from the captions.

A built vocabulary counts the captions of the training sources themselves (``catlip.data.sources``, the loader's
own readers, in parallel over index ranges with ``data.num_workers`` processes), so the vocabulary stage and the
loader read the same captions by the same rule. No caption at all, no label in any caption, and no label reaching
``data.vocab_min_count`` are three different errors, each naming its cause; a vocabulary file with 0 classes is
refused with a one-line error.
"""

from __future__ import annotations

from pathlib import Path

from catlip.errors import CatlipError, VocabularyError

# Extractor options per method, read from the config (methods without an extractor train without labels: CLIP).
EXTRACTOR_OPTIONS = {
    "catlip": lambda m: {"proper_nouns": m.proper_nouns},
    "superclass": lambda m: {"stopwords": m.subword_stopwords},
}


def build_run_vocabulary(cfg, *, progress: bool = True):
    """A fresh vocabulary for ``cfg`` from its training captions, or None when the method needs no labels."""
    from collections import Counter

    from catlip.data.sources import open_sources
    from catlip.labels.vocab import Vocabulary, build_vocabulary_from_source

    name = cfg.method.name
    if name not in EXTRACTOR_OPTIONS:
        return None
    if name == "superclass":
        # the paper classifies over the whole CLIP BPE table, so class ids equal BPE ids
        return Vocabulary.full_bpe(stopwords=cfg.method.subword_stopwords)
    source = open_sources(cfg.data, seed=cfg.train.seed, stats=Counter())
    vocab, counts = build_vocabulary_from_source(
        source, name, EXTRACTOR_OPTIONS[name](cfg.method), min_count=cfg.data.vocab_min_count,
        top_k=cfg.data.vocab_top_k or None, workers=max(1, cfg.data.num_workers), progress=progress,
        name=f"data.train={cfg.data.train}", looked_for=source.looked_for())
    if len(vocab) == 0:
        if not counts.doc_freq:
            raise CatlipError(f"none of the {counts.captions:,} training captions yields a {name} label (e.g. "
                              f"{source.captions(0)[:1] or '?'}); check data.train and data.caption_column="
                              f"{cfg.data.caption_column!r}")
        top_key, top_count = max(counts.doc_freq.items(), key=lambda kv: (kv[1], kv[0]))
        raise CatlipError(f"no label reaches data.vocab_min_count={cfg.data.vocab_min_count} in the "
                          f"{counts.captions:,} training captions (the most frequent, {top_key}, is in "
                          f"{top_count:,}); lower it or pass data.vocab")
    return vocab


def _check_classes(vocab, where: str):
    if len(vocab) == 0:
        raise VocabularyError(f"{where} has 0 classes (built from {vocab.num_captions:,} captions), so there is "
                              "nothing to classify; rebuild it (`catlip vocab build`, lower --min-count) or leave "
                              "data.vocab empty to build one from the training captions")
    return vocab


def resolve_vocabulary(cfg, run_dir: Path, *, resuming: bool, build: bool, progress: bool = True):
    """``data.vocab`` if set; else the run's saved ``vocab.json`` (resume, or a non-main rank); else a new one.

    Nothing is saved here: the caller checks the vocabulary against a checkpoint first. A vocabulary with 0
    classes is a ``VocabularyError`` for the methods that classify (CatLIP, SuperClass).
    """
    if cfg.method.name not in EXTRACTOR_OPTIONS and not cfg.data.vocab:
        return None  # contrastive methods train on the text itself
    from catlip.labels.vocab import Vocabulary

    labelled = cfg.method.name in EXTRACTOR_OPTIONS
    saved = run_dir / "vocab.json"
    if cfg.data.vocab:
        if not Path(cfg.data.vocab).exists():
            raise CatlipError(f"data.vocab={cfg.data.vocab} does not exist")
        vocab = Vocabulary.load(cfg.data.vocab)
        return _check_classes(vocab, f"data.vocab={cfg.data.vocab}") if labelled else vocab
    if (resuming or not build) and saved.exists():
        return _check_classes(Vocabulary.load(saved), str(saved))
    return build_run_vocabulary(cfg, progress=progress) if build else None
