"""Ring-collective times: a bandwidth term that grows with bytes and a latency term that grows with ranks.

A ring all-reduce moves 2(N-1)/N of the buffer through every GPU's link in 2(N-1) hops; a ring all-gather (or its
backward, a reduce-scatter) moves (N-1)/N of the gathered result in N-1 hops. Data-parallel frameworks split the
gradient into buckets whose rings pipeline, so a preset link counts one latency chain per collective, not per
bucket. A measured curve (``nccl-tests``' bus bandwidth, which divides the same 2(N-1)/N or (N-1)/N of the bytes
by the measured time) is read at the collective's message size, a DDP bucket for the gradient, and already holds
the latency of every message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from catlip.errors import CliError

from .devices import Curve, Link, interpolate

KINDS = ("all_reduce", "all_gather")
# nccl-tests' reduction column: "none" for collectives that only move data (all_gather, broadcast, ...)
NO_REDUCTION = "none"


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


def fit_link(points: list[tuple[str, float, int, float]], *, per_size: bool = False,
             share: Callable[[int], float] | None = None) -> Link:
    """The link that best fits measured (kind, bytes, ranks, seconds) points of one or both collectives.

    Least squares in relative error on t = share(ranks) x (fraction x bytes / bandwidth [+ hops x latency]): one
    bandwidth and a latency >= 0 for every size and collective, or with ``per_size`` a bus-bandwidth curve per
    collective (one bandwidth per size, the latency inside it, as nccl-tests reports). ``share`` is a host's
    slow-down when ranks outnumber its cores (default 1: GPUs, one rank each).
    """
    import numpy as np

    columns = sorted({(k, float(b)) for k, b, _, _ in points}) if per_size else [None]
    rows = []
    for kind, nbytes, ranks, seconds in points:
        frac, hops = _shape(kind, ranks)
        row = np.zeros(len(columns) + (0 if per_size else 1))
        row[columns.index((kind, float(nbytes))) if per_size else 0] = frac * nbytes
        if not per_size:
            row[-1] = hops
        rows.append(row * (share(ranks) if share else 1.0) / seconds)
    a = np.array(rows)
    x = np.linalg.lstsq(a, np.ones(len(a)), rcond=None)[0]
    if not per_size and x[-1] < 0:  # latency cannot be negative: refit the bandwidth alone
        x = np.array([np.linalg.lstsq(a[:, :1], np.ones(len(a)), rcond=None)[0][0], 0.0])
    if per_size:
        curves = {}
        for (kind, size), v in zip(columns, x):
            curves.setdefault(kind, []).append((size, float(1 / v / 1e9)))
        return Link("fitted", max(g for c in curves.values() for _, g in c), 0.0,
                    tuple((k, tuple(c)) for k, c in sorted(curves.items())))
    return Link("fitted", float(1 / x[0] / 1e9), float(x[1]) * 1e6)


def _words(line: str) -> list[str]:
    """A log line's words without srun's ``--label`` prefix ("0:") or the comment mark of nccl-tests' header."""
    words = line.split()
    if words and words[0].endswith(":") and words[0][:-1].isdigit():
        words = words[1:]
    return words[1:] if words[:1] == ["#"] else words


@dataclass(frozen=True)
class NcclLog:
    """What an nccl-tests log measured: the bus-bandwidth curve, and on how many ranks (None: not told)."""

    curve: Curve
    ranks: int | None


# busbw / algbw of each collective: 2(N-1)/N in [1, 2) for all-reduce, (N-1)/N in [1/2, 1) for all-gather
RATIO = {"all_reduce": 2.0, "all_gather": 1.0}
TYPE_BYTES = {"int8": 1, "uint8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "half": 2, "bfloat16": 2, "int32": 4,
              "uint32": 4, "float": 4, "int64": 8, "uint64": 8, "double": 8}
_GARBLED_SIZE = re.compile(r"^\d[\d,.]*[A-Za-z]?$")  # "16,777,216", "1677721b": a size, but not a number


def _read(path: str | Path) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"cannot read the nccl-tests log {path}: {getattr(err, 'strerror', None) or err}") from None


def _rank_lines(lines: list[str]) -> list[int]:
    """Ranks of each run in the log, from its "#  Rank n ..." lines (a new run at every "Rank 0")."""
    runs: list[int] = []
    for words in map(_words, lines):
        if words[:1] == ["Rank"] and len(words) > 1 and words[1].isdigit():
            if int(words[1]) == 0 or not runs:
                runs.append(0)
            runs[-1] += 1
    return runs


