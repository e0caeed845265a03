"""Random-access views of image–caption sources, all behind one tiny interface.

Every source is indexed once up front (cheaply: tar headers, manifest rows, file names; no image is decoded), so
that sample ``i`` can be read directly. That makes the training order a pure function of (seed, epoch) and a
resume a jump to a position instead of a replay. ``read(i)`` returns ``(image, captions, label)`` where image is
bytes or a PIL image; it may raise on a bad sample and the dataset counts the skip.

Webdataset conventions: shards are tar files whose members ``<key>.<ext>`` are grouped by key (the basename up to
its first dot); brace patterns and remote URLs (anything ``webdataset.gopen`` opens: http, pipe:, ...) are
expanded with webdataset. Remote shards are first copied into a local cache (like webdataset's ``cache_dir``),
because random access needs a seekable file.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import os
import tarfile
from collections import Counter
from pathlib import Path

from catlip.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


class Source:
    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int):
        raise NotImplementedError

    def captions(self, i: int) -> list[str]:
        """Captions only (for building a vocabulary); default reads the sample."""
        return self.read(i)[1]


class SyntheticSource(Source):
    def __init__(self, size: int, seed: int, image_size: int):
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


def _captions_from(members: dict[str, bytes]) -> list[str]:
    """Union of the captions in .txt / .json members, first-seen order, blanks dropped."""
    out: list[str] = []
    for ext, raw in members.items():
        text = raw.decode("utf-8", errors="replace")
        if ext == "json":
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if isinstance(obj, dict):
                caps = obj.get("captions") or obj.get("caption") or []
                out.extend([caps] if isinstance(caps, str) else [c for c in caps if isinstance(c, str)])
        else:
            out.extend(text.splitlines() if ext == "txt" else [text])
    seen: dict[str, None] = {}
    for c in out:
        c = c.strip()
        if c:
            seen.setdefault(c, None)
    return list(seen)


def _local_copy(url: str, cache_dir: Path) -> Path:
    """Local path for a shard URL; remote URLs are fetched once with webdataset.gopen into the cache."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    if "://" not in url and not url.startswith("pipe:"):
        return Path(url)
    import webdataset as wds

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


class TarShardSource(Source):
    """Webdataset tar shards indexed by member offsets (headers only; payloads are skipped with seek)."""

    def __init__(self, pattern: str, *, image_exts: list[str], caption_exts: list[str], stats: Counter,
                 cache_dir: Path):
        import webdataset as wds

        urls = wds.shardlists.expand_urls(pattern)
        self.image_exts, self.caption_exts = image_exts, caption_exts
        self.paths: list[Path] = []
        self.samples: list[tuple[int, str, dict[str, tuple[int, int]]]] = []  # (shard, key, ext -> (offset, size))
        for url in urls:
            path = _local_copy(url, cache_dir)
            if not path.exists():
                raise DataError(f"shard not found: {url}")
            self.paths.append(path)
            self._index_shard(len(self.paths) - 1, path, stats)
        self._files: dict[int, object] = {}

    def _index_shard(self, shard: int, path: Path, stats: Counter) -> None:
        groups: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    base = os.path.basename(m.name)
                    if "." not in base:
                        continue
                    stem, ext = base.split(".", 1)
                    key = os.path.join(os.path.dirname(m.name), stem)
                    groups.setdefault(key, {})[ext.lower()] = (m.offset_data, m.size)
        except (tarfile.TarError, OSError, EOFError):
            stats["truncated_shard"] += 1  # keep the members indexed before the damage
        for key, members in groups.items():
            if not any(e in members for e in self.image_exts):
                stats["no_image"] += 1
            elif not any(e in members for e in self.caption_exts):
                stats["no_caption"] += 1
            else:
                self.samples.append((shard, key, members))

    def __len__(self) -> int:
        return len(self.samples)

    def _read_member(self, shard: int, offset: int, size: int) -> bytes:
        f = self._files.get(shard)
        if f is None or getattr(f, "_pid", None) != os.getpid():  # file handles must not cross fork
            f = open(self.paths[shard], "rb")  # noqa: SIM115 - cached per process, closed at exit
            f._pid = os.getpid()  # type: ignore[attr-defined]
            self._files[shard] = f
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise OSError("member truncated")
        return data

    def _members(self, i: int, exts: list[str]) -> dict[str, bytes]:
        shard, _, members = self.samples[i]
        return {e: self._read_member(shard, *members[e]) for e in exts if e in members}

    def read(self, i: int):
        image_ext = next(e for e in self.image_exts if e in self.samples[i][2])
        image = self._members(i, [image_ext])[image_ext]
        return image, _captions_from(self._members(i, self.caption_exts)), -1

    def captions(self, i: int) -> list[str]:
        return _captions_from(self._members(i, self.caption_exts))

    def __getstate__(self):  # open files do not pickle into DataLoader workers
        state = dict(self.__dict__)
        state["_files"] = {}
        return state


