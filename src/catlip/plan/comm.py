"""Ring-collective times: a bandwidth term that grows with bytes and a latency term that grows with ranks.

A ring all-reduce moves 2(N-1)/N of the buffer through every GPU's link in 2(N-1) hops; a ring all-gather (or its
backward, a reduce-scatter) moves (N-1)/N of the gathered result in N-1 hops. Data-parallel frameworks split the
gradient into buckets whose rings pipeline, so one latency chain is counted per collective, not per bucket.
"""

from __future__ import annotations

from .devices import Link


def all_reduce_s(nbytes: float, ranks: int, link: Link) -> float:
    """Seconds to all-reduce ``nbytes`` over ``ranks`` GPUs (0 for one GPU)."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / (link.gb_per_s * 1e9) + 2 * (ranks - 1) * link.latency_us * 1e-6


def all_gather_s(total_bytes: float, ranks: int, link: Link) -> float:
    """Seconds to all-gather a result of ``total_bytes`` (every rank contributing 1/ranks of it)."""
    if ranks <= 1:
        return 0.0
    return (ranks - 1) / ranks * total_bytes / (link.gb_per_s * 1e9) + (ranks - 1) * link.latency_us * 1e-6


def fit_link(points: list[tuple[str, float, int, float]]) -> Link:
    """The (bandwidth, latency) that best fit measured (kind, bytes, ranks, seconds) points, kind "all_reduce" or
    "all_gather": least squares on t = bandwidth-term / B + hops * alpha, both unknowns non-negative."""
    rows = []
    for kind, nbytes, ranks, seconds in points:
        frac, hops = (2 * (ranks - 1) / ranks, 2 * (ranks - 1)) if kind == "all_reduce" else ((ranks - 1) / ranks,
                                                                                              ranks - 1)
        rows.append((frac * nbytes, hops, seconds))
    # weight each point by 1/t so small and large messages count alike (relative error)
    sxx = sum((x / t) ** 2 for x, _, t in rows)
    sxh = sum(x * h / t**2 for x, h, t in rows)
    shh = sum((h / t) ** 2 for _, h, t in rows)
    sxy, shy = sum(x / t for x, _, t in rows), sum(h / t for _, h, t in rows)
    det = sxx * shh - sxh**2
    inv_bw, alpha = (sxy * shh - shy * sxh) / det, (shy * sxx - sxy * sxh) / det
    if alpha < 0:  # latency cannot be negative: refit bandwidth alone
        inv_bw, alpha = sxy / sxx, 0.0
    return Link("fitted", 1 / inv_bw / 1e9, alpha * 1e6)
