"""Overlap of a target label set with the corpus synsets (CatLIP Fig. 2b-c).

For each target synset we find the corpus synset with the highest WordNet path similarity, 1 / (d + 1) with d the
shortest distance through a common hypernym (NLTK's definition). Instead of comparing every target with every
corpus synset we index the corpus synsets by their hypernyms once: the best match of a target is then the best
entry over the target's own hypernyms, which makes ImageNet-22k against a large vocabulary a matter of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

HypernymPaths = Callable[[str], Sequence[Sequence[str]]]

DEFAULT_ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


@dataclass(frozen=True)
class Match:
    """The corpus synset closest to one target synset."""

    target: str
    key: str
    distance: int
    count: int

    @property
    def similarity(self) -> float:
        return 1.0 / (self.distance + 1)


def ancestor_distances(key: str, hypernym_paths: HypernymPaths) -> dict[str, int]:
    """Each hypernym of ``key`` (and ``key`` itself, at 0) with its shortest upward distance."""
    distances = {key: 0}
    for path in hypernym_paths(key):
        nodes = list(path)
        if not nodes or nodes[-1] != key:  # tolerate readers whose paths stop at the parent
            nodes.append(key)
        last = len(nodes) - 1
        for i, node in enumerate(nodes):
            d = last - i
            if d < distances.get(node, d + 1):
                distances[node] = d
    return distances


class CorpusIndex:
    """Corpus synsets indexed by hypernym: for each ancestor, the nearest (then most frequent) descendant."""

    def __init__(self, counts: Mapping[str, int], hypernym_paths: HypernymPaths):
        self.counts = counts
        self.hypernym_paths = hypernym_paths
        self._best: dict[str, tuple[int, int, str]] = {}
        for key, count in counts.items():
            for ancestor, d in ancestor_distances(key, hypernym_paths).items():
                entry = (d, -count, key)
                if entry < self._best.get(ancestor, (d + 1,)):
                    self._best[ancestor] = entry

    def best_match(self, target: str) -> Match | None:
        """The closest corpus synset (ties: the more frequent, then the smaller key); None if nothing shares
        a hypernym with ``target`` (e.g. an unknown key)."""
        best = None
        for ancestor, d_target in ancestor_distances(target, self.hypernym_paths).items():
            entry = self._best.get(ancestor)
            if entry is None:
                continue
            candidate = (d_target + entry[0], entry[1], entry[2])
            if best is None or candidate < best:
                best = candidate
        if best is None:
            return None
        return Match(target=target, key=best[2], distance=best[0], count=-best[1])


def best_matches(targets: Iterable[str], counts: Mapping[str, int],
                 hypernym_paths: HypernymPaths) -> dict[str, Match | None]:
    index = CorpusIndex(counts, hypernym_paths)
    return {t: index.best_match(t) for t in dict.fromkeys(targets)}


def coverage_curve(matches: Mapping[str, Match | None], alphas: Sequence[float] = DEFAULT_ALPHAS,
                   num_targets: int | None = None) -> list[dict]:
    """Number (and share) of targets whose best match has path similarity >= alpha, per alpha."""
    total = len(matches) if num_targets is None else num_targets
    sims = [m.similarity for m in matches.values() if m is not None]
    rows = []
    for alpha in alphas:
        # a tiny tolerance: 1/(d+1) is not exact in floating point (1/3 vs 0.333...)
        matched = sum(1 for s in sims if s >= alpha - 1e-9)
        rows.append({"alpha": float(alpha), "matched": matched, "share": matched / total if total else 0.0})
    return rows


def samples_per_target(matches: Mapping[str, Match | None], min_similarity: float) -> list[int]:
    """Counts of the best corpus synset of each target matched at ``min_similarity`` or above, descending."""
    counts = [m.count for m in matches.values() if m is not None and m.similarity >= min_similarity - 1e-9]
    return sorted(counts, reverse=True)
