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


def _resolved(cfg, resolved):
    """The run's ``resolve(cfg.method)``: a run resolves once and passes it down; other callers may leave it out."""
    if resolved is not None:
        return resolved
    from catlip.methods.registry import resolve

    return resolve(cfg.method)


def run_label_source(cfg, resolved=None):
    """(label source entry, extractor options) of ``cfg.method`` (registry defaults filled in), or (None, {}) for
    a method that trains without labels (CLIP, SigLIP)."""
    resolved = _resolved(cfg, resolved)
    return resolved.source, resolved.options


def build_run_vocabulary(cfg, *, progress: bool = True, resolved=None):
    """A fresh vocabulary for ``cfg`` from its training captions, or None when the method needs no labels.

    A label source with a closed vocabulary (bpe: the whole CLIP BPE table, as the SuperClass paper classifies
    over it, so class ids equal BPE ids) uses that table instead of counting captions.
    """
    from collections import Counter

    from catlip.data.sources import open_sources
    from catlip.labels.vocab import build_vocabulary_from_source

    label_source, options = run_label_source(cfg, resolved)
    if label_source is None:
        return None
    if label_source.closed_vocabulary is not None:
        return label_source.closed_vocabulary(options)
    source = open_sources(cfg.data, seed=cfg.train.seed, stats=Counter(), image_size=cfg.model.image_size)
    vocab, counts = build_vocabulary_from_source(
        source, label_source.name, options, min_count=cfg.data.vocab_min_count,
        top_k=cfg.data.vocab_top_k or None, workers=max(1, cfg.data.num_workers), progress=progress,
        name=f"data.train={cfg.data.train}", looked_for=source.looked_for())
    if len(vocab) == 0:
        if not counts.doc_freq:
            raise CatlipError(f"none of the {counts.captions:,} training captions yields a {label_source.name} label "
                              f"(e.g. {source.captions(0)[:1] or '?'}); check data.train and data.caption_column="
                              f"{cfg.data.caption_column!r}")
        top_key, top_count = max(counts.doc_freq.items(), key=lambda kv: (kv[1], kv[0]))
        raise CatlipError(f"no label reaches data.vocab_min_count={cfg.data.vocab_min_count} in the "
                          f"{counts.captions:,} training captions (the most frequent, {top_key}, is in "
                          f"{top_count:,}); lower it or pass data.vocab")
    return vocab


def check_label_source(vocab, cfg, where: str, resolved=None):
    """A vocabulary built with another label source than ``cfg.method`` trains with is a ``VocabularyError``
    naming both (its keys would be read as the wrong kind of label)."""
    label_source, _ = run_label_source(cfg, resolved)
    if label_source is None or vocab is None:
        return vocab
    got = getattr(vocab, "labels", None) or label_source.name
    if got != label_source.name:
        how = f"method.labels={cfg.method.labels}" if cfg.method.labels else \
            f"the default of method {cfg.method.name}; set method.labels={got} to train with it"
        raise VocabularyError(f"{where} holds {got!r} labels but method {cfg.method.name} is configured for "
                              f"{label_source.name!r} labels ({how})")
    return vocab


def _check_classes(vocab, where: str):
    if len(vocab) == 0:
        raise VocabularyError(f"{where} has 0 classes (built from {vocab.num_captions:,} captions), so there is "
                              "nothing to classify; rebuild it (`catlip vocab build`, lower --min-count) or leave "
                              "data.vocab empty to build one from the training captions")
    return vocab


def resolve_vocabulary(cfg, run_dir: Path, *, resuming: bool, build: bool, progress: bool = True, resolved=None):
    """``data.vocab`` if set; else the run's saved ``vocab.json`` (resume, or a non-main rank); else a new one.

    Nothing is saved here: the caller checks the vocabulary against a checkpoint first. For the methods that
    classify, a vocabulary with 0 classes or from another label source than the configured one is a
    ``VocabularyError``.
    """
    resolved = _resolved(cfg, resolved)
    labelled = resolved.source is not None
    if not labelled and not cfg.data.vocab:
        return None  # contrastive methods train on the text itself
    from catlip.labels.vocab import Vocabulary

    saved = run_dir / "vocab.json"
    if cfg.data.vocab:
        if not Path(cfg.data.vocab).exists():
            raise CatlipError(f"data.vocab={cfg.data.vocab} does not exist")
        vocab = Vocabulary.load(cfg.data.vocab)
        if not labelled:
            return vocab
        where = f"data.vocab={cfg.data.vocab}"
        return _check_classes(check_label_source(vocab, cfg, where, resolved), where)
    if (resuming or not build) and saved.exists():
        return _check_classes(check_label_source(Vocabulary.load(saved), cfg, str(saved), resolved), str(saved))
    return build_run_vocabulary(cfg, progress=progress, resolved=resolved) if build else None


def vocabulary_origin(cfg, run_dir: Path, resuming: bool, resolved=None) -> str:
    """Where :func:`resolve_vocabulary` took the vocabulary from (the same branches, in the same order)."""
    if cfg.data.vocab:
        return f"read from data.vocab={cfg.data.vocab}"
    if resuming and (run_dir / "vocab.json").exists():
        return f"the run's own {run_dir / 'vocab.json'}"
    source = run_label_source(cfg, resolved)[0]
    if source is not None and source.closed_vocabulary is not None:
        return f"fixed by label source {source.name}, not counted from the captions"
    return f"built from the training captions (data.vocab_min_count={cfg.data.vocab_min_count})"


def describe_vocabulary(vocab, origin: str, top: int = 8) -> str:
    """One line, as the demo prints it: classes, where they come from, the most frequent names, caption coverage."""
    if vocab.stats.get("full_bpe"):
        return f"vocabulary: the whole CLIP BPE table, {len(vocab):,} classes (class id = BPE id), {origin}"
    captions = f" from {vocab.num_captions:,} captions" if vocab.num_captions else ""
    line = (f"vocabulary: {len(vocab):,} classes ({vocab.labels} labels){captions}, {origin}; most frequent: "
            f"{', '.join(vocab.names[:top])}{', ...' if len(vocab) > top else ''}")
    covered = vocab.stats.get("captions_with_kept_label")
    if covered is not None and vocab.num_captions:
        line += f"; {covered / vocab.num_captions:.1%} of the captions hold at least one of them"
    return line
