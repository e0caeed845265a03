"""Rewrite webdataset shards with smaller images (``catlip shards resize``).

Web shards usually hold photos far larger than the 224 px crops a loader makes of them, and decoding the full
image is most of a loader's work. :func:`resize_shards` writes one output shard per input shard (same file name,
same member names and order) in which every image member whose longer side exceeds ``max_side`` is scaled down
to exactly ``max_side`` on that side (aspect kept, never upscaled) and re-encoded; every other member, and every
image already small enough, is copied byte for byte.

- Images are the members whose webdataset extension (everything after the basename's first dot, as the loader
  reads keys) is one of :data:`catlip.data.formats.SHARD_IMAGE_EXTS`; so ``<key>.seg.png`` masks and any other
  ``<key>.<x>.png`` are copied unchanged. Annotations in pixel units (boxes in a ``.json``) are *not* rescaled:
  do not resize shards of a dense-transfer set.
- Every image is decoded with :func:`catlip.data.images.decode_rgb`, the decoder training uses, so the output
  holds 8-bit RGB (transparency composited on white, 16-bit scaled to 8-bit) exactly as the loader would see it.
  JPEG is re-encoded as JPEG at ``quality``, WebP as WebP at ``quality``, PNG as PNG (lossless); the ICC profile
  and EXIF block are carried over (pixels are not rotated: the loader ignores EXIF orientation too).
- An image the decoder rejects (corrupt, truncated, a decompression bomb) is counted as ``corrupt`` and copied
  unchanged, so the loader keeps skipping and counting it as before.
- Resumable: a shard is written to a temporary name in ``out`` and renamed when complete; ``out`` holds a
  manifest (:data:`MANIFEST`) with the settings and per-shard counts, and a shard whose output exists and whose
  manifest entry matches its source is skipped on a re-run. A source shard that cannot be read to its end is
  reported and produces no output.
"""

from __future__ import annotations

import copy
import io
import json
import multiprocessing
import os
import tarfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catlip.data import formats
from catlip.errors import CliError

MANIFEST = "resize_manifest.json"
FORMAT = "catlip-shards-resize-1"
IMAGE_EXTS = formats.SHARD_IMAGE_EXTS
_ENCODERS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}  # Pillow format -> format written
_BY_EXT = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}  # other formats: by the member's extension
MAX_LISTED = 20  # corrupt member names kept per shard in the manifest


@dataclass
class ShardResult:
    """What one shard's rewrite did (a row of the manifest)."""

    shard: str  # output file name (the source's name)
    source: str
    source_bytes: int = 0
    members: int = 0
    images: int = 0
    resized: int = 0
    unchanged: int = 0  # images already within max_side: copied byte for byte
    corrupt: int = 0  # images the decoder rejects: copied byte for byte
    corrupt_members: list[str] = field(default_factory=list)
    bytes_out: int = 0
    seconds: float = 0.0
    error: str | None = None


# ---------------------------------------------------------------------- one image


def target_size(width: int, height: int, max_side: int) -> tuple[int, int] | None:
    """The (width, height) with the longer side ``max_side`` and the aspect kept; None when no larger."""
    longer = max(width, height)
    if longer <= max_side:
        return None
    scale = max_side / longer
    if width >= height:
        return max_side, max(1, round(height * scale))
    return max(1, round(width * scale)), max_side


def resize_image(data: bytes, ext: str, max_side: int, quality: int = 90) -> bytes | None:
    """``data`` re-encoded with its longer side at most ``max_side``; None when it already fits (keep the bytes).

    Raises whatever the decoder raises for data it cannot read (the caller counts it as corrupt).
    """
    from PIL import Image

    from catlip.data.images import decode_rgb

    img = decode_rgb(data)  # also the corrupt-image check, for every image: what the loader would skip
    size = target_size(img.width, img.height, max_side)
    if size is None:
        return None
    with Image.open(io.BytesIO(data)) as src:  # header only: the source's format and metadata
        fmt = _ENCODERS.get(src.format or "", _BY_EXT.get(ext.rsplit(".", 1)[-1], "PNG"))
        meta = {k: src.info[k] for k in ("icc_profile", "exif") if src.info.get(k)}
    # reducing_gap: an integer box reduction first, then Lanczos from >= 3x the target (fast, same quality)
    small = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _encode(small, fmt, quality, meta)


def _encode(img, fmt: str, quality: int, meta: dict[str, Any]) -> bytes:
    options: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
    buf = io.BytesIO()
    try:
        img.save(buf, fmt, **options, **meta)
    except (ValueError, OSError):
        # an EXIF block too long for a JPEG APP1 segment, or a profile the encoder refuses: drop the metadata
        buf = io.BytesIO()
        img.save(buf, fmt, **options)
    return buf.getvalue()


