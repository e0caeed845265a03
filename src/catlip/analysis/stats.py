"""Synset statistics of a caption corpus (CatLIP Fig. 3 and App. B), computed from plain label-key lists.

Everything here works on keys only (no WordNet, no extractor), so it is testable on hand-made corpora and the
partial results of several worker processes merge exactly: a file's statistics are appended after the previous
file's, which keeps the unique-synset growth curve identical to a single sequential pass.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

DEFAULT_TAUS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


@dataclass
class CorpusStats:
    """Counts over a stream of samples, each sample being one or more captions with their label keys.

    ``caption_counts[k]`` is the number of captions that contain ``k`` (the vocabulary count of the paper, where a
    sample has one caption); ``sample_counts[k]`` the number of samples with ``k`` in any of their captions.
    ``first_seen[k]`` is the index of the first caption (0-based, stream order) that contains ``k``.
    """

    unlabelled_keep: int = 20
    seed: int = 0
    num_samples: int = 0
    num_captions: int = 0
    num_labelled_captions: int = 0
    label_occurrences: int = 0
    caption_counts: Counter = field(default_factory=Counter)
    sample_counts: Counter = field(default_factory=Counter)
    first_seen: dict = field(default_factory=dict)
    # bottom-k sketch of unlabelled captions: (hash, caption); mergeable and independent of worker count
    unlabelled: list = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def add_sample(self, keys_per_caption: Sequence[Sequence[str]], captions: Sequence[str] | None = None,
                   sample_id: str = "") -> None:
        """Count one sample; ``captions`` (same length) are only needed to sample the unlabelled ones."""
        union: set[str] = set()
        for i, keys in enumerate(keys_per_caption):
            index = self.num_captions
            self.num_captions += 1
            if not keys:
                if captions is not None:
                    self._offer_unlabelled(captions[i], f"{sample_id}/{index}")
                continue
            self.num_labelled_captions += 1
            distinct = list(dict.fromkeys(keys))  # a caption counts a synset once, whatever the extractor returns
            self.label_occurrences += len(distinct)
            self.caption_counts.update(distinct)
            for key in distinct:
                self.first_seen.setdefault(key, index)
            union.update(distinct)
        self.num_samples += 1
        self.sample_counts.update(union)

    def _offer_unlabelled(self, caption: str, where: str) -> None:
        if self.unlabelled_keep <= 0:
            return
        digest = hashlib.blake2b(f"{self.seed}\0{where}\0{caption}".encode(), digest_size=8).hexdigest()
        self.unlabelled.append((digest, caption))
        if len(self.unlabelled) > 4 * self.unlabelled_keep:
            self._trim()

    def _trim(self) -> None:
        self.unlabelled = sorted(set(self.unlabelled))[: self.unlabelled_keep]

    def merge(self, later: "CorpusStats") -> "CorpusStats":
        """Append the statistics of a later part of the stream (in place; returns self)."""
        offset = self.num_captions
        for key, index in later.first_seen.items():
            if key not in self.first_seen:
                self.first_seen[key] = offset + index
        self.num_samples += later.num_samples
        self.num_captions += later.num_captions
        self.num_labelled_captions += later.num_labelled_captions
        self.label_occurrences += later.label_occurrences
        self.caption_counts.update(later.caption_counts)
        self.sample_counts.update(later.sample_counts)
        self.skipped.update(later.skipped)
        self.unlabelled.extend(later.unlabelled)
        self._trim()
        return self

    @property
    def num_unlabelled_captions(self) -> int:
        return self.num_captions - self.num_labelled_captions

    def unlabelled_examples(self) -> list[str]:
        """The seeded sample of captions without any label (at most ``unlabelled_keep``)."""
        self._trim()
        return [caption for _, caption in self.unlabelled]


def count_corpus(samples: Iterable[Sequence[Sequence[str]]], **options) -> CorpusStats:
    """Statistics of an iterable of samples, each a sequence of per-caption key lists."""
    stats = CorpusStats(**options)
    for sample in samples:
        stats.add_sample(sample)
    return stats


def log_points(n: int, num: int = 40) -> list[int]:
    """About ``num`` integers spaced evenly in log scale over [1, n], always including 1 and n."""
    if n <= 0:
        return []
    points = {1, n}
    if n > 1:
        step = math.log(n) / max(num - 1, 1)
        points.update(int(round(math.exp(i * step))) for i in range(num))
    return sorted(p for p in points if 1 <= p <= n)


def growth_curve(first_seen: dict, num_captions: int, num: int = 40) -> list[tuple[int, int]]:
    """(captions seen, unique synsets among them) at log-spaced points of the stream (CatLIP Fig. 3b)."""
    firsts = sorted(first_seen.values())
    return [(n, bisect.bisect_left(firsts, n)) for n in log_points(num_captions, num)]


def rank_counts(counts: Counter, max_points: int = 300) -> list[tuple[int, int]]:
    """(rank, count) of the long tail (CatLIP Fig. 3a), thinned to log-spaced ranks so the JSON stays small."""
    ordered = sorted(counts.values(), reverse=True)
    return [(rank, ordered[rank - 1]) for rank in log_points(len(ordered), max_points)]


def vtau_curve(counts: Counter, taus: Sequence[int] = DEFAULT_TAUS) -> list[dict]:
    """Vocabulary size and share of label occurrences kept when pruning at V_tau (keep count >= tau)."""
    total = sum(counts.values())
    values = sorted(counts.values())
    suffix = [0] * (len(values) + 1)
    for i in range(len(values) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + values[i]
    rows = []
    for tau in taus:
        first = bisect.bisect_left(values, tau)
        kept = suffix[first]
        rows.append({"tau": int(tau), "vocab_size": len(values) - first, "occurrences_kept": kept,
                     "share_kept": kept / total if total else 0.0})
    return rows


def top_keys(counts: Counter, k: int) -> list[tuple[str, int]]:
    """The ``k`` most frequent keys; ties broken by key so the table is deterministic."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]
