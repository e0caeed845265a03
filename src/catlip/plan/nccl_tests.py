"""Reading an ``nccl-tests`` log (all_reduce_perf, all_gather_perf): the bus bandwidth by message size that
``catlip plan --nccl-tests`` costs collectives with, and the rank count it was measured on.

The format is the text nccl-tests prints: a header line naming the columns (``size count type redop root time
algbw busbw #wrong`` and the same for in-place), one row per message size, comment lines around them. Every row is
checked against the collective it is given as, so a log of another collective, or a damaged one, is one clear line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from catlip.errors import CliError

from .devices import Curve

# nccl-tests' reduction column: "none" for collectives that only move data (all_gather, broadcast, ...)
NO_REDUCTION = "none"


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


def read(path: str | Path, kind: str = "all_reduce") -> NcclLog:
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