# ---------------------------------------------------------------------- one shard


def _write_mode(name: str) -> str:
    return "w:gz" if name.lower().endswith((".tar.gz", ".tgz")) else "w"


def _copy_info(member: tarfile.TarInfo, size: int) -> tarfile.TarInfo:
    info = copy.copy(member)
    info.size = size
    # a pax "size" record (members over 8 GiB) would override the new size in the written header
    info.pax_headers = {k: v for k, v in member.pax_headers.items() if k != "size"}
    return info


def _rewrite(src: Path, tmp: Path, max_side: int, quality: int, result: ShardResult) -> None:
    """Stream ``src`` member by member into ``tmp`` (same names, order and metadata), resizing images."""
    with tarfile.open(src, "r|*") as tin, tarfile.open(tmp, _write_mode(src.name)) as tout:
        for member in tin:
            result.members += 1
            if not member.isfile():
                tout.addfile(_copy_info(member, member.size))
                continue
            data = tin.extractfile(member).read()
            split = formats.split_member(member.name)
            if split is not None and split[1] in IMAGE_EXTS:
                data = _resized_member(data, split[1], member.name, max_side, quality, result)
            tout.addfile(_copy_info(member, len(data)), io.BytesIO(data))


def _resized_member(data: bytes, ext: str, name: str, max_side: int, quality: int, result: ShardResult) -> bytes:
    result.images += 1
    try:
        new = resize_image(data, ext, max_side, quality)
    except Exception:  # noqa: BLE001 - Pillow raises many types for corrupt files; all mean "keep it as it is"
        result.corrupt += 1
        if len(result.corrupt_members) < MAX_LISTED:
            result.corrupt_members.append(name)
        return data
    if new is None:
        result.unchanged += 1
        return data
    result.resized += 1
    return new


def resize_shard(src: str | Path, out_dir: str | Path, max_side: int, quality: int = 90) -> ShardResult:
    """Rewrite one shard into ``out_dir/<its name>`` (atomically: a temporary name, then a rename)."""
    src, out_dir = Path(src), Path(out_dir)
    t0 = time.perf_counter()
    result = ShardResult(shard=src.name, source=str(src))
    tmp = out_dir / f".{src.name}.tmp-{os.getpid()}"
    try:
        result.source_bytes = src.stat().st_size
        _rewrite(src, tmp, max_side, quality, result)
        if src.name.lower().endswith(".tar") and not formats._has_end_marker(src):  # the loader's truncation rule
            raise tarfile.ReadError("truncated: no end-of-archive marker")
        os.replace(tmp, out_dir / src.name)
        result.bytes_out = (out_dir / src.name).stat().st_size
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:  # a damaged source (or a full disk)
        tmp.unlink(missing_ok=True)
        result.error = f"{type(err).__name__}: {err}"
    result.seconds = round(time.perf_counter() - t0, 2)
    return result


def _job(args: tuple[str, str, int, int]) -> ShardResult:
    return resize_shard(*args)


# ---------------------------------------------------------------------- many shards


def shard_inputs(inputs: list[str]) -> list[Path]:
    """Tar shards from paths, globs, brace patterns and folders (a folder's tar files only)."""
    files = [Path(f) for f in formats.expand_inputs(inputs)]
    named = set(inputs)
    shards = [f for f in files if f.name.lower().endswith(formats.TAR_SUFFIXES)]
    others = [str(f) for f in files if f not in shards and str(f) in named]
    if others:
        raise CliError(f"not a tar shard (.tar, .tar.gz, .tgz): {others[0]}")
    if not shards:
        raise CliError(f"no tar shard in {', '.join(inputs)}")
    return shards


def _check(shards: list[Path], out: Path, max_side: int, quality: int, workers: int) -> None:
    if max_side < 1 or workers < 1 or not 1 <= quality <= 100:
        raise CliError("--max-side and --workers must be >= 1 and --quality in 1..100")
    names: dict[str, Path] = {}
    for s in shards:
        if s.name in names:
            raise CliError(f"two shards named {s.name} ({names[s.name]}, {s}): outputs keep the file name")
        names[s.name] = s
        if s.resolve().parent == out.resolve():
            raise CliError(f"--out {out} holds the source shard {s.name}; write to another folder")


def _load_manifest(out: Path, max_side: int, quality: int) -> dict[str, Any]:
    path = out / MANIFEST
    if not path.exists():
        return {"format": FORMAT, "max_side": max_side, "quality": quality, "shards": {}}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CliError(f"{path} is unreadable ({err}); remove it to start over") from None
    if manifest.get("format") != FORMAT:
        raise CliError(f"{path} is not a `catlip shards resize` manifest")
    if (manifest.get("max_side"), manifest.get("quality")) != (max_side, quality):
        raise CliError(f"{out} holds shards resized with --max-side {manifest.get('max_side')} --quality "
                       f"{manifest.get('quality')}; resume with those or write to another --out")
    return manifest


