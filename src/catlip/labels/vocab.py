"""Vocabulary: label key ↔ contiguous class id, with document counts, names and glosses; versioned JSON.

`build_vocabulary` counts, for every key, the number of captions that contain it (a key counts once per caption),
in parallel over files. Partial counts are summed and keys ordered by (count desc, key), so the file is identical
whatever the number of workers. Pruning keeps keys with count >= min_count (the paper's V_tau) and/or the top-k.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from catlip.errors import VocabularyError
from catlip.labels.corpus import ReadStats, iter_captions

FORMAT_VERSION = 1
_MAX_SIGNATURES = 2_000_000  # distinct label sets remembered to report the share of captions a pruned vocab covers


@dataclass
class Vocabulary:
    method: str
    options: dict
    keys: list[str]
    counts: list[int]
    names: list[str]
    glosses: list[str]
    num_captions: int = 0
    stats: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        n = len(self.keys)
        if not (len(self.counts) == len(self.names) == len(self.glosses) == n):
            raise VocabularyError(f"vocabulary lists disagree in length (keys {n}, counts {len(self.counts)}, "
                                  f"names {len(self.names)}, glosses {len(self.glosses)})")
        self._ids = {k: i for i, k in enumerate(self.keys)}
        if len(self._ids) != n:
            raise VocabularyError("vocabulary has duplicate keys")

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
        """16 hex chars identifying (method, options, keys in order); checkpoints record it."""
        blob = json.dumps([self.method, self.options, self.keys], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    def extractor(self):
        """The extractor that produced these keys (same method and options)."""
        from catlip.labels import get_extractor

        return get_extractor(self.method, **self.options)

    # ------------------------------------------------------------------ persistence

    def to_json(self) -> dict:
        return {"format_version": self.format_version, "method": self.method, "options": self.options,
                "hash": self.hash, "num_classes": len(self), "num_captions": self.num_captions,
                "stats": self.stats, "keys": self.keys, "counts": self.counts, "names": self.names,
                "glosses": self.glosses}

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves a half-written vocabulary."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_json(cls, data, source: str = "vocabulary") -> "Vocabulary":
        if not isinstance(data, dict):
            raise VocabularyError(f"{source}: not a catlip vocabulary (top level is not an object)")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise VocabularyError(f"{source}: format_version {version!r}, this catlip reads {FORMAT_VERSION}")
        try:
            vocab = cls(method=str(data["method"]), options=dict(data["options"]), keys=list(data["keys"]),
                        counts=[int(c) for c in data["counts"]], names=list(data["names"]),
                        glosses=list(data["glosses"]), num_captions=int(data.get("num_captions", 0)),
                        stats=dict(data.get("stats", {})))
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
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise VocabularyError(f"{path}: corrupt vocabulary (not valid JSON: {err})") from err
        return cls.from_json(data, str(path))

    @classmethod
    def full_bpe(cls, stopwords: bool = False) -> "Vocabulary":
        """All 49,408 CLIP BPE tokens, so class ids equal BPE ids (SuperClass's default head)."""
        from catlip.labels.subwords import SubwordExtractor

        ex = SubwordExtractor(stopwords=stopwords)
        n = len(ex.bpe.id_token)
        return cls(method="superclass", options=ex.options, keys=[str(i) for i in range(n)], counts=[0] * n,
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


_WORKER_EXTRACTOR = None


def _init_worker(method: str, options: dict) -> None:
    global _WORKER_EXTRACTOR
    from catlip.labels import get_extractor

    _WORKER_EXTRACTOR = get_extractor(method, **options)


def _count_file(args: tuple[str, str | None]) -> PartialCounts:
    path, column = args
    ex = _WORKER_EXTRACTOR
    part = PartialCounts()
    for captions in iter_captions(path, column=column, stats=part.read):
        for caption in captions:
            keys = ex.extract(caption)
            part.captions += 1
            if keys:
                part.with_label += 1
                part.doc_freq.update(keys)
                if part.signatures is not None:
                    part.signatures[tuple(sorted(keys))] += 1
    if part.signatures is not None and len(part.signatures) > _MAX_SIGNATURES:
        part.signatures = None
    return part


def count_keys(paths: list[str | Path], method: str, options: dict, *, workers: int = 1, column: str | None = None,
               progress: bool = False) -> PartialCounts:
    """Document frequency of every key over all captions of `paths` (files in parallel with `workers`)."""
    jobs = [(str(p), column) for p in paths]
    total = PartialCounts()
    bar = _progress(len(jobs), progress)
    if workers <= 1 or len(jobs) <= 1:
        _init_worker(method, options)
        results = map(_count_file, jobs)
        for part in results:
            total.merge(part)
            bar.update(1)
    else:
        methods = multiprocessing.get_all_start_methods()
        if "fork" in methods:
            _init_worker(method, options)  # parse WordNet/tagger once here; forked workers share the pages
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(method, options)) as pool:
            for part in pool.imap(_count_file, jobs):
                total.merge(part)
                bar.update(1)
    bar.close()
    return total


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        enabled = False
    if not enabled:
        class _Null:
            def update(self, n):
                pass

            def close(self):
                pass
        return _Null()
    return tqdm(total=total, unit="file", desc="counting labels")


def prune(doc_freq: Counter, min_count: int = 1, top_k: int | None = None) -> list[tuple[str, int]]:
    """Keys with count >= min_count, most frequent first (ties by key), at most top_k of them."""
    ranked = sorted(((k, c) for k, c in doc_freq.items() if c >= min_count), key=lambda kc: (-kc[1], kc[0]))
    return ranked[:top_k] if top_k is not None else ranked


def build_vocabulary(paths: list[str | Path], method: str = "catlip", options: dict | None = None, *,
                     min_count: int = 500, top_k: int | None = None, workers: int = 1, column: str | None = None,
                     progress: bool = False) -> tuple[Vocabulary, PartialCounts]:
    """Count keys over caption files and keep the frequent ones. Returns (vocabulary, raw counts and read stats)."""
    from catlip.labels import get_extractor

    ex = get_extractor(method, **(options or {}))
    counts = count_keys(paths, method, ex.options, workers=workers, column=column, progress=progress)
    kept = prune(counts.doc_freq, min_count, top_k)
    keys = [k for k, _ in kept]
    glosses = [ex.wordnet.gloss(k) for k in keys] if method == "catlip" else [""] * len(keys)
    kept_set = set(keys)
    covered = (sum(n for sig, n in counts.signatures.items() if not kept_set.isdisjoint(sig))
               if counts.signatures is not None else None)
    stats = {"min_count": min_count, "top_k": top_k, "sources": [Path(p).name for p in paths],
             "samples": counts.read.samples, "captions_with_label": counts.with_label,
             "captions_with_kept_label": covered, "unique_keys": len(counts.doc_freq),
             "skipped": counts.read.skipped}
    vocab = Vocabulary(method=method, options=ex.options, keys=keys, counts=[c for _, c in kept],
                       names=[ex.name(k) for k in keys], glosses=glosses, num_captions=counts.captions, stats=stats)
    return vocab, counts
