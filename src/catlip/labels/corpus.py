"""Stream captions from plain text, `captions.token.txt`, JSONL, CSV/TSV and webdataset tar shards.

`iter_captions` yields one `list[str]` per sample (a sample may carry several captions). Bad lines or members
(invalid UTF-8, malformed JSON/CSV, an unterminated quote, no caption field) are reported as `file:line`, skipped
and counted in a `ReadStats`; only a missing file (or a folder or `synthetic`: not a file, see
`catlip.data.specs`) raises (`DataError`). No torch.

Files are listed and read by the one reader of catlip's data formats, `catlip.data.formats`, which also holds
**the caption rule** shared with the training loader (`catlip.data.sources`) and the evaluation sets, so the
vocabulary stage and training read the same captions from the same data. Its names (`caption_fields`,
`captions_of`, `member_captions`, `read_table`, `expand_inputs`, ...) are re-exported here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from catlip.data.formats import (  # noqa: F401 - re-exported: the caption rule and the file listing live there
    AUTO_COLUMNS,
    CAPTION_FIELDS,
    MAX_QUOTED_LINES,
    TarScan,
    caption_column_index,
    caption_fields,
    caption_rule_text,
    captions_of,
    clean_captions,
    default_shard_cache,
    expand_inputs,
    file_kind,
    iter_text_captions,
    local_shard,
    member_captions,
    no_caption_reason,
    read_manifest,
    read_table,
    valid_utf8,
)
from catlip.data.specs import CAPTIONS, IMAGE, JSON, MANIFEST, SHARDS, DataSpec, resolve
from catlip.errors import DataError

log = logging.getLogger("catlip.labels")

_MAX_MESSAGES = 20


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


# ---------------------------------------------------------------------- readers


CAPTION_KINDS = (CAPTIONS, MANIFEST, SHARDS, JSON, IMAGE)  # any file: tar shards, manifests, else caption text


def iter_captions(path: str | Path, *, column: str | None = None, stats: ReadStats | None = None) -> Iterator[list[str]]:
    """Captions per sample from one file (or the shards of a pattern); the format follows the extension
    (.tar/.jsonl/.csv/.tsv/other=text)."""
    found = resolve(path, "caption input", CAPTION_KINDS)
    stats = stats if stats is not None else ReadStats()
    reader = {"tar": _iter_tar, "jsonl": _iter_jsonl, "csv": _iter_table, "tsv": _iter_table, "text": _iter_text}
    for file in _files(found):
        for captions in reader[file_kind(file, column)](file, column, stats):
            stats.samples += 1
            stats.captions += len(captions)
            yield captions


def _files(found: DataSpec) -> list[Path]:
    if found.kind == SHARDS:  # a remote shard is read from the shard cache
        return [local_shard(url, default_shard_cache()) for url in found.paths]
    return [found.path]


def _iter_text(path: Path, column, stats: ReadStats):
    yield from iter_text_captions(path, lambda lineno, why: stats.skip(f"{path}:{lineno}", why))


def _iter_jsonl(path: Path, column, stats: ReadStats):
    with read_manifest(path, lambda lineno, why: stats.skip(f"{path}:{lineno}", why), kind="jsonl") as manifest:
        for lineno, obj in manifest.records:
            caps = captions_of(obj, column)
            if caps is None:
                stats.skip(f"{path}:{lineno}", no_caption_reason(obj, column))
                continue
            yield caps


def _iter_table(path: Path, column, stats: ReadStats):
    with read_manifest(path, lambda lineno, why: stats.skip(f"{path}:{lineno}", why)) as manifest:
        header = manifest.header
        if header is None:
            return
        col = caption_column_index(header, column)
        if col is None:
            raise DataError(f"{path}: no caption column (tried {', '.join(caption_fields(column))}; "
                            f"header: {', '.join(header[:10])})")
        name = header[col]
        for lineno, row in manifest.records:
            where = f"{path}:{lineno}"
            if not valid_utf8(row[name]):
                stats.skip(where, "invalid UTF-8")
                continue
            caps = clean_captions([row[name]])
            if not caps:
                stats.skip(where, f"blank caption (column {name!r})")
                continue
            yield caps


def _iter_tar(path: Path, column, stats: ReadStats):
    """webdataset shards: samples by key (`catlip.data.formats.TarScan`); captions by `member_captions`.

    The samples the scan skips (a duplicate key: the first sample is kept; a duplicate member; a sample next to
    damaged tar data) are skipped and counted here too, so the vocabulary counts the captions training reads.
    """
    scan = TarScan(path, read=lambda ext: ext in ("json", "txt"))
    for sample in scan:
        caps, problems = member_captions(sample.data, column)
        for ext, why in problems:
            stats.skip(f"{path}:{sample.members[ext][0]}", why)
        if not caps:
            stats.no_caption(f"{path}:{sample.key} (members: {', '.join(sample.members) or 'none'})")
            continue
        yield caps
    for _, key, why in scan.skips:
        stats.skip(f"{path}:{key}", why)
    if scan.damage is not None:
        kind, err = scan.damage
        what = "unreadable tar" if kind == "unreadable" else "truncated tar"
        stats.skip(str(path), f"{what} ({err}); samples before the damage were kept")
