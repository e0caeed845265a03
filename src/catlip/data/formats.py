"""The one reader of catlip's data formats: listing files, reading records, finding captions, classes and labels.

Pure Python (no torch import; webdataset is imported only to fetch a remote shard). Its consumers read their
data through this module and nothing else: the caption stream of vocabularies and ``catlip labels``
(``catlip.labels.corpus``), the random-access training sources (``catlip.data.sources``), the labelled
evaluation sets (``catlip.evaluate.common.datasets``), tagging and dense evaluation. Which kind of data a spec names
(shards, manifest, folder, caption file, synthetic ...) is decided once, by ``catlip.data.specs``, from the
suffixes and rules defined here. Adding a data format means touching this module (and its test,
``tests/unit/test_formats.py``) only; a new *kind* of spec is also one row of ``catlip.data.specs.KINDS``.

**Formats**

- *Webdataset tar shards*: local paths, brace patterns (``shard-{000..005}.tar``, several patterns joined with
  ``::``; webdataset's ``expand_urls`` rule) and remote URLs (anything ``webdataset.gopen`` opens: ``http(s)://``,
  ``pipe:`` ...), which are first copied into a local cache (``local_shard``) because random access needs a
  seekable file. Members ``<key>.<ext>`` are grouped by key (the path up to the basename's first dot; extensions
  lower-cased; over the whole shard, in the order keys first appear). ``TarScan`` yields each sample's members
  with their offsets (headers only: payloads are skipped with seek) and, on request, their bytes; a shard cut
  short keeps the samples before the damage and says so (``TarScan.damage``); a damaged header in the middle is
  stepped over to the next valid one. Samples that cannot be trusted (a key given to two samples: the first is
  kept; a member given twice in one sample; a sample next to damaged tar data) are skipped with a named reason
  (``TarScan.skips``). ``MemberReader`` reads a member back by offset (random access). Offsets only mean
  something in an uncompressed file, so ``.tar.gz``/``.tgz`` shards are decompressed once into the shard cache
  and read from there (``plain_tar``). File lists name each file once (``distinct_files``).
- *Manifests* (CSV / TSV / JSONL): ``read_manifest`` yields records with their line numbers; CSV/TSV records are
  split by ``read_table`` (multi-line quoted fields; an unterminated quote costs its own line only). A relative
  image path is looked up relative to the manifest's folder, then the working directory, absolute paths as
  given (``resolve_image``).
- *Image folders*: images with a sidecar ``<stem>.txt`` caption file (``caption_folder``, ``read_sidecar``), or
  one sub-folder per class (``class_folders``).
- *Plain caption text*: one caption per line; ``image#n<TAB>caption`` lines (``captions.token.txt``) grouped
  by image (``iter_text_captions``).

**The caption rule** (``caption_fields``, ``captions_of``, ``member_captions``):

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

**The label rule** (evaluation sets): a manifest's ``labels`` column (else ``label``) split on ``|``
(``label_column``, ``split_labels``); a shard's ``.cls`` member (class index or name) or ``.json`` member
``{"labels": [...]}`` (``cls_label``, ``json_labels``); a folder's class is its sub-folder's name.
"""

from __future__ import annotations

import csv
import glob
import hashlib
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

CAPTION_FIELDS = ("captions", "caption", "text", "txt", "title")  # the automatic order (see the module docstring)
AUTO_COLUMNS = ("", "auto", "caption")  # column settings that mean "the automatic order"
MAX_QUOTED_LINES = 100  # a quoted CSV/TSV field running over more lines than this is taken as an unterminated quote
LABEL_COLUMNS = ("labels", "label")  # evaluation manifests: the first present; values split on LABEL_SEPARATOR
LABEL_SEPARATOR = "|"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # image files in folders
SHARD_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # image members of evaluation shards
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
log = logging.getLogger("catlip.data")


