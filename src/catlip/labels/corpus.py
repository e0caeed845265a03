"""Stream captions from plain text, `captions.token.txt`, JSONL, CSV/TSV and webdataset tar shards.

`iter_captions` yields one `list[str]` per sample (a sample may carry several captions). Bad lines or members
(invalid UTF-8, malformed JSON/CSV, no caption field) are reported as `file:line`, skipped and counted in a
`ReadStats`; only a missing file raises (`DataError`). No torch: tar shards are read with `tarfile`.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from catlip.errors import DataError

log = logging.getLogger("catlip.labels")

CAPTION_FIELDS = ("captions", "caption", "text", "txt", "title")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_MAX_MESSAGES = 20
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class ReadStats:
    """Counts of what was read and skipped; `messages` keeps the first few skip reasons (file:line: why)."""

    samples: int = 0
    captions: int = 0
    skipped: int = 0
    messages: list[str] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        self.skipped += 1
        if len(self.messages) < _MAX_MESSAGES:
            self.messages.append(f"{where}: {why}")
            log.warning("skipped %s: %s", where, why)

    def merge(self, other: "ReadStats") -> None:
        self.samples += other.samples
        self.captions += other.captions
        self.skipped += other.skipped
        self.messages.extend(other.messages[: max(0, _MAX_MESSAGES - len(self.messages))])


def _valid_utf8(text: str) -> bool:
    # Files are opened with errors="surrogateescape": undecodable bytes become lone surrogates, which fail here.
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _captions_of(obj, column: str | None) -> list[str] | None:
    """Caption strings of a JSON object / CSV row, or None when it has none."""
    if not isinstance(obj, dict):
        return [obj] if isinstance(obj, str) else None
    names = (column,) if column else CAPTION_FIELDS
    for name in names:
        value = obj.get(name)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
    return None


def _kind(path: Path, column: str | None) -> str:
    name = path.name.lower()
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv" if column else "text"
    return "text"


def iter_captions(path: str | Path, *, column: str | None = None, stats: ReadStats | None = None) -> Iterator[list[str]]:
    """Captions per sample from one file; the format follows the extension (.tar/.jsonl/.csv/.tsv/other=text)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"caption file not found: {path}")
    stats = stats if stats is not None else ReadStats()
    reader = {"tar": _iter_tar, "jsonl": _iter_jsonl, "csv": _iter_table, "tsv": _iter_table, "text": _iter_text}
    for captions in reader[_kind(path, column)](path, column, stats):
        stats.samples += 1
        stats.captions += len(captions)
        yield captions


def _open_text(path: Path):
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


def _iter_text(path: Path, column, stats: ReadStats):
    """One caption per line; `image#n<TAB>caption` lines (captions.token.txt) group by image."""
    group_id, group = None, []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if not _valid_utf8(line):
                stats.skip(f"{path}:{lineno}", "invalid UTF-8")
                continue
            sample_id, caption = None, line
            head, tab, rest = line.partition("\t")
            if tab:
                sample_id, caption = head.rsplit("#", 1)[0], rest
            if group and sample_id != group_id:
                yield group
                group = []
            group_id = sample_id
            group.append(caption)
            if sample_id is None:
                yield group
                group = []
    if group:
        yield group


def _iter_jsonl(path: Path, column, stats: ReadStats):
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            if not _valid_utf8(line):
                stats.skip(where, "invalid UTF-8")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                stats.skip(where, f"malformed JSON ({err.msg})")
                continue
            caps = _captions_of(obj, column)
            if caps is None:
                stats.skip(where, f"no caption field ({column or '/'.join(CAPTION_FIELDS)})")
                continue
            yield caps


def _iter_table(path: Path, column, stats: ReadStats):
    delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = next(reader)
        except (StopIteration, csv.Error):
            return
        names = [column] if column else list(CAPTION_FIELDS)
        col = next((header.index(n) for n in names if n in header), None)
        if col is None:
            raise DataError(f"{path}: no caption column (wanted {'/'.join(names)}; header has {header[:10]})")
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                stats.skip(f"{path}:{reader.line_num}", f"malformed CSV ({err})")
                continue
            where = f"{path}:{reader.line_num}"
            if not row:
                continue
            if len(row) != len(header) or not _valid_utf8(row[col]):
                stats.skip(where, "invalid UTF-8" if len(row) == len(header) else
                           f"expected {len(header)} fields, got {len(row)}")
                continue
            yield [row[col]]


def _member_captions(name: str, data: bytes, column) -> list[str]:
    text = data.decode("utf-8")  # strict: invalid UTF-8 raises UnicodeDecodeError
    if name.endswith(".json"):
        caps = _captions_of(json.loads(text), column)
        if caps is None:
            raise ValueError("no caption field")
        return caps
    return [text.strip()]


def _has_end_marker(path: Path) -> bool:
    """tarfile stops quietly at a truncated header; an intact plain tar ends in two zero blocks."""
    if not path.name.lower().endswith(".tar"):
        return True  # compressed: the decompressor reports truncation itself
    size = path.stat().st_size
    if size < 1024:
        return False
    with open(path, "rb") as fh:
        fh.seek(size - 1024)
        return fh.read(1024) == bytes(1024)


def _iter_tar(path: Path, column, stats: ReadStats):
    """webdataset shards: members `<key>.<ext>` grouped by key; `.json` captions win over `.txt` when both."""
    key, found = None, {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                stem, dot, ext = base.partition(".")
                mkey = member.name[: len(member.name) - len(base)] + stem
                if mkey != key:
                    caps = found.get("json") or found.get("txt")
                    if caps:
                        yield caps
                    key, found = mkey, {}
                if ext not in ("json", "txt"):
                    continue
                data = tar.extractfile(member).read()
                try:
                    found[ext] = _member_captions(base, data, column)
                except (UnicodeDecodeError, ValueError) as err:
                    why = "invalid UTF-8" if isinstance(err, UnicodeDecodeError) else f"bad {ext} ({err})"
                    stats.skip(f"{path}:{member.name}", why)
    except (tarfile.TarError, OSError, EOFError) as err:
        stats.skip(str(path), f"unreadable tar ({err}); samples before the damage were kept")
    else:
        if not _has_end_marker(path):
            stats.skip(str(path), "truncated tar (no end-of-archive marker); samples before the damage were kept")
    caps = found.get("json") or found.get("txt")
    if caps:
        yield caps


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files from paths, directories (their files, sorted), globs and brace patterns ("shard-{000..005}.tar")."""
    from braceexpand import braceexpand  # a webdataset dependency; the shard-pattern convention users know

    files: list[str] = []
    for spec in inputs:
        for pattern in braceexpand(spec):
            if os.path.isdir(pattern):
                found = sorted(str(p) for p in Path(pattern).iterdir() if p.is_file() and not p.name.startswith("."))
            elif any(ch in pattern for ch in "*?["):
                found = sorted(glob.glob(pattern))
            else:
                found = [pattern] if os.path.isfile(pattern) else []
            if not found:
                raise DataError(f"input {pattern!r} matches no file")
            files.extend(found)
    return list(dict.fromkeys(files))
