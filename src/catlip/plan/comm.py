"""Ring-collective times: a bandwidth term that grows with bytes and a latency term that grows with ranks.

A ring all-reduce moves 2(N-1)/N of the buffer through every GPU's link in 2(N-1) hops; a ring all-gather (or its
backward, a reduce-scatter) moves (N-1)/N of the gathered result in N-1 hops. Data-parallel frameworks split the
gradient into buckets whose rings pipeline, so a preset link counts one latency chain per collective, not per
bucket. A measured curve (``nccl-tests``' bus bandwidth, which divides the same 2(N-1)/N or (N-1)/N of the bytes
by the measured time) is read at the collective's message size, a DDP bucket for the gradient, and already holds
the latency of every message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .devices import Link, interpolate

KINDS = ("all_reduce", "all_gather")


def _shape(kind: str, ranks: int) -> tuple[float, int]:
    """(fraction of the bytes each link carries, hops in the latency chain)."""
    if kind == "all_reduce":
        return 2 * (ranks - 1) / ranks, 2 * (ranks - 1)
    return (ranks - 1) / ranks, ranks - 1


def bandwidth(kind: str, link: Link, message: float) -> float:
    """GB/s a ``kind`` collective of ``message``-byte messages moves at over ``link``."""
    curve = link.curve(kind)
    return interpolate(curve, message) if curve else link.gb_per_s


def collective_s(kind: str, nbytes: float, ranks: int, link: Link, message: float | None = None) -> float:
    """Seconds for one ``kind`` collective of ``nbytes`` (all-gather: the gathered result) over ``ranks``, sent as
    ``message``-byte messages (default: one message of ``nbytes``); 0 for one rank."""
    if ranks <= 1:
        return 0.0
    frac, hops = _shape(kind, ranks)
    seconds = frac * nbytes / (bandwidth(kind, link, nbytes if message is None else message) * 1e9)
    return seconds if link.curve(kind) else seconds + hops * link.latency_us * 1e-6


def all_reduce_s(nbytes: float, ranks: int, link: Link, message: float | None = None) -> float:
    """Seconds to all-reduce ``nbytes`` over ``ranks`` GPUs (0 for one GPU)."""
    return collective_s("all_reduce", nbytes, ranks, link, message)


def all_gather_s(total_bytes: float, ranks: int, link: Link, message: float | None = None) -> float:
    """Seconds to all-gather a result of ``total_bytes`` (every rank contributing 1/ranks of it)."""
    return collective_s("all_gather", total_bytes, ranks, link, message)


@dataclass(frozen=True)
class Host:
    """A CPU host that runs ranks as processes (``benchmarks/comm.py``'s gloo check). ``parallel`` ranks run at
    full speed and more share the cores (time x N / parallel); once ranks outnumber ``cores``, every hop also waits
    ``wait_us`` for its rank to be scheduled. GPUs run one rank each: ``catlip plan`` has no such term."""

    cores: int
    parallel: float
    wait_us: float = 0.0

    def seconds(self, kind: str, nbytes: float, ranks: int, link: Link) -> float:
        """A collective's time on this host."""
        _, hops = _shape(kind, ranks)
        wait = hops * self.wait_us * 1e-6 if ranks > self.cores else 0.0
        return collective_s(kind, nbytes, ranks, link) * max(1.0, ranks / self.parallel) + wait


def fit_link(points: list[tuple[str, float, int, float]], *, per_size: bool = False,
             host: Host | None = None) -> tuple[Link, Host | None]:
    """The link that best fits measured (kind, bytes, ranks, seconds) points of one or both collectives, and the
    host with its per-hop wait fitted too.

    Least squares in relative error: one bandwidth and a latency for every size and collective, or with
    ``per_size`` a bus-bandwidth curve per collective (one bandwidth per size, the latency inside it, as
    nccl-tests reports); on a ``host``, times as :meth:`Host.seconds` gives them. Latency and wait are >= 0.
    """
    import numpy as np

    columns = sorted({(k, float(b)) for k, b, _, _ in points}) if per_size else [None]
    width = len(columns) + (0 if per_size else 1)  # then the wait
    rows = []
    for kind, nbytes, ranks, seconds in points:
        frac, hops = _shape(kind, ranks)
        row = np.zeros(width + 1)
        row[columns.index((kind, float(nbytes))) if per_size else 0] = frac * nbytes
        if not per_size:
            row[width - 1] = hops
        row[:width] *= max(1.0, ranks / host.parallel) if host else 1.0
        row[width] = hops if host and ranks > host.cores else 0.0
        rows.append(row / seconds)
    a, free = np.array(rows), list(range(width + 1))
    while True:  # a latency or wait that comes out negative is held at zero and the rest refitted
        x = np.zeros(width + 1)
        x[free] = np.linalg.lstsq(a[:, free], np.ones(len(a)), rcond=None)[0]
        negative = [i for i in free[len(columns):] if x[i] < 0]
        if not negative:
            break
        free.remove(negative[0])
    fitted = replace(host, wait_us=float(x[width]) * 1e6) if host else None
    if per_size:
        curves = {}
        for (kind, size), v in zip(columns, x):
            curves.setdefault(kind, []).append((size, float(1 / v / 1e9)))
        return Link("fitted", max(g for c in curves.values() for _, g in c), 0.0,
                    tuple((k, tuple(c)) for k, c in sorted(curves.items()))), fitted
    return Link("fitted", float(1 / x[0] / 1e9), float(x[1]) * 1e6), fitted