def _save_manifest(out: Path, manifest: dict[str, Any]) -> None:
    rows = [r for r in manifest["shards"].values() if not r.get("error")]
    manifest["totals"] = {k: sum(r[k] for r in rows) for k in
                          ("members", "images", "resized", "unchanged", "corrupt", "source_bytes", "bytes_out")}
    manifest["totals"]["shards"] = len(rows)
    tmp = out / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)


def _done(shard: Path, out: Path, manifest: dict[str, Any]) -> bool:
    row = manifest["shards"].get(shard.name)
    return (row is not None and not row.get("error") and (out / shard.name).exists()
            and row.get("source_bytes") == shard.stat().st_size)


def _remove_stale(out: Path, shards: list[Path]) -> None:
    """Temporaries of an interrupted run (the rename never happened, so they are incomplete)."""
    names = {s.name for s in shards}
    for f in out.glob(".*.tmp-*"):
        if f.name[1:].rsplit(".tmp-", 1)[0] in names:
            f.unlink(missing_ok=True)


def resize_shards(inputs: list[str], out: str | Path, max_side: int, *, quality: int = 90, workers: int = 1,
                  progress: bool = True) -> dict[str, Any]:
    """Rewrite the shards of ``inputs`` into ``out`` (see the module docstring); one process per shard at a time.

    Returns ``{"out", "manifest", "results" (ShardResult rows of this run, by name), "skipped" (names already
    done), "totals" (over every finished shard in the manifest)}``. A shard that fails is in ``results`` with
    its ``error`` and is retried on the next run.
    """
    from catlip.progress import progress_bar

    shards, out = shard_inputs(inputs), Path(out)
    _check(shards, out, max_side, quality, workers)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(out, max_side, quality)
    _remove_stale(out, shards)
    todo = [s for s in shards if not _done(s, out, manifest)]
    skipped = [s.name for s in shards if s not in todo]
    jobs = [(str(s), str(out), max_side, quality) for s in todo]
    results: list[ShardResult] = []
    pool = multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) if workers > 1 and len(jobs) > 1 else None
    try:
        done = pool.imap_unordered(_job, jobs) if pool else map(_job, jobs)
        bar = progress_bar(total=len(jobs), unit="shard", desc="resize", disable=not progress)
        for result in done:
            results.append(result)
            manifest["shards"][result.shard] = asdict(result)
            _save_manifest(out, manifest)  # after every shard: an interrupted run resumes from here
            bar.update(1)
            bar.set_postfix(images=sum(r.images for r in results), corrupt=sum(r.corrupt for r in results))
        bar.close()
    finally:
        if pool is not None:
            pool.terminate()
    if not jobs:
        _save_manifest(out, manifest)
    return {"out": str(out), "manifest": str(out / MANIFEST), "results": sorted(results, key=lambda r: r.shard),
            "skipped": skipped, "totals": manifest["totals"]}


def report(summary: dict[str, Any], max_lines: int = 50) -> str:
    """Human-readable lines: one per shard of this run (only those with problems beyond ``max_lines``), totals."""
    results = summary["results"]
    shown = results if len(results) <= max_lines else [r for r in results if r.corrupt or r.error]
    lines = [_shard_line(r) for r in shown]
    if len(shown) < len(results):
        lines.append(f"({len(results) - len(shown)} more shards without corrupt images; see {summary['manifest']})")
    t, failed = summary["totals"], [r for r in results if r.error]
    lines.append(f"{len(results) - len(failed)} shard(s) written to {summary['out']}, {len(summary['skipped'])} "
                 f"already done, {len(failed)} failed; in all {t['shards']} shard(s): {t['images']:,} images, "
                 f"{t['resized']:,} resized, {t['unchanged']:,} already small enough, {t['corrupt']:,} corrupt "
                 f"(kept unchanged); {_mb(t['source_bytes'])} -> {_mb(t['bytes_out'])}; manifest {summary['manifest']}")
    return "\n".join(lines)


def _shard_line(r: ShardResult) -> str:
    if r.error:
        return f"{r.shard}: error: {r.error} (no output written; retried on the next run)"
    return (f"{r.shard}: {r.members:,} members, {r.images:,} images: {r.resized:,} resized, {r.unchanged:,} already "
            f"small enough, {r.corrupt:,} corrupt (kept unchanged); {_mb(r.source_bytes)} -> {_mb(r.bytes_out)} "
            f"in {r.seconds:.1f} s")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