class ManifestSource(Source):
    """CSV / TSV / JSONL rows with an image path (relative to the manifest) and a caption."""

    def __init__(self, path: str, *, image_column: str, caption_column: str, stats: Counter):
        p = Path(path)
        if not p.is_file():
            raise DataError(f"manifest not found: {path}")
        self.root = p.parent
        self.rows: list[tuple[str, str]] = []
        for row in self._rows(p, stats):
            img, cap = row.get(image_column), row.get(caption_column)
            if not img:
                stats["bad_manifest_row"] += 1
            else:
                self.rows.append((str(img), cap if isinstance(cap, str) else ""))

    @staticmethod
    def _rows(p: Path, stats: Counter):
        if p.suffix.lower() in (".jsonl", ".json"):
            with p.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        stats["bad_manifest_row"] += 1
                        continue
                    if isinstance(obj, dict):
                        yield obj
                    else:
                        stats["bad_manifest_row"] += 1
        else:
            with p.open(newline="", encoding="utf-8", errors="replace") as f:
                yield from csv.DictReader(f, delimiter="\t" if p.suffix.lower() == ".tsv" else ",")

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, i: int):
        img, cap = self.rows[i]
        return (self.root / img).read_bytes(), [cap.strip()] if cap.strip() else [], -1

    def captions(self, i: int) -> list[str]:
        cap = self.rows[i][1].strip()
        return [cap] if cap else []


class FolderSource(Source):
    """Images under a folder, each with a sidecar ``<stem>.txt`` (one caption per line)."""

    def __init__(self, path: str, stats: Counter):
        root = Path(path)
        self.items: list[tuple[Path, Path]] = []
        for img in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS):
            txt = img.with_suffix(".txt")
            if txt.is_file():
                self.items.append((img, txt))
            else:
                stats["no_caption"] += 1

    def __len__(self) -> int:
        return len(self.items)

    def read(self, i: int):
        img, txt = self.items[i]
        return img.read_bytes(), self.captions(i), -1

    def captions(self, i: int) -> list[str]:
        return [c.strip() for c in self.items[i][1].read_text(errors="replace").splitlines() if c.strip()]


class ConcatSource(Source):
    def __init__(self, parts: list[Source]):
        self.parts = [p for p in parts if len(p)]
        self.ends = []
        total = 0
        for p in self.parts:
            total += len(p)
            self.ends.append(total)

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def _locate(self, i: int) -> tuple[Source, int]:
        k = bisect.bisect_right(self.ends, i)
        return self.parts[k], i - (self.ends[k - 1] if k else 0)

    def read(self, i: int):
        part, j = self._locate(i)
        return part.read(j)

    def captions(self, i: int) -> list[str]:
        part, j = self._locate(i)
        return part.captions(j)


def open_sources(data_cfg, *, seed: int, stats: Counter) -> ConcatSource:
    """All of ``data.train`` as one random-access source. Index-time skips are counted in ``stats``."""
    cache = Path(os.environ.get("CATLIP_SHARD_CACHE", Path.home() / ".cache" / "catlip" / "shards"))
    image_exts = [e.strip().lower() for e in data_cfg.image_key.split(";") if e.strip()]
    parts: list[Source] = []
    for spec in data_cfg.train:
        low = spec.lower()
        if spec == "synthetic":
            parts.append(SyntheticSource(data_cfg.synthetic_size, seed, data_cfg.image_size))
        elif low.endswith((".csv", ".tsv", ".jsonl")):
            parts.append(ManifestSource(spec, image_column=data_cfg.image_column,
                                        caption_column=data_cfg.caption_column, stats=stats))
        elif os.path.isdir(spec):
            parts.append(FolderSource(spec, stats))
        elif ".tar" in low or "://" in spec or low.startswith("pipe:"):
            parts.append(TarShardSource(spec, image_exts=image_exts, caption_exts=list(data_cfg.caption_keys),
                                        stats=stats, cache_dir=cache))
        else:
            raise DataError(f"data.train entry {spec!r} is not 'synthetic', a shard pattern, a manifest "
                            "(.csv/.tsv/.jsonl) or a folder")
    source = ConcatSource(parts)
    if len(source) == 0:
        raise DataError(f"no readable samples in data.train={data_cfg.train} (skipped: {dict(stats)})")
    return source
