"""Stream captions from plain text, `captions.token.txt`, JSONL, CSV/TSV and webdataset tar shards.

`iter_captions` yields one `list[str]` per sample (a sample may carry several captions). Bad lines or members
(invalid UTF-8, malformed JSON/CSV, an unterminated quote, no caption field) are reported as `file:line`, skipped
and counted in a `ReadStats`; only a missing file raises (`DataError`). No torch: tar shards are read with `tarfile`.

**The caption rule** (shared with the training loader, `catlip.data.sources`, so the vocabulary stage and training
read the same captions from the same data):

- Field / column names are tried in the order `caption_fields(column)`: with no column (or `caption`, the
  config default `data.caption_column`, or `auto`) `captions, caption, text, txt, title`; a column named in
  that list is tried first and the rest follow; any other name is used alone. open_clip's CSV convention
  (`filepath,title`) therefore needs no caption setting.
- JSON objects (JSONL lines, `.json` members of shards): the first of those fields holding a string or a list of
  strings that are not all blank.
- CSV/TSV: the first of those columns present in the header; a row with a blank caption is skipped.
- Webdataset samples: the `.json` member's captions when it has any, otherwise the text members (`.txt`, or
  any other caption extension the loader is given), one caption per line.
- Captions are stripped and blank ones dropped (`clean_captions`).

CSV/TSV files are split into records by `read_table`: a quoted field may span lines (multi-line captions), but a
quote that is not closed (by the end of the file, within `MAX_QUOTED_LINES` lines, or before a stray quote) only
costs its own line: that line is reported with file:line and skipped, and reading resumes on the next line.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import sys
import tarfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from catlip.errors import DataError

log = logging.getLogger("catlip.labels")

CAPTION_FIELDS = ("captions", "caption", "text", "txt", "title")  # the automatic order (see the module docstring)
AUTO_COLUMNS = ("", "auto", "caption")  # column settings that mean "the automatic order"
MAX_QUOTED_LINES = 100  # a quoted CSV/TSV field running over more lines than this is taken as an unterminated quote
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_MAX_MESSAGES = 20
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class ReadStats:
    """Counts of what was read and skipped; `messages` keeps the first few skip reasons (file:line: why).

    `uncaptioned` counts samples (tar keys) that had no caption at all, without counting them as skipped lines;
    `uncaptioned_example` names the first one.
    """

    samples: int = 0
    captions: int = 0
    skipped: int = 0
    messages: list[str] = field(default_factory=list)
    uncaptioned: int = 0
    uncaptioned_example: str = ""

    def skip(self, where: str, why: str, *, quiet: bool = False) -> None:
        self.skipped += 1
        if len(self.messages) < _MAX_MESSAGES:
            self.messages.append(f"{where}: {why}")
            if not quiet:
                log.warning("skipped %s: %s", where, why)

    def no_caption(self, where: str) -> None:
        self.uncaptioned += 1
        self.uncaptioned_example = self.uncaptioned_example or where

    def merge(self, other: "ReadStats") -> None:
        self.samples += other.samples
        self.captions += other.captions
        self.skipped += other.skipped
        self.messages.extend(other.messages[: max(0, _MAX_MESSAGES - len(self.messages))])
        self.uncaptioned += other.uncaptioned
        self.uncaptioned_example = self.uncaptioned_example or other.uncaptioned_example


def _valid_utf8(text: str) -> bool:
    # Files are opened with errors="surrogateescape": undecodable bytes become lone surrogates, which fail here.
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


# ---------------------------------------------------------------------- the caption rule (shared with data/)


def caption_fields(column: str | None = None) -> tuple[str, ...]:
    """Field / column names tried for a caption, in order (the rule of the module docstring)."""
    if column is None or column in AUTO_COLUMNS:
        return CAPTION_FIELDS
    if column in CAPTION_FIELDS:
        return (column,) + tuple(f for f in CAPTION_FIELDS if f != column)
    return (column,)


def caption_rule_text(column: str | None = None) -> str:
    """One line saying where captions are looked for in caption files (for error messages)."""
    fields = "/".join(caption_fields(column))
    return (f"one caption per line of text files; CSV/TSV column {fields}; JSONL field {fields}; "
            f"tar shards: .json member field {fields}, else .txt member lines")


def clean_captions(values: Iterable[str]) -> list[str]:
    """Stripped captions, blanks dropped (repeats are kept: a caption a dataset gives twice counts twice)."""
    return [v for v in (value.strip() for value in values) if v]


def captions_of(obj, column: str | None = None) -> list[str] | None:
    """Captions of a JSON value (object or bare string) by the caption rule, or None when it has none."""
    if isinstance(obj, str):
        return clean_captions([obj]) or None
    if not isinstance(obj, dict):
        return None
    for name in caption_fields(column):
        value = obj.get(name)
        if isinstance(value, str):
            caps = clean_captions([value])
        elif isinstance(value, list):
            caps = clean_captions(v for v in value if isinstance(v, str))
        else:
            continue
        if caps:
            return caps
    return None


def no_caption_reason(obj, column: str | None = None) -> str:
    """Why `captions_of(obj, column)` found nothing, naming the fields tried and those the object has."""
    tried = "/".join(caption_fields(column))
    if not isinstance(obj, dict):
        return f"no caption field (tried {tried}; the value is a JSON {type(obj).__name__}, not an object)"
    keys = ", ".join(list(obj)[:10]) or "none"
    return f"no caption field (tried {tried}; fields present: {keys})"


def caption_column_index(header: list[str], column: str | None = None) -> int | None:
    """Index of the caption column of a CSV/TSV header by the caption rule, or None."""
    return next((header.index(name) for name in caption_fields(column) if name in header), None)


def member_captions(members: dict[str, bytes], column: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Captions of one webdataset sample from its caption members (extension -> bytes), and the problems met.

    The `.json` member's captions (fields by `caption_fields(column)`) win when it has any; otherwise the text
    members (`.txt`, or any other extension given), one caption per line, in the order given. Problems are
    `(extension, why)`: invalid UTF-8 and malformed JSON always; a `.json` without a caption field only when
    the sample ends up with no caption at all.
    """
    problems: list[tuple[str, str]] = []
    json_caps: list[str] | None = None
    json_missing = None
    texts: list[str] = []
    for ext, raw in members.items():
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            problems.append((ext, "invalid UTF-8"))
            continue
        if ext == "json" or ext.endswith(".json"):
            try:
                obj = json.loads(text)
            except ValueError as err:
                problems.append((ext, f"malformed JSON ({getattr(err, 'msg', err)})"))
                continue
            caps = captions_of(obj, column)
            if caps:
                json_caps = (json_caps or []) + caps
            else:
                json_missing = (ext, no_caption_reason(obj, column))
        else:
            texts.extend(text.splitlines())
    if json_caps:
        return clean_captions(json_caps), problems
    caps = clean_captions(texts)
    if not caps and json_missing is not None:
        problems.append(json_missing)
    return caps, problems