def _rows(path: str | Path, lines: list[str]):
    """(line number, {column: text}) of every result row under a "size ... busbw" header (the first time, algbw
    and busbw columns: the out-of-place ones)."""
    header = None
    for number, words in enumerate(map(_words, lines), 1):
        if "size" in words and "busbw" in words:
            header = words[words.index("size"):]
        elif header is not None and words and not words[0].isdigit() and _GARBLED_SIZE.match(words[0]):
            raise CliError(f"{path}, line {number}: size {words[0]!r} is not a whole number of bytes")
        elif header is not None and words and words[0].isdigit():
            if len(words) < len(header):
                raise CliError(f"{path}, line {number}: a row with {len(words)} of the header's {len(header)} "
                               "columns (a log cut short?); remove it or rerun the test")
            yield number, {col: words[header.index(col)] for col in dict.fromkeys(header)}


def _number(path, number: int, row: dict, col: str) -> float:
    try:
        value = float(row.get(col, "0"))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise CliError(f"{path}, line {number}: {col} {row.get(col)!r} is not a bandwidth")
    return value


def _check_row(path, number: int, row: dict, kind: str) -> None:
    """The row belongs to ``kind``: its reduction, its root and its busbw / algbw say which collective ran."""
    if "redop" in row:
        _check_kind(path, number, row["redop"], kind)
    if row.get("root", "-1") != "-1":
        raise CliError(f"{path}, line {number}: root {row['root']}, a rooted collective (broadcast_perf, "
                       "reduce_perf?); --nccl-tests takes all_reduce_perf's log, --nccl-tests-gather all_gather_perf's")
    busbw, algbw = _number(path, number, row, "busbw"), _number(path, number, row, "algbw")
    if algbw >= 1.0 and not RATIO[kind] / 2 - 0.01 <= busbw / algbw <= RATIO[kind] + 0.01:
        raise CliError(f"{path}, line {number}: busbw / algbw = {busbw / algbw:.3f}, not an {kind.replace('_', '-')}'s "
                       f"{'2' if kind == 'all_reduce' else ''}(N-1)/N (reduce_scatter_perf's log?)")


def _ranks_from(row: dict, kind: str) -> int | None:
    """The rank count one row implies: all-gather's size / (count x type), else busbw / algbw solved for N where
    the two-decimal rounding of both leaves one whole N."""
    if kind == "all_gather" and row.get("type") in TYPE_BYTES and row.get("count", "").isdigit():
        per_rank = int(row["count"]) * TYPE_BYTES[row["type"]]
        if per_rank and int(row["size"]) % per_rank == 0:
            return int(row["size"]) // per_rank
    busbw, algbw, full = float(row["busbw"]), float(row.get("algbw", "0")), RATIO[kind]
    if algbw <= 0.005:
        return None
    low, high = (busbw - 0.005) / (algbw + 0.005), (busbw + 0.005) / (algbw - 0.005)
    n_low = full / (full - low) if low < full else math.inf
    n_high = full / (full - high) if high < full else math.inf
    whole = math.floor(n_high) if math.isfinite(n_high) else None
    return whole if whole is not None and whole >= max(2, math.ceil(n_low)) and whole == math.ceil(n_low) else None


def read_nccl_tests(path: str | Path, kind: str = "all_reduce") -> NcclLog:
    """The (bytes, bus GB/s) curve in an ``nccl-tests`` log of ``kind`` (all_reduce_perf or all_gather_perf,
    e.g. ``-b 1M -e 1G -f 2``): its out-of-place busbw column by size, sizes measured more than once averaged,
    rows of 0.00 GB/s (the smallest messages, rounded) left out. Other lines (NCCL INFO, the summary) are
    skipped; a row cut short or garbled, a log of another collective or runs on different rank counts are
    refused."""
    lines = _read(path)
    by_size, largest = {}, None
    for number, row in _rows(path, lines):
        _check_row(path, number, row, kind)
        size, busbw = float(row["size"]), _number(path, number, row, "busbw")
        if size > 0 and busbw > 0:
            by_size.setdefault(size, []).append(busbw)
            largest = row if largest is None or size >= float(largest["size"]) else largest
    if not by_size:
        raise CliError(f"{path} holds no nccl-tests results (a 'size ... busbw' header, then rows of numbers)")
    runs = _rank_lines(lines)
    if len(set(runs)) > 1:
        raise CliError(f"{path} holds runs on {' and '.join(map(str, sorted(set(runs))))} ranks; give one run, on "
                       "the GPU count you plan")
    curve = tuple((size, sum(v) / len(v)) for size, v in sorted(by_size.items()))
    return NcclLog(curve, runs[0] if runs else _ranks_from(largest, kind))


def _check_kind(path, number: int, redop: str | None, kind: str) -> None:
    if redop is None or (redop == NO_REDUCTION) == (kind == "all_gather"):
        return
    what = "only moves data (all_gather_perf?)" if redop == NO_REDUCTION else "reduces (all_reduce_perf?)"
    raise CliError(f"{path}, line {number}: reduction {redop!r}, a collective that {what}; --nccl-tests takes "
                   "all_reduce_perf's log, --nccl-tests-gather all_gather_perf's")
