"""Which vocabulary a run trains with: a given file, the run's own (on resume), or one built from the captions."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from catlip.errors import CatlipError

# Extractor options per method, read from the config (methods without an extractor train without labels: CLIP).
EXTRACTOR_OPTIONS = {
    "catlip": lambda m: {"proper_nouns": m.proper_nouns},
    "superclass": lambda m: {"stopwords": m.subword_stopwords},
}


def iter_training_captions(cfg, *, progress: bool = True):
    """Every caption of every training sample, in index order (the same sources the loader reads)."""
    from collections import Counter

    from catlip.data.sources import open_sources

    source = open_sources(cfg.data, seed=cfg.train.seed, stats=Counter())
    for i in tqdm(range(len(source)), desc="captions", unit="sample", disable=not progress, mininterval=1):
        try:
            caps = source.captions(i)
        except OSError:
            continue  # counted by the loader when training reaches it
        yield from caps


def build_run_vocabulary(cfg, *, progress: bool = True):
    """A fresh vocabulary for ``cfg`` or None when the method needs no labels."""
    from catlip.labels.vocab import Vocabulary, build_vocabulary

    name = cfg.method.name
    if name not in EXTRACTOR_OPTIONS:
        return None
    if name == "superclass" and not cfg.method.subword_stopwords:
        return Vocabulary.full_bpe()  # the paper classifies over the whole CLIP BPE table; ids equal BPE ids
    from catlip.labels import get_extractor

    extractor = get_extractor(name, **EXTRACTOR_OPTIONS[name](cfg.method))
    return build_vocabulary(iter_training_captions(cfg, progress=progress), extractor,
                            min_count=cfg.data.vocab_min_count, top_k=cfg.data.vocab_top_k or None)


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