def read_table(lines: Iterable[str], delimiter: str, on_bad: Callable[[int, str], None]
               ) -> Iterator[tuple[int, list[str]]]:
    """CSV/TSV records as `(first line number, fields)`; the header is the first record. Blank lines are ignored.

    A quoted field may run over several lines. A record that cannot be closed (end of file, more than
    `MAX_QUOTED_LINES` lines, or text after a closing quote: an unterminated quote), or whose number of fields
    differs from the header's, is reported with `on_bad(line number, why)`; only its first line is dropped and
    reading resumes on the next line, so one stray quote never swallows the rows after it.
    """
    source = enumerate(lines, 1)
    pending: deque = deque()  # lines read ahead by a failed record, to be read again

    def pull():
        return pending.popleft() if pending else next(source, None)

    expected = None
    while True:
        item = pull()
        if item is None:
            return
        lineno, line = item
        if not line.strip():
            continue
        used = [item]
        error = None
        if '"' not in line:  # no quoting: the common, fast case
            row = line.rstrip("\r\n").split(delimiter)
        else:
            def feed(first=line):
                yield first
                while len(used) < MAX_QUOTED_LINES:
                    nxt = pull()
                    if nxt is None:
                        return
                    used.append(nxt)
                    yield nxt[1]

            try:
                row = next(csv.reader(feed(), delimiter=delimiter, strict=True))
            except (csv.Error, StopIteration) as err:
                row, error = None, err
        if row is None:
            last = used[-1][0]
            if len(used) >= MAX_QUOTED_LINES:
                why = f"unterminated quote (the quoted field opened on this line is still open {len(used)} lines later)"
            elif "unexpected end of data" in str(error):
                why = "unterminated quote (the quoted field opened on this line is still open at the end of the file)"
            elif len(used) > 1:
                why = (f"unterminated quote (the quoted field opened on this line runs to line {last}, where a quote "
                       f"is followed by text: {error})")
            else:
                why = f"malformed CSV ({error})"
            if why.startswith("unterminated"):
                why += "; line skipped, reading resumes on the next line"
            on_bad(lineno, why)
            pending.extendleft(reversed(used[1:]))
            continue
        if expected is None:
            expected = len(row)
        elif len(row) != expected:
            span = f" in a quoted field running to line {used[-1][0]} (unterminated quote?)" if len(used) > 1 else ""
            on_bad(lineno, f"expected {expected} fields, got {len(row)}{span}")
            pending.extendleft(reversed(used[1:]))
            continue
        yield lineno, row