def valid_utf8(text: str) -> bool:
    """False for text read with errors="surrogateescape" that held undecodable bytes (lone surrogates)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def repaired(text: str) -> str:
    """Text read with surrogateescape, undecodable bytes replaced by U+FFFD (what errors="replace" gives)."""
    if valid_utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def open_text(path: str | Path):
    """A text file as catlip reads every text format: UTF-8, undecodable bytes kept as surrogates, raw newlines."""
    return open(path, encoding="utf-8", errors="surrogateescape", newline="")


# ---------------------------------------------------------------------- the caption rule

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


# ---------------------------------------------------------------------- the label rule (evaluation sets)


def label_column(header: Iterable[str]) -> str | None:
    """The label column of an evaluation manifest header: ``labels``, else ``label``, else None."""
    header = list(header)
    return next((name for name in LABEL_COLUMNS if name in header), None)


def split_labels(value: str | None) -> list[str]:
    """Labels of one manifest cell: ``|``-separated, blanks dropped (each label kept as written)."""
    return [x for x in (value or "").split(LABEL_SEPARATOR) if x.strip()]


def json_labels(raw: bytes | str) -> list[str] | None:
    """The ``labels`` of a JSON object (a shard's ``.json`` member) as strings; None when it is not readable."""
    try:
        labels = json.loads(raw).get("labels", [])
    except (ValueError, AttributeError):
        return None
    return [str(x) for x in labels] if isinstance(labels, list) else None


def cls_label(raw: bytes) -> str:
    """A shard's ``.cls`` member: a class index or name."""
    return raw.decode("utf-8", "replace").strip()


# ---------------------------------------------------------------------- listing files


def file_kind(path: str | Path, column: str | None = None) -> str:
    """``tar``, ``jsonl``, ``csv``, ``tsv`` or ``text`` by the file name (a .tsv is caption text without a column)."""
    name = Path(path).name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv" if column else "text"
    return "text"


def is_manifest(spec: str) -> bool:
    return spec.lower().endswith(MANIFEST_SUFFIXES)


def is_shard_spec(spec: str) -> bool:
    """A tar path or pattern (``.tar``, ``.tar.gz``, ``.tgz``), or a remote URL (``scheme://``, ``pipe:``)."""
    return ".tar" in spec.lower() or spec.lower().endswith(".tgz") or "://" in spec or spec.lower().startswith("pipe:")


def expand_urls(pattern: str) -> list[str]:
    """Shard URLs of a pattern by webdataset's rule: split on ``::``, then brace-expand each part.

    (``webdataset.shardlists.expand_urls`` itself imports torch; this is its rule without that import.)
    """
    from braceexpand import braceexpand  # a webdataset dependency; the shard-pattern convention users know

    return [url for part in pattern.split("::") for url in braceexpand(part)]


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://") or url.startswith("pipe:")


def local_shard(url: str, cache_dir: str | Path) -> Path:
    """Local path for a shard URL; remote URLs are fetched once with ``webdataset.gopen`` into the cache."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    if not is_remote(url):
        return Path(url)
    import webdataset as wds

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / (hashlib.sha1(url.encode()).hexdigest()[:16] + "-" + os.path.basename(url.split("?")[0])[-60:])
    if not dest.exists():
        tmp = dest.with_suffix(f".tmp{os.getpid()}")
        try:
            with wds.gopen(url, "rb") as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(tmp, dest)
        except Exception as err:  # noqa: BLE001 - any transport failure means the shard cannot be read
            tmp.unlink(missing_ok=True)
            raise DataError(f"cannot fetch shard {url}: {err}") from None
    return dest


def default_shard_cache() -> Path:
    """``$CATLIP_SHARD_CACHE``, default the user cache's ``shards`` folder (``catlip.defaults.user_cache``)."""
    from catlip.defaults import user_cache

    return Path(os.environ.get("CATLIP_SHARD_CACHE") or user_cache("shards"))


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files from paths, directories (their files, sorted), globs and brace patterns ("shard-{000..005}.tar"),
    each file once (``distinct_files``)."""
    from braceexpand import braceexpand

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
    return distinct_files(files)


def distinct_files(files: Iterable[str]) -> list[str]:
    """Each file once, by resolved path, in the order first met; a warning names each repeat (a file listed twice
    would be counted twice, unlike in training, which reads a shard once)."""
    first: dict[str, str] = {}
    for name in files:
        real = os.path.realpath(name)
        if real not in first:
            first[real] = name
        else:
            log.warning("input %s is listed twice (as %r and %r); it is read once", real, first[real], name)
    return list(first.values())


# ---------------------------------------------------------------------- webdataset tar shards


def split_member(name: str) -> tuple[str, str] | None:
    """``(key, ext)`` of a member name: key = folder + basename up to its first dot, ext lower-cased; None
    for a name without an extension (webdataset ignores those too)."""
    base = name.rsplit("/", 1)[-1]
    stem, dot, ext = base.partition(".")
    if not dot or not ext:
        return None
    return name[: len(name) - len(base)] + stem, ext.lower()


@dataclass
class TarSample:
    """One sample of a shard: its key, members ``ext -> (member name, data offset, size)`` in shard order, and
    the bytes of the members asked for."""

    key: str
    members: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)


def _compressed(path: Path) -> bool:
    return path.name.lower().endswith((".tar.gz", ".tgz"))


def plain_tar(path: str | Path, cache_dir: str | Path | None = None) -> tuple[Path, str | None]:
    """The uncompressed tar of a shard, and why its decompression failed (None when it did not).

    Member offsets only mean something in an uncompressed file, so a ``.tar.gz``/``.tgz`` shard is decompressed
    once into the shard cache (default ``default_shard_cache()``), keyed by its resolved path, size and mtime so
    that an edited shard is decompressed again. A stream that breaks part-way keeps what was decompressed, and the
    failure is stored beside it so that every later scan reports it too.
    """
    path = Path(path)
    if not _compressed(path):
        return path, None
    st = path.stat()
    tag = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    stem = path.name[: -len(".tgz") if path.name.lower().endswith(".tgz") else -len(".tar.gz")]
    dest = Path(cache_dir if cache_dir is not None else default_shard_cache()) / f"{tag}-{stem[-60:]}.tar"
    failure = dest.with_name(dest.name + ".error")
    if not dest.exists():
        _decompress(path, dest, failure)
    return dest, (failure.read_text(encoding="utf-8") if failure.exists() else None)


def _decompress(src: Path, dest: Path, failure: Path) -> None:
    tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            error = _gunzip(src, out)
        if error is None:
            failure.unlink(missing_ok=True)
        else:
            failure.write_text(error, encoding="utf-8")  # before dest appears: a reader of dest sees it
        os.replace(tmp, dest)
    except OSError as err:  # the cache, not the shard: nothing can be read without it
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot decompress shard {src} into the shard cache {dest.parent}: {err}") from None


def _gunzip(src: Path, out) -> str | None:
    """Copy the decompressed stream of ``src`` into ``out``; why it stopped early, or None."""
    import gzip
    import zlib

    with gzip.open(src, "rb") as stream:
        while True:
            try:
                chunk = stream.read1(1 << 16)  # read() would drop what it had decompressed when the stream breaks
            except (OSError, EOFError, zlib.error) as err:
                return f"gzip stream of {src.name} broken ({err})"
            if not chunk:
                return None
            out.write(chunk)


def _has_end_marker(path: Path) -> bool:
    """tarfile stops quietly at a truncated header; an intact tar ends in two zero blocks."""
    size = path.stat().st_size
    if size < 1024:
        return False
    with open(path, "rb") as fh:
        fh.seek(size - 1024)
        return fh.read(1024) == bytes(1024)


def _holds_data(fh, start: int, end: int) -> bool:
    """Whether bytes ``[start, end)`` hold anything but zeros (zero blocks between members are the end markers of
    concatenated tars, not damage)."""
    fh.seek(start)
    while start < end:
        chunk = fh.read(min(end - start, 1 << 20))
        if not chunk:
            return False
        if chunk.count(0) != len(chunk):
            return True
        start += len(chunk)
    return False


class _Grouper:
    """Members grouped into samples by key, with the samples that must be skipped and why.

    A *run* is a stretch of adjacent members of one key. The first run of a key makes its sample. A later run
    that repeats one of the sample's extensions is a second sample with the same key: it is skipped
    (``duplicate_key``) and the first is kept, as a reader that stops at the first sample would. A later run
    with only new extensions completes the sample (members of one key need not be adjacent). An extension
    given twice within a sample makes it ``duplicate_member``: which of the two belongs with the image is
    unknowable, so the whole sample is skipped. Samples next to damaged tar data are ``damaged_shard``.
    """

    def __init__(self):
        self.samples: dict[str, TarSample] = {}
        self.marked: dict[str, tuple[str, str]] = {}  # key -> (reason, why) of a sample skipped as a whole
        self.later: list[tuple[str, str, str]] = []  # (reason, key, why) of later runs skipped
        self.run_key: str | None = None
        self.run: list[tuple[str, tuple[str, int, int]]] = []
        self.last_key: str | None = None
        self.damage_next: str | None = None  # why the next file member's sample is skipped

    def add(self, key: str, ext: str, entry: tuple[str, int, int]) -> None:
        if key != self.run_key:
            self.flush()
            self.run_key = key
        self.run.append((ext, entry))
        self.last_key = key
        if self.damage_next is not None:
            self.mark(key, "damaged_shard", self.damage_next)
            self.damage_next = None

    def damaged(self, why: str) -> None:
        """Damaged tar data lies here: the member it held belonged to the sample before it or the one after it,
        which cannot be told apart, so neither can be trusted to be complete."""
        if self.last_key is not None:
            self.mark(self.last_key, "damaged_shard", why)
        self.damage_next = why

    def mark(self, key: str, reason: str, why: str) -> None:
        self.marked.setdefault(key, (reason, why))

    def flush(self) -> None:
        key, run = self.run_key, self.run
        self.run_key, self.run = None, []
        if key is None:
            return
        exts = [ext for ext, _ in run]
        sample = self.samples.get(key)
        if sample is not None and set(exts) & set(sample.members):
            self.later.append(("duplicate_key", key, f"duplicate key: a second sample {key!r} at byte "
                               f"{run[0][1][1]:,} (members: {', '.join(exts)}); the first one was kept"))
            return
        sample = sample or self.samples.setdefault(key, TarSample(key))
        for ext, entry in run:
            sample.members.setdefault(ext, entry)
        twice = next((ext for ext in exts if exts.count(ext) > 1), None)
        if twice is not None:
            self.mark(key, "duplicate_member", f"duplicate member: .{twice} appears {exts.count(twice)} times in "
                      "the sample, so which one belongs with the others is ambiguous")

    def skips(self) -> list[tuple[str, str, str]]:
        """``(reason, key, why)`` per skipped sample: those skipped whole, then the later runs skipped."""
        whole = [(self.marked[key][0], key, self.marked[key][1]) for key in self.samples if key in self.marked]
        return whole + self.later


class TarScan:
    """The samples of one shard (``for sample in TarScan(path, read=...)``), grouped by key over the whole shard
    (members of one key need not be adjacent), in the order keys first appear.

    Only the member headers are read first (payloads skipped with seek); ``read(ext)`` says which members'
    bytes each sample carries (default none). A ``.tar.gz``/``.tgz`` shard is decompressed once into the shard
    cache and read from there (``plain_tar``; ``MemberReader`` finds the same file). After iterating:

    - ``skips`` lists ``(reason, key, why)`` per sample not yielded: ``duplicate_key`` (a second sample with the
      key of an earlier one; the first is kept), ``duplicate_member`` (an extension twice in one sample),
      ``damaged_shard`` (a sample next to damaged tar data, see below); the rules are ``_Grouper``'s.
    - ``damage`` is None when the shard reads to its end-of-archive marker, else ``(kind, message)`` with kind
      ``unreadable`` (tarfile or the decompressor failed) or ``truncated`` (no end-of-archive marker); the
      samples before the damage are yielded.

    A damaged header in the middle does not end the scan: tarfile would stop there quietly, so the scan goes on
    in 512-byte steps to the next block with a valid header checksum (tarfile's ``ignore_zeros``), and any
    bytes but zeros between the end of one member and the next header found are a damaged region.
    """

    def __init__(self, path: str | Path, read: Callable[[str], bool] | None = None):
        self.path = Path(path)
        self.read = read or (lambda ext: False)
        self.damage: tuple[str, str] | None = None
        self.skips: list[tuple[str, str, str]] = []

    def __iter__(self) -> Iterator[TarSample]:
        self.damage, self.skips = None, []
        try:
            file, failure = plain_tar(self.path)
        except OSError as err:
            self.damage = ("unreadable", str(err))
            return
        group = _Grouper()
        self._index(file, group)
        if failure is not None:
            self.damage = ("unreadable", failure)
        self.skips = group.skips()
        yield from self._with_data(file, [s for k, s in group.samples.items() if k not in group.marked])

    def _index(self, file: Path, group: _Grouper) -> None:
        try:
            with tarfile.open(file, "r:", ignore_zeros=True) as tar, open(file, "rb") as raw:
                end = 0  # where the next header should start
                for member in tar:
                    if member.offset > end and _holds_data(raw, end, member.offset):
                        group.damaged(f"next to damaged tar data at bytes {end:,}-{member.offset:,} of "
                                      f"{self.path.name} (skipped to the next valid header)")
                    end = tar.offset
                    split = split_member(member.name) if member.isfile() else None
                    if split is not None:
                        group.add(*split, (member.name, member.offset_data, member.size))
                group.flush()
                self._check_end(file, raw, end, group)
        except (tarfile.TarError, OSError, EOFError) as err:
            group.flush()
            self.damage = ("unreadable", str(err))

    def _check_end(self, file: Path, raw, end: int, group: _Grouper) -> None:
        size = file.stat().st_size
        if end == 0 and _holds_data(raw, 0, size):
            self.damage = ("unreadable", "no valid tar header")
        elif not _has_end_marker(file):
            self.damage = ("truncated", "no end-of-archive marker")
        elif _holds_data(raw, end, size):
            group.damaged(f"next to damaged tar data at bytes {end:,}-{size:,} of {self.path.name} (no valid "
                          "header after it)")

    def _with_data(self, file: Path, samples: list[TarSample]) -> Iterator[TarSample]:
        reader = MemberReader()
        try:
            for sample in samples:
                for ext, (_, offset, size) in sample.members.items():
                    if not self.read(ext):
                        continue
                    try:
                        sample.data[ext] = reader.read(file, offset, size)
                    except OSError:
                        pass  # a member cut short by the damage: the sample goes without it
                yield sample
        finally:
            reader.close()


class MemberReader:
    """Random access to shard members by (shard path, offset, size); one open file per shard and process. The
    offsets of a compressed shard are those of its decompressed copy (``plain_tar``), which is what is read."""

    def __init__(self):
        self._files: dict[str, object] = {}

    def read(self, path: str | Path, offset: int, size: int) -> bytes:
        key = str(path)
        f = self._files.get(key)
        if f is None or getattr(f, "_pid", None) != os.getpid():  # file handles must not cross fork
            f = open(plain_tar(path)[0], "rb")  # noqa: SIM115 - cached per process, closed at exit
            f._pid = os.getpid()  # type: ignore[attr-defined]
            self._files[key] = f
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError("member truncated")
        return data

    def close(self) -> None:
        for f in self._files.values():
            if getattr(f, "_pid", None) == os.getpid():
                f.close()
        self._files = {}

    def __del__(self):
        self.close()

    def __getstate__(self):  # open files do not pickle into DataLoader workers
        return {"_files": {}}


# ---------------------------------------------------------------------- manifests (CSV / TSV / JSONL)


@dataclass
class Manifest:
    """A manifest being read: ``header`` (CSV/TSV; None for JSONL or an empty file) and ``records``, an iterator
    of ``(line number, dict)`` — a CSV/TSV row by header name, or a JSONL line's JSON value (any type). Bad
    records are reported to ``on_bad(line number, why)`` and skipped."""

    path: Path
    kind: str
    header: list[str] | None
    records: Iterator[tuple[int, object]]
    _file: object = None

    def close(self) -> None:
        """Close the file when the records are not read to the end (``with read_manifest(...) as m:``)."""
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(path: str | Path, on_bad: Callable[[int, str], None], *, kind: str | None = None) -> Manifest:
    """Open a CSV/TSV/JSONL manifest (kind by the extension unless given). Text stays as read (surrogateescape:
    check with ``valid_utf8`` / fix with ``repaired``); a byte-order mark is dropped."""
    path = Path(path)
    kind = kind or {"tsv": "tsv", "csv": "csv"}.get(file_kind(path, "x"), "jsonl")
    if kind == "jsonl":
        return Manifest(path, kind, None, _jsonl_records(path, on_bad))
    fh = open_text(path)
    records = read_table(fh, "\t" if kind == "tsv" else ",", on_bad)
    first = next(records, None)
    if first is None:
        fh.close()
        return Manifest(path, kind, None, iter(()))
    header = [h.lstrip("\ufeff") for h in first[1]]

    def rows():
        with fh:
            for lineno, row in records:
                yield lineno, dict(zip(header, row))

    return Manifest(path, kind, header, rows(), fh)


def _jsonl_records(path: Path, on_bad):
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            if not valid_utf8(line):
                on_bad(lineno, "invalid UTF-8")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                on_bad(lineno, f"malformed JSON ({err.msg})")
                continue
            yield lineno, obj


def resolve_image(img: str, root: str | Path, cwd: str | Path | None = None) -> Path:
    """The file of a manifest image path: relative to the manifest's folder ``root``, then to ``cwd`` (the
    working directory the run started in; open_clip's convention), absolute paths as given. FileNotFoundError
    naming both places when it is in neither."""
    path = Path(img)
    if path.is_absolute():
        return path
    root, cwd = Path(root), Path(cwd) if cwd is not None else Path.cwd()
    for base in (root, cwd):
        if (base / path).is_file():
            return base / path
    tried = [str(root / path)] + ([str(cwd / path)] if cwd != root else [])
    raise FileNotFoundError(f"image {img!r} not found (tried {', '.join(tried)})")


# ---------------------------------------------------------------------- image folders and caption text


def is_image_file(path: Path, exts: tuple[str, ...] = IMAGE_EXTENSIONS) -> bool:
    return path.suffix.lower() in exts and path.is_file()


def caption_folder(root: str | Path, exts: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[tuple[Path, Path | None]]:
    """Images under ``root`` (recursively, sorted) with their sidecar ``<stem>.txt`` (None when missing)."""
    out = []
    for img in sorted(p for p in Path(root).rglob("*") if is_image_file(p, exts)):
        txt = img.with_suffix(".txt")
        out.append((img, txt if txt.is_file() else None))
    return out


def read_sidecar(path: str | Path) -> list[str]:
    """Captions of a sidecar text file: one per line, by the caption rule (stripped, blanks dropped)."""
    return clean_captions(Path(path).read_text(encoding="utf-8", errors="replace").splitlines())


def class_folders(root: str | Path, exts: tuple[str, ...] = IMAGE_EXTENSIONS) -> list[tuple[str, list[Path]]]:
    """``(class name, image files)`` per sub-folder of ``root`` (sorted; files found recursively, sorted)."""
    return [(folder.name, sorted(f for f in folder.rglob("*") if is_image_file(f, exts)))
            for folder in sorted(p for p in Path(root).iterdir() if p.is_dir())]


def iter_text_captions(path: str | Path, on_bad: Callable[[int, str], None]) -> Iterator[list[str]]:
    """One caption per line; ``image#n<TAB>caption`` lines (captions.token.txt) group by image."""
    group_id, group = None, []
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if not valid_utf8(line):
                on_bad(lineno, "invalid UTF-8")
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
