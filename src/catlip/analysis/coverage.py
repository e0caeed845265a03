"""Overlap of a target label set with the corpus synsets (CatLIP Fig. 2b-c).

For each target synset, the corpus synset with the highest WordNet path similarity (``catlip.labels.corpus_index``,
shared with the class mapper); the curves below count how many targets are matched at each similarity.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from catlip.labels.corpus_index import Match

DEFAULT_ALPHAS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2)


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
