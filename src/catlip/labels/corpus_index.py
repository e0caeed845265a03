"""The nearest corpus synset of any synset by WordNet path similarity, from an index of the corpus's hypernyms.

Path similarity is 1 / (d + 1), d the shortest distance through a common hypernym (NLTK's definition). The corpus
synsets are indexed by their hypernyms once, so the best match of a target is the best entry over the target's own
hypernyms: seconds for ImageNet-22k against a large vocabulary. Used by the class mapper (labels/mapping.py) and the
coverage analysis (analysis/coverage.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

HypernymPaths = Callable[[str], Sequence[Sequence[str]]]


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
