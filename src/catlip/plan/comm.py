"""Ring-collective times: a bandwidth term that grows with bytes and a latency term that grows with ranks.

A ring all-reduce moves 2(N-1)/N of the buffer through every GPU's link in 2(N-1) hops; a ring all-gather (or its
backward, a reduce-scatter) moves (N-1)/N of the gathered result in N-1 hops. Data-parallel frameworks split the
gradient into buckets whose rings pipeline, so one latency chain is counted per collective, not per bucket, and the
bandwidth is the link's at the bucket's size (``message``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from catlip.errors import CliError

from .devices import Link

KINDS = ("all_reduce", "all_gather")


def _shape(kind: str, ranks: int) -> tuple[float, int]:
    """(fraction of the bytes each link carries, hops in the latency chain)."""
    if kind == "all_reduce":
        return 2 * (ranks - 1) / ranks, 2 * (ranks - 1)
    return (ranks - 1) / ranks, ranks - 1


def collective_s(kind: str, nbytes: float, ranks: int, link: Link, message: float | None = None) -> float:
    """Seconds for one ``kind`` collective of ``nbytes`` (all-gather: the gathered result) over ``ranks``, moving
    at the link's bandwidth for ``message``-byte messages (default: one message of ``nbytes``); 0 for one rank."""
    if ranks <= 1:
        return 0.0
    frac, hops = _shape(kind, ranks)
    gb_per_s = link.bus_gb_per_s(nbytes if message is None else message)
    return frac * nbytes / (gb_per_s * 1e9) + hops * link.latency_us * 1e-6


def all_reduce_s(nbytes: float, ranks: int, link: Link, message: float | None = None) -> float:
    """Seconds to all-reduce ``nbytes`` over ``ranks`` GPUs (0 for one GPU)."""
    return collective_s("all_reduce", nbytes, ranks, link, message)


def all_gather_s(total_bytes: float, ranks: int, link: Link, message: float | None = None) -> float:
    """Seconds to all-gather a result of ``total_bytes`` (every rank contributing 1/ranks of it)."""
    return collective_s("all_gather", total_bytes, ranks, link, message)


def fit_link(points: list[tuple[str, float, int, float]], *, per_size: bool = False,
             share: Callable[[int], float] | None = None) -> Link:
    """The link that best fits measured (kind, bytes, ranks, seconds) points of one or both kinds.

    Least squares in relative error on t = share(ranks) x (fraction x bytes / bandwidth + hops x latency):
    one bandwidth for every size, or with ``per_size`` one per distinct size (the link's ``curve``). ``share``
    is a host's slow-down when ranks outnumber its cores (default 1: GPUs, one rank each); latency >= 0.
    """
    import numpy as np

    sizes = sorted({float(b) for _, b, _, _ in points}) if per_size else [None]
    rows = []
    for kind, nbytes, ranks, seconds in points:
        frac, hops = _shape(kind, ranks)
        row = np.zeros(len(sizes) + 1)
        row[sizes.index(float(nbytes)) if per_size else 0] = frac * nbytes
        row[-1] = hops
        rows.append(row * (share(ranks) if share else 1.0) / seconds)
    a = np.array(rows)
    free = list(range(a.shape[1]))
    while True:  # non-negative least squares: an unknown that comes out negative is held at zero
        x = np.zeros(a.shape[1])
        x[free] = np.linalg.lstsq(a[:, free], np.ones(len(a)), rcond=None)[0]
        if x.min() >= 0:
            break
        free.remove(int(x.argmin()))
    # a size whose time the latency explains alone has no bandwidth of its own: the curve starts above it
    curve = [(size, float(1 / v / 1e9)) for size, v in zip(sizes, x[:-1]) if v > 0]
    if not curve:
        raise ValueError("the points do not determine a bandwidth: every time is explained by latency")
    gb = [g for _, g in curve]
    return Link("fitted", max(gb), float(x[-1]) * 1e6, tuple(curve) if per_size else ())


def _words(line: str) -> list[str]:
    """A log line's words without srun's ``--label`` prefix ("0:") or the comment mark of nccl-tests' header."""
    words = line.split()
    if words and words[0].endswith(":") and words[0][:-1].isdigit():
        words = words[1:]
    return words[1:] if words[:1] == ["#"] else words


def read_nccl_tests(path: str | Path) -> tuple[tuple[float, float], ...]:
    """The (bytes, bus GB/s) curve in an ``nccl-tests`` log (e.g. ``all_reduce_perf -b 1M -e 1G -f 2``): its
    out-of-place busbw column by size, sizes measured more than once averaged; other lines (NCCL INFO, the
    summary) are skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read the nccl-tests log {path}: {getattr(err, 'strerror', None) or err}") from None
    column, by_size = None, {}
    for words in map(_words, lines):
        if "size" in words and "busbw" in words:
            column = words.index("busbw") - words.index("size")  # the first busbw: out-of-place
        elif column is not None and len(words) > column and words[0].isdigit():
            try:
                size, busbw = float(words[0]), float(words[column])
            except ValueError:
                continue
            if size > 0 and busbw > 0:
                by_size.setdefault(size, []).append(busbw)
    if not by_size:
        raise CliError(f"{path} holds no nccl-tests results (a 'size ... busbw' header, then rows of numbers)")
    return tuple((size, sum(v) / len(v)) for size, v in sorted(by_size.items()))
