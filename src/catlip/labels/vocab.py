"""Vocabulary: label key ↔ contiguous class id, with document counts, names and glosses; versioned JSON.

`build_vocabulary` counts, for every key, the number of captions that contain it (a key counts once per caption),
in parallel over files; `build_vocabulary_from_source` does the same over a random-access source (anything with
`len()` and `captions(i)`, such as the training loader's `catlip.data.sources`), in parallel over index ranges,
so training builds its vocabulary from exactly the captions its loader reads. Partial counts are summed and keys
ordered by (count desc, key), so the file is identical whatever the number of workers. Pruning keeps keys with
count >= min_count (the paper's V_tau) and/or the top-k. Reading no caption at all is a `DataError` naming where
the captions were looked for, never a 0-class vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from catlip.defaults import V_TAU_DEFAULT
from catlip.errors import DataError, VocabularyError
from catlip.labels.corpus import ReadStats, caption_rule_text, iter_captions

FORMAT_VERSION = 1
_MAX_SIGNATURES = 2_000_000  # distinct label sets remembered to report the share of captions a pruned vocab covers


@dataclass(init=False)
class Vocabulary:
    """Label key <-> class id. ``labels`` is the label source (``catlip.labels.registry``) the keys come from;
    ``options`` its extractor options. ``method`` is the source's tag (``catlip`` for synsets, ``superclass`` for
    bpe, ``words``), written to the file's ``method`` field and hashed, so vocabularies made before label sources
    were a registry keep their hash; files without a ``labels`` field are read by their ``method``."""

    labels: str
    options: dict
    keys: list[str]
    counts: list[int]
    names: list[str]
    glosses: list[str]
    num_captions: int
    stats: dict
    format_version: int

    def __init__(self, labels: str | None = None, options: dict | None = None, keys: list[str] | None = None,
                 counts: list[int] | None = None, names: list[str] | None = None, glosses: list[str] | None = None,
                 num_captions: int = 0, stats: dict | None = None, format_version: int = FORMAT_VERSION, *,
                 method: str | None = None):
        from catlip.labels import registry

        source = registry.find(labels) if labels else registry.for_tag(method or "")
        if source is None:
            raise VocabularyError(f"vocabulary label source {labels or method!r} is not one of "
                                  f"{', '.join(registry.names())}")
        if labels and method and registry.for_tag(method) not in (None, source):
            raise VocabularyError(f"vocabulary says labels {labels!r} but method {method!r} (a "
                                  f"{registry.for_tag(method).name} vocabulary)")
        self.labels = source.name
        self.options = dict(options or {})
        self.keys = list(keys or [])
        self.counts = list(counts or [])
        self.names = list(names or [])
        self.glosses = list(glosses or [])
        self.num_captions = num_captions
        self.stats = dict(stats or {})
        self.format_version = format_version
        n = len(self.keys)
        if not (len(self.counts) == len(self.names) == len(self.glosses) == n):
            raise VocabularyError(f"vocabulary lists disagree in length (keys {n}, counts {len(self.counts)}, "
                                  f"names {len(self.names)}, glosses {len(self.glosses)})")
        self._ids = {k: i for i, k in enumerate(self.keys)}
        if len(self._ids) != n:
            raise VocabularyError("vocabulary has duplicate keys")

    @property
    def source(self):
        """The ``catlip.labels.registry.LabelSource`` entry of ``labels``."""
        from catlip.labels import registry

        return registry.get(self.labels)

    @property
    def method(self) -> str:
        """The label source's tag (``catlip`` | ``superclass`` | ``words``): the file's legacy ``method`` field."""
        return self.source.tag

    def __len__(self) -> int:
        return len(self.keys)

    def id(self, key: str) -> int | None:
        return self._ids.get(key)

    def encode(self, keys: Iterable[str]) -> list[int]:
        """Class ids of `keys`; keys outside the vocabulary are dropped."""
        ids = self._ids
        return [ids[k] for k in keys if k in ids]

    @property
    def hash(self) -> str:
        """16 hex chars identifying (source tag, options, keys in order); checkpoints record it."""
        blob = json.dumps([self.method, self.options, self.keys], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def extractor(self):
        """The extractor that produced these keys (same label source and options)."""
        return self.source.make(**self.options)

    def mapper(self, alpha: float | None = None, wordnet=None):
        """The label source's class mapper over this vocabulary (``catlip.labels.mapping``)."""
        from catlip.labels.mapping import DEFAULT_ALPHA

        return self.source.mapper(self, DEFAULT_ALPHA if alpha is None else alpha, wordnet)

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        return {"format_version": self.format_version, "labels": self.labels, "method": self.method,
                "options": self.options,
                "hash": self.hash, "num_classes": len(self), "num_captions": self.num_captions,
                "stats": self.stats, "keys": self.keys, "counts": self.counts, "names": self.names,
                "glosses": self.glosses}

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves a half-written vocabulary; a failed write
        (a full disk) is a one-line VocabularyError."""
        from catlip.atomic import write_json

        try:
            return write_json(path, self.to_json(), ensure_ascii=False, indent=1)
        except OSError as err:
            raise VocabularyError(f"cannot write the vocabulary {path}: {err.strerror or err}") from None

    @classmethod
    def from_json(cls, data, source: str = "vocabulary") -> "Vocabulary":
        if not isinstance(data, dict):
            raise VocabularyError(f"{source}: not a catlip vocabulary (top level is not an object)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise VocabularyError(f"{source}: format_version {version!r}, this catlip reads {FORMAT_VERSION}")
        try:
            labels = data.get("labels")
            vocab = cls(labels=str(labels) if labels else None, method=str(data["method"]),
                        options=dict(data["options"]), keys=list(data["keys"]),
                        counts=[int(c) for c in data["counts"]], names=list(data["names"]),
                        glosses=list(data["glosses"]), num_captions=int(data.get("num_captions", 0)),
                        stats=dict(data.get("stats", {})))
        except VocabularyError as err:
            raise VocabularyError(f"{source}: {err}") from None
        except (KeyError, TypeError, ValueError) as err:
            raise VocabularyError(f"{source}: corrupt vocabulary ({type(err).__name__}: {err})") from err
        if "hash" in data and data["hash"] != vocab.hash:
            raise VocabularyError(f"{source}: content does not match its hash {data['hash']} (edited or corrupt)")
        return vocab

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise VocabularyError(f"vocabulary file not found: {path}") from err
        except OSError as err:  # a folder, no permission
            raise VocabularyError(f"cannot read vocabulary {path}: {err.strerror or err}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise VocabularyError(f"{path}: corrupt vocabulary (not valid JSON: {err})") from err
        return cls.from_json(data, str(path))

    @classmethod
    def full_bpe(cls, stopwords: bool = False) -> "Vocabulary":
        """All 49,408 CLIP BPE tokens, so class ids equal BPE ids (SuperClass's default head)."""
        from catlip.labels.subwords import SubwordExtractor

        ex = SubwordExtractor(stopwords=stopwords)
        n = len(ex.bpe.id_token)
        return cls(labels="bpe", options=ex.options, keys=[str(i) for i in range(n)], counts=[0] * n,
                   names=[ex.bpe.decode_token(i).strip() for i in range(n)], glosses=[""] * n,
                   stats={"full_bpe": True})


# ---------------------------------------------------------------------- building


@dataclass
class PartialCounts:
    """What one worker learns from one file; summing partials is order-independent."""

    doc_freq: Counter = field(default_factory=Counter)
    signatures: Counter = field(default_factory=Counter)
    captions: int = 0
    with_label: int = 0
    read: ReadStats = field(default_factory=ReadStats)
    skipped_language: Counter = field(default_factory=Counter)  # captions the extractor's language filter skipped

    def merge(self, other: "PartialCounts") -> None:
        self.doc_freq.update(other.doc_freq)
        if self.signatures is not None and other.signatures is not None:
            self.signatures.update(other.signatures)
            if len(self.signatures) > _MAX_SIGNATURES:
                self.signatures = None
        else:
            self.signatures = None
        self.captions += other.captions
        self.with_label += other.with_label
        self.read.merge(other.read)
        self.skipped_language.update(other.skipped_language)


_WORKER_EXTRACTOR = None


def _init_worker(labels: str, options: dict) -> None:
    global _WORKER_EXTRACTOR
    from catlip.labels import get_extractor

    _WORKER_EXTRACTOR = get_extractor(labels, **options)


def _add_captions(part: PartialCounts, ex, captions: list[str]) -> None:
    before = Counter(getattr(ex, "skipped", None) or {})  # the extractor counts over its whole life
    for caption in captions:
        keys = ex.extract(caption)
        part.captions += 1
        if keys:
            part.with_label += 1
            part.doc_freq.update(keys)
            if part.signatures is not None:
                part.signatures[tuple(sorted(keys))] += 1
    part.skipped_language.update(Counter(getattr(ex, "skipped", None) or {}) - before)


def _count_file(args: tuple[str, str | None]) -> PartialCounts:
    path, column = args
    ex = _WORKER_EXTRACTOR
    part = PartialCounts()
    for captions in iter_captions(path, column=column, stats=part.read):
        _add_captions(part, ex, captions)
    if part.signatures is not None and len(part.signatures) > _MAX_SIGNATURES:
        part.signatures = None
    return part


_WORKER_SOURCE = None


def _init_source_worker(labels: str, options: dict, source) -> None:
    global _WORKER_SOURCE
    _init_worker(labels, options)
    if source is not None:  # spawn: the source comes pickled; fork: inherited from the parent
        _WORKER_SOURCE = source


def _describe(source, i: int) -> str:
    describe = getattr(source, "describe", None)
    return describe(i) if describe is not None else f"sample {i}"


def _count_range(bounds: tuple[int, int]) -> PartialCounts:
    start, stop = bounds
    source, ex = _WORKER_SOURCE, _WORKER_EXTRACTOR
    part = PartialCounts()
    for i in range(start, stop):
        try:
            captions = source.captions(i)
        except OSError as err:  # the loader skips and counts the same sample
            part.read.skip(_describe(source, i), f"unreadable ({err})", quiet=True)
            continue
        if not captions:
            part.read.no_caption(_describe(source, i))
            continue
        part.read.samples += 1
        part.read.captions += len(captions)
        _add_captions(part, ex, captions)
    if part.signatures is not None and len(part.signatures) > _MAX_SIGNATURES:
        part.signatures = None
    return part


def count_source(source, labels: str, options: dict, *, workers: int = 1, progress: bool = False) -> PartialCounts:
    """Document frequency of every key over `source.captions(i)` for every sample (index ranges in parallel)."""
    global _WORKER_SOURCE
    n = len(source)
    step = max(1, min(5_000, -(-n // (max(1, workers) * 4))))
    jobs = [(a, min(a + step, n)) for a in range(0, n, step)]
    total = PartialCounts()
    bar = _progress(n, progress, unit="sample", desc="counting labels")
    _WORKER_SOURCE = source
    try:
        if workers <= 1 or len(jobs) <= 1:
            _init_worker(labels, options)
            for part, (a, b) in zip(map(_count_range, jobs), jobs):
                total.merge(part)
                bar.update(b - a)
        else:
            methods = multiprocessing.get_all_start_methods()
            fork = "fork" in methods
            if fork:
                _init_worker(labels, options)  # parse WordNet/tagger once here; forked workers share the pages
            ctx = multiprocessing.get_context("fork" if fork else "spawn")
            with ctx.Pool(min(workers, len(jobs)), initializer=_init_source_worker,
                          initargs=(labels, options, None if fork else source)) as pool:
                for part, (a, b) in zip(pool.imap(_count_range, jobs), jobs):
                    total.merge(part)
                    bar.update(b - a)
    finally:
        _WORKER_SOURCE = None
        bar.close()
    return total


def count_keys(paths: list[str | Path], labels: str, options: dict, *, workers: int = 1, column: str | None = None,
               progress: bool = False) -> PartialCounts:
    """Document frequency of every key over all captions of `paths` (files in parallel with `workers`)."""
    jobs = [(str(p), column) for p in paths]
    total = PartialCounts()
    bar = _progress(len(jobs), progress, unit="file", desc="counting labels")
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(labels, options)
        results = map(_count_file, jobs)
        for part in results:
            total.merge(part)
            bar.update(1)
    else:
        methods = multiprocessing.get_all_start_methods()
        if "fork" in methods:
            _init_worker(labels, options)  # parse WordNet/tagger once here; forked workers share the pages
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(labels, options)) as pool:
            for part in pool.imap(_count_file, jobs):
                total.merge(part)
                bar.update(1)
    bar.close()
    return total


def _progress(total: int, enabled: bool, *, unit: str, desc: str):
    from catlip.progress import progress_bar

    return progress_bar(total=total, unit=unit, desc=desc, disable=not enabled)


def prune(doc_freq: Counter, min_count: int = 1, top_k: int | None = None) -> list[tuple[str, int]]:
    """Keys with count >= min_count, most frequent first (ties by key), at most top_k of them."""
    ranked = sorted(((k, c) for k, c in doc_freq.items() if c >= min_count), key=lambda kc: (-kc[1], kc[0]))
    return ranked[:top_k] if top_k is not None else ranked


def _first_problem(read: ReadStats) -> str:
    parts = []
    if read.uncaptioned:
        parts.append(f"{read.uncaptioned:,} sample(s) without any caption (first: {read.uncaptioned_example})")
    if read.skipped:
        parts.append(f"{read.skipped:,} skipped (first: {read.messages[0]})" if read.messages else
                     f"{read.skipped:,} skipped")
    return "; ".join(parts) or "nothing was skipped"


def build_vocabulary(paths: list[str | Path], labels: str = "synsets", options: dict | None = None, *,
                     min_count: int = V_TAU_DEFAULT, top_k: int | None = None, workers: int = 1,
                     column: str | None = None, progress: bool = False) -> tuple[Vocabulary, PartialCounts]:
    """Count keys over caption files and keep the frequent ones. Returns (vocabulary, raw counts and read stats).

    ``labels``: a label source of ``catlip.labels.registry`` (or an old method name, ``catlip`` / ``superclass``).
    Raises `DataError` when the files hold no caption at all (naming where captions were looked for).
    """
    from catlip.labels import registry

    source = registry.get(labels)
    ex = source.make(**(options or {}))
    counts = count_keys(paths, source.name, ex.options, workers=workers, column=column, progress=progress)
    if counts.captions == 0:
        names = ", ".join(str(p) for p in paths[:3]) + (f", ... ({len(paths)} in all)" if len(paths) > 3 else "")
        raise DataError(f"no captions found in {len(paths)} file(s) ({names}): {_first_problem(counts.read)}; "
                        f"looked for: {caption_rule_text(column)}")
    return _vocabulary(counts, ex, source, min_count, top_k, [Path(p).name for p in paths]), counts


def build_vocabulary_from_source(source, labels: str = "synsets", options: dict | None = None, *,
                                 min_count: int = V_TAU_DEFAULT, top_k: int | None = None, workers: int = 1,
                                 progress: bool = False, name: str = "source", looked_for: str = ""
                                 ) -> tuple[Vocabulary, PartialCounts]:
    """`build_vocabulary` over a random-access source (`len(source)`, `source.captions(i)`, optionally
    `source.describe(i)` for messages). `name` and `looked_for` go into the error when no caption is found."""
    from catlip.labels import registry

    label_source = registry.get(labels)
    ex = label_source.make(**(options or {}))
    counts = count_source(source, label_source.name, ex.options, workers=workers, progress=progress)
    if counts.captions == 0:
        raise DataError(f"no captions found in {len(source):,} samples of {name}: {_first_problem(counts.read)}"
                        + (f"; looked for: {looked_for}" if looked_for else ""))
    return _vocabulary(counts, ex, label_source, min_count, top_k, [name]), counts


def _vocabulary(counts: PartialCounts, ex, source, min_count: int, top_k: int | None,
                sources: list[str]) -> Vocabulary:
    kept = prune(counts.doc_freq, min_count, top_k)
    keys = [k for k, _ in kept]
    glosses = [source.gloss(ex, k) for k in keys] if source.gloss is not None else [""] * len(keys)
    kept_set = set(keys)
    covered = (sum(n for sig, n in counts.signatures.items() if not kept_set.isdisjoint(sig))
               if counts.signatures is not None else None)
    stats = {"min_count": min_count, "top_k": top_k, "sources": sources,
             "samples": counts.read.samples, "captions_with_label": counts.with_label,
             "captions_with_kept_label": covered, "unique_keys": len(counts.doc_freq),
             "skipped": counts.read.skipped}
    if counts.skipped_language:  # absent when nothing was skipped, so English-only vocabularies read as before
        stats["skipped_language"] = dict(sorted(counts.skipped_language.items()))
    return Vocabulary(labels=source.name, options=ex.options, keys=keys, counts=[c for _, c in kept],
                      names=[ex.name(k) for k in keys], glosses=glosses, num_captions=counts.captions, stats=stats)
