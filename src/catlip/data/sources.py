"""Random-access views of image–caption sources, all behind one tiny interface.

Every source is indexed once up front (cheaply: tar headers, manifest rows, file names; no image is decoded), so
that sample ``i`` can be read directly. That makes the training order a pure function of (seed, epoch) and a
resume a jump to a position instead of a replay. ``read(i)`` returns ``(image, captions, label)`` where image is
bytes or a PIL image; it may raise on a bad sample and the dataset counts the skip. ``describe(i)`` names sample
``i`` (file, line or member) and ``looked_for()`` says what the source expects, for the messages of skipped data.

Files are listed and read by the one reader of catlip's data formats, ``catlip.data.formats`` (shared with the
vocabulary stage, ``catlip.labels.corpus``, and the evaluation sets); this module only indexes what it reads. The
kind of each ``data.train`` entry (``synthetic``, shards, a manifest or a folder; anything else is refused with
the shared message) is decided by ``catlip.data.specs``.

Captions follow one rule, defined there and shared with the vocabulary stage: the fields / columns of
``caption_fields(data.caption_column)`` in order (default ``captions, caption, text, txt, title``), a shard's
``.json`` member before its ``.txt`` lines, captions stripped, blanks dropped.

Webdataset conventions: shards are tar files whose members ``<key>.<ext>`` are grouped by key (the basename up to
its first dot; ``formats.TarScan``); brace patterns and remote URLs (anything ``webdataset.gopen`` opens: http,
pipe:, ...) are expanded by webdataset's rule (``formats.expand_urls``). Remote shards are first copied into a
local cache (``formats.local_shard``, like webdataset's ``cache_dir``), because random access needs a seekable
file; ``.tar.gz``/``.tgz`` shards are read from a decompressed copy there (``formats.plain_tar``). A shard listed
twice in ``data.train`` (by resolved path, also across entries) is read once, with a warning. Samples the scan
cannot trust are counted by reason: ``duplicate_key`` (a later sample with the key of an earlier one; the first
is kept), ``duplicate_member`` (an extension twice in one sample: the sample is skipped), ``damaged_shard`` (the
samples next to a damaged tar header, which the scan steps over), ``truncated_shard`` (a shard cut short).

Manifests (CSV / TSV / JSONL): a relative image path is looked up relative to the manifest's folder first, then
relative to the working directory the run started in (open_clip's convention for its ``--train-data`` CSVs);
absolute paths are used as they are. A file in neither place is skipped as ``missing_file`` and the message
names both places (``formats.resolve_image``). CSV/TSV records are split by ``formats.read_table``: a line with an
unterminated quote is reported (file:line), counted as ``bad_manifest_row`` and skipped, and the rows after it
are read.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from pathlib import Path

from catlip.config import ModelConfig
from catlip.data import formats, specs
from catlip.data.formats import (  # noqa: F401 - re-exported for older imports
    caption_column_index,
    caption_fields,
    captions_of,
    clean_captions,
    member_captions,
    no_caption_reason,
    read_table,
)
from catlip.errors import DataError

IMAGE_EXTS = formats.IMAGE_EXTENSIONS  # image files of folders
log = logging.getLogger("catlip.data")


class Source:
    name = "source"

    def __init__(self):
        self.index_skips: Counter = Counter()  # samples dropped while indexing, by reason
        self.examples: dict[str, str] = {}  # reason -> the first such sample (where: why)

    def _skip(self, reason: str, example: str) -> None:
        self.index_skips[reason] += 1
        self.examples.setdefault(reason, example)

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int):
        raise NotImplementedError

    def captions(self, i: int) -> list[str]:
        """Captions only (for building a vocabulary); default reads the sample."""
        return self.read(i)[1]

    def describe(self, i: int) -> str:
        """Where sample ``i`` comes from (for messages)."""
        return f"{self.name} sample {i}"

    def looked_for(self) -> str:
        """What this source reads images and captions from (for messages)."""
        return self.name


class SyntheticSource(Source):
    name = "synthetic"

    def __init__(self, size: int, seed: int, image_size: int):
        super().__init__()
        self.size, self.seed, self.image_size = size, seed, image_size

    def __len__(self) -> int:
        return self.size

    def read(self, i: int):
        from catlip.data.synthetic import synthetic_sample

        s = synthetic_sample(i, self.seed, self.image_size)
        return s.image, s.captions, s.label

    def captions(self, i: int) -> list[str]:
        from catlip.data.synthetic import synthetic_sample

        return synthetic_sample(i, self.seed, 8).captions

    def looked_for(self) -> str:
        return f"synthetic: {self.size} generated scenes"


def _local_copy(url: str, cache_dir: Path) -> Path:
    """Local path for a shard URL (``catlip.data.formats.local_shard``)."""
    return formats.local_shard(url, cache_dir)


class TarShardSource(Source):
    """Webdataset tar shards indexed by member offsets (headers only; payloads are skipped with seek).

    A shard met again (the same resolved path, within the pattern or in ``seen``, the shards of the other
    ``data.train`` entries) is read once, with a warning naming it. What ``formats.TarScan`` skips is counted by
    its reason (``duplicate_key``, ``duplicate_member``, ``damaged_shard``; a shard cut short or unreadable is
    ``truncated_shard``), with one warning per shard naming it.
    """

    def __init__(self, pattern: str, *, image_exts: list[str], caption_exts: list[str], stats: Counter,
                 cache_dir: Path, caption_column: str | None = None, seen: dict[Path, str] | None = None):
        super().__init__()
        urls = formats.expand_urls(pattern)
        self.name = pattern
        self.image_exts, self.caption_exts, self.caption_column = image_exts, caption_exts, caption_column
        self.paths: list[Path] = []
        self.samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []  # (shard, key, ext -> (offset, size))
        seen = {} if seen is None else seen
        for url in urls:
            path = formats.local_shard(url, cache_dir)
            if not path.exists():
                raise specs.not_found(specs.SHARDS, [url])
            if self._listed_before(path, url, seen):
                continue
            self.paths.append(path)
            self._index_shard(len(self.paths) - 1, path)
        self._reader = formats.MemberReader()
        stats.update(self.index_skips)

    def _listed_before(self, path: Path, url: str, seen: dict[Path, str]) -> bool:
        """Whether the shard was met already; a shard listed twice would be trained on twice."""
        real = path.resolve()
        if real in seen:
            log.warning("data.train lists shard %s twice (as %r and %r); it is read once", real, seen[real], url)
            return True
        seen[real] = url
        return False

    def _index_shard(self, shard: int, path: Path) -> None:
        scan = formats.TarScan(path)
        for sample in scan:
            members = {ext: (offset, size) for ext, (_, offset, size) in sample.members.items()}
            where = f"{path}:{sample.key} (members: {', '.join(members)})"
            if not any(e in members for e in self.image_exts):
                self._skip("no_image", where)
            elif not any(e in members for e in self.caption_exts):
                self._skip("no_caption", where)
            else:
                self.samples.append((shard, sample.key, members))
        self._count_scan_skips(path, scan)

    def _count_scan_skips(self, path: Path, scan: formats.TarScan) -> None:
        found = Counter()
        for reason, key, why in scan.skips:
            found[reason] += 1
            self._skip(reason, f"{path}:{key}: {why}")
        if scan.damage is not None:  # the members indexed before the damage are kept
            found["truncated_shard"] += 1
            self._skip("truncated_shard", f"{path}: {scan.damage[1]}")
        if found:
            first = scan.skips[0][2] if scan.skips else scan.damage[1]
            log.warning("shard %s: skipped %s; first: %s", path, skip_summary(found), first)

    def __len__(self) -> int:
        return len(self.samples)

    def _read_member(self, shard: int, offset: int, size: int) -> bytes:
        return self._reader.read(self.paths[shard], offset, size)

    def _members(self, i: int, exts: list[str]) -> dict[str, bytes]:
        shard, _, members = self.samples[i]
        return {e: self._read_member(shard, *members[e]) for e in exts if e in members}

    def read(self, i: int):
        image_ext = next(e for e in self.image_exts if e in self.samples[i][2])
        image = self._members(i, [image_ext])[image_ext]
        return image, self.captions(i), -1

    def captions(self, i: int) -> list[str]:
        return member_captions(self._members(i, self.caption_exts), self.caption_column)[0]

    def describe(self, i: int) -> str:
        shard, key, members = self.samples[i]
        text = f"{self.paths[shard]}:{key} (members: {', '.join(members)})"
        try:
            problems = member_captions(self._members(i, self.caption_exts), self.caption_column)[1]
        except OSError:
            problems = []
        return text + "".join(f"; .{ext}: {why}" for ext, why in problems)

    def looked_for(self) -> str:
        fields = "/".join(caption_fields(self.caption_column))
        return (f"{self.name}: image member .{'/.'.join(self.image_exts)}, caption members "
                f".{'/.'.join(self.caption_exts)} (.json fields {fields}, else text lines)")



class ManifestSource(Source):
    """CSV / TSV / JSONL rows with an image path and a caption.

    The image path comes from ``image_column``; a relative path is resolved against the manifest's folder, else
    against the working directory at start (open_clip's convention), and absolute paths are used as they are.
    The caption comes from ``caption_column`` with the automatic fallbacks of
    ``catlip.data.formats.caption_fields`` (``filepath,title`` CSVs work with ``image_column="filepath"``).
    A CSV/TSV without the image column or any caption column is a ``DataError`` naming the header.
    """

    def __init__(self, path: str, *, image_column: str, caption_column: str, stats: Counter):
        super().__init__()
        p = Path(path)
        if not p.is_file():
            raise specs.not_found(specs.MANIFEST, [path])
        self.name, self.path = path, p
        self.root, self.cwd = p.parent.absolute(), Path.cwd()
        self.image_column, self.caption_column = image_column, caption_column
        self.header: list[str] | None = None
        self.used_caption_column = ""
        self.rows: list[tuple[str, tuple[str, ...], int]] = []  # (image path, captions, line number)
        self._index(p)
        stats.update(self.index_skips)

    def _index(self, p: Path) -> None:
        kind = "jsonl" if p.suffix.lower() in (".jsonl", ".json", ".ndjson") else None
        with formats.read_manifest(p, lambda n, why: self._skip("bad_manifest_row", f"{p}:{n}: {why}"),
                                   kind=kind) as manifest:
            if manifest.kind == "jsonl":
                self._index_jsonl(p, manifest.records)
            elif manifest.header is not None:
                self._index_table(p, manifest.header, manifest.records)

    def _index_table(self, p: Path, header: list[str], records) -> None:
        self.header = header
        if self.image_column not in header:
            raise DataError(f"{p}: no image column {self.image_column!r} (data.image_column); "
                            f"header: {', '.join(header)}")
        col = caption_column_index(header, self.caption_column)
        if col is None:
            raise DataError(f"{p}: no caption column (data.caption_column={self.caption_column!r}; tried "
                            f"{', '.join(caption_fields(self.caption_column))}; header: {', '.join(header)})")
        self.used_caption_column = header[col]
        for lineno, row in records:
            img = formats.repaired(row[self.image_column]).strip()
            caps = clean_captions([formats.repaired(row[self.used_caption_column])])
            if not img:
                self._skip("bad_manifest_row", f"{p}:{lineno}: empty {self.image_column!r}")
            elif not caps:
                self._skip("no_caption", f"{p}:{lineno}: blank {self.used_caption_column!r}")
            else:
                self.rows.append((img, tuple(caps), lineno))

    def _index_jsonl(self, p: Path, records) -> None:
        for lineno, obj in records:
            where = f"{p}:{lineno}"
            if not isinstance(obj, dict):
                self._skip("bad_manifest_row", f"{where}: not a JSON object")
                continue
            img = obj.get(self.image_column)
            if not isinstance(img, str) or not img.strip():
                self._skip("bad_manifest_row", f"{where}: no {self.image_column!r} field (data.image_column; "
                           f"fields present: {', '.join(list(obj)[:10])})")
                continue
            caps = captions_of(obj, self.caption_column)
            if not caps:
                self._skip("no_caption", f"{where}: {no_caption_reason(obj, self.caption_column)}")
                continue
            self.rows.append((img.strip(), tuple(caps), lineno))

    def __len__(self) -> int:
        return len(self.rows)

    def image_path(self, img: str) -> Path:
        """The file of a manifest image path: manifest folder, then working directory, then as given."""
        return formats.resolve_image(img, self.root, self.cwd)

    def read(self, i: int):
        img, caps, _ = self.rows[i]
        return self.image_path(img).read_bytes(), list(caps), -1

    def captions(self, i: int) -> list[str]:
        return list(self.rows[i][1])

    def describe(self, i: int) -> str:
        img, _, lineno = self.rows[i]
        return f"{self.path}:{lineno} (image {img!r})"

    def looked_for(self) -> str:
        header = f"; header: {', '.join(self.header)}" if self.header is not None else ""
        column = (f"caption column {self.used_caption_column!r}" if self.used_caption_column else
                  f"caption field {'/'.join(caption_fields(self.caption_column))}")
        return (f"{self.name}: image column {self.image_column!r} (data.image_column) relative to {self.root} or "
                f"{self.cwd}, {column} (data.caption_column={self.caption_column!r}){header}")


class FolderSource(Source):
    """Images under a folder, each with a sidecar ``<stem>.txt`` (one caption per line)."""

    def __init__(self, path: str, stats: Counter):
        super().__init__()
        self.name = path
        self.items: list[tuple[Path, Path]] = []
        for img, txt in formats.caption_folder(path, IMAGE_EXTS):
            if txt is not None:
                self.items.append((img, txt))
            else:
                self._skip("no_caption", f"{img}: no {img.with_suffix('.txt').name}")
        stats.update(self.index_skips)

    def __len__(self) -> int:
        return len(self.items)

    def read(self, i: int):
        img, txt = self.items[i]
        return img.read_bytes(), self.captions(i), -1

    def captions(self, i: int) -> list[str]:
        return formats.read_sidecar(self.items[i][1])

    def describe(self, i: int) -> str:
        return str(self.items[i][0])

    def looked_for(self) -> str:
        return f"{self.name}: images ({'/'.join(IMAGE_EXTS)}) with a sidecar .txt caption file each"


class ConcatSource(Source):
    """Sources one after another; ``all_parts`` keeps those that indexed no sample (for messages)."""

    def __init__(self, parts: list[Source]):
        super().__init__()
        self.all_parts = list(parts)
        self.parts = [p for p in parts if len(p)]
        self._positions = [k for k, p in enumerate(parts) if len(p)]
        self.ends = []
        total = 0
        for p in self.parts:
            total += len(p)
            self.ends.append(total)
        for p in parts:
            self.index_skips.update(p.index_skips)
            for reason, example in p.examples.items():
                self.examples.setdefault(reason, example)

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def part_index(self, i: int) -> int:
        """Position in ``all_parts`` of the source of sample ``i``."""
        return self._positions[bisect.bisect_right(self.ends, i)]

    def _locate(self, i: int) -> tuple[Source, int]:
        k = bisect.bisect_right(self.ends, i)
        return self.parts[k], i - (self.ends[k - 1] if k else 0)

    def read(self, i: int):
        part, j = self._locate(i)
        return part.read(j)

    def captions(self, i: int) -> list[str]:
        part, j = self._locate(i)
        return part.captions(j)

    def describe(self, i: int) -> str:
        part, j = self._locate(i)
        return part.describe(j)

    def looked_for(self) -> str:
        return " | ".join(p.looked_for() for p in self.all_parts)


def skip_summary(counts: Counter | dict) -> str:
    """``reason=count, ...`` most frequent first."""
    return ", ".join(f"{k}={v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v) or "none"


TRAIN_KINDS = (specs.SYNTHETIC, specs.SHARDS, specs.MANIFEST, specs.FOLDER)


def _train_kind(spec: str, role: str) -> str:
    """The kind of a data.train entry (``catlip.data.specs``); the synthetic set's size is a config value."""
    found = specs.resolve(spec, f"{role} entry", TRAIN_KINDS)
    if found.count is not None:
        raise DataError(f"{role} entry {spec!r}: the synthetic set's size is data.synthetic_size; "
                        "write 'synthetic'")
    return found.kind


def open_sources(data_cfg, *, seed: int, stats: Counter, image_size: int = ModelConfig.image_size,
                 role: str = "data.train") -> ConcatSource:
    """All of ``data.train`` as one random-access source (the synthetic set drawn at ``image_size``, the run's
    ``model.image_size``). Index-time skips are counted in ``stats``; ``role`` is how messages name the setting
    (a command that reads captioned data outside training passes its own flag)."""
    cache = formats.default_shard_cache()
    seen: dict[Path, str] = {}  # shards read so far (resolved path -> as listed), shared by the data.train entries
    image_exts = [e.strip().lower() for e in data_cfg.image_key.split(";") if e.strip()]
    parts: list[Source] = []
    for spec in data_cfg.train:
        kind = _train_kind(spec, role)
        if kind == specs.SYNTHETIC:
            parts.append(SyntheticSource(data_cfg.synthetic_size, seed, image_size))
        elif kind == specs.MANIFEST:
            parts.append(ManifestSource(spec, image_column=data_cfg.image_column,
                                        caption_column=data_cfg.caption_column, stats=stats))
        elif kind == specs.FOLDER:
            parts.append(FolderSource(spec, stats))
        else:
            parts.append(TarShardSource(spec, image_exts=image_exts, caption_exts=list(data_cfg.caption_keys),
                                        stats=stats, cache_dir=cache, caption_column=data_cfg.caption_column,
                                        seen=seen))
    source = ConcatSource(parts)
    if len(source) == 0:
        first = "; ".join(f"{reason} at {example}" for reason, example in list(source.examples.items())[:2])
        raise DataError(f"no usable samples in {role}={data_cfg.train}: skipped while indexing: "
                        f"{skip_summary(source.index_skips)}" + (f"; first: {first}" if first else "")
                        + f"; looked for: {source.looked_for()}")
    return source