# ---------------------------------------------------------------------- readers


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
            caps = captions_of(obj, column)
            if caps is None:
                stats.skip(where, no_caption_reason(obj, column))
                continue
            yield caps


def _iter_table(path: Path, column, stats: ReadStats):
    delimiter = "\t" if path.name.lower().endswith(".tsv") else ","
    with _open_text(path) as fh:
        records = read_table(fh, delimiter, lambda lineno, why: stats.skip(f"{path}:{lineno}", why))
        first = next(records, None)
        if first is None:
            return
        header = [h.lstrip("\ufeff") for h in first[1]]
        col = caption_column_index(header, column)
        if col is None:
            raise DataError(f"{path}: no caption column (tried {', '.join(caption_fields(column))}; "
                            f"header: {', '.join(header[:10])})")
        for lineno, row in records:
            where = f"{path}:{lineno}"
            if not _valid_utf8(row[col]):
                stats.skip(where, "invalid UTF-8")
                continue
            caps = clean_captions([row[col]])
            if not caps:
                stats.skip(where, f"blank caption (column {header[col]!r})")
                continue
            yield caps


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
    """webdataset shards: members `<key>.<ext>` grouped by key; captions by `member_captions` (.json wins)."""
    key, found, exts = None, {}, []  # found: ext -> (member name, bytes); exts: every member extension of key

    def flush():
        caps, problems = member_captions({ext: data for ext, (_, data) in found.items()}, column)
        for ext, why in problems:
            stats.skip(f"{path}:{found[ext][0]}", why)
        if key is not None and not caps:
            stats.no_caption(f"{path}:{key} (members: {', '.join(exts) or 'none'})")
        return caps

    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                stem, dot, ext = base.partition(".")
                mkey = member.name[: len(member.name) - len(base)] + stem
                if mkey != key:
                    caps = flush()
                    if caps:
                        yield caps
                    key, found, exts = mkey, {}, []
                exts.append(ext)
                if ext not in ("json", "txt"):
                    continue
                found[ext] = (member.name, tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError) as err:
        stats.skip(str(path), f"unreadable tar ({err}); samples before the damage were kept")
    else:
        if not _has_end_marker(path):
            stats.skip(str(path), "truncated tar (no end-of-archive marker); samples before the damage were kept")
    caps = flush()
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
