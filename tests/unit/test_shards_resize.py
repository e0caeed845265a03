"""`catlip shards resize`: images scaled to a maximum side, everything else byte for byte, resumable."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catlip.cli import main
from catlip.data.resize import MANIFEST, resize_image, resize_shards, target_size
from catlip.errors import CliError

from shards import write_tar  # tests/shards.py


def encoded(fmt: str, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    img = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def sample_members(seed: int = 0) -> list[tuple[str, bytes]]:
    return [
        ("a.jpg", encoded("JPEG", (200, 100), seed=seed)),  # landscape: 64 x 32
        ("a.txt", b"a dog on a beach\n"),
        ("a.json", b'{"captions": ["a dog on a beach"]}'),
        ("b.png", encoded("PNG", (50, 300), "RGBA", seed)),  # portrait PNG: 11 x 64, stays PNG
        ("b.txt", b"a tall thing"),
        ("c.jpg", b"\xff\xd8\xff\xe0 not really a jpeg"),  # corrupt: counted, copied unchanged
        ("c.txt", b"broken"),
        ("d.jpg", encoded("JPEG", (30, 20), seed=seed)),  # already small: copied unchanged
        ("e.seg.png", encoded("PNG", (200, 200), "L", seed)),  # a mask, not an image member: untouched
        ("e.jpg", encoded("JPEG", (64, 64), seed=seed)),  # exactly the maximum: unchanged
        ("notes", b"a member without an extension"),
    ]


def members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_target_size_keeps_the_aspect_and_never_upscales():
    assert target_size(200, 100, 64) == (64, 32)
    assert target_size(50, 300, 64) == (11, 64)
    assert target_size(64, 10, 64) is None and target_size(20, 30, 64) is None
    assert target_size(10_000, 1, 64) == (64, 1)  # never a zero side
    assert resize_image(encoded("JPEG", (30, 20)), "jpg", 64) is None


def test_images_resized_everything_else_byte_identical_in_order(tmp_path):
    src = write_tar(tmp_path / "shard-000.tar", sample_members())
    summary = resize_shards([str(src)], tmp_path / "out", 64, quality=85, progress=False)
    before, after = members(src), members(tmp_path / "out" / "shard-000.tar")
    assert [n for n, _ in after] == [n for n, _ in before]  # same member names, same order
    changed = {n for (n, a), (_, b) in zip(before, after) if a != b}
    assert changed == {"a.jpg", "b.png"}
    out = dict(after)
    with Image.open(io.BytesIO(out["a.jpg"])) as img:
        assert (img.format, img.size, img.mode) == ("JPEG", (64, 32), "RGB")
    with Image.open(io.BytesIO(out["b.png"])) as img:
        assert (img.format, img.size) == ("PNG", (11, 64))
    (r,) = summary["results"]
    assert (r.members, r.images, r.resized, r.unchanged, r.corrupt) == (11, 5, 2, 2, 1)
    assert r.corrupt_members == ["c.jpg"] and r.error is None
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest["shards"]["shard-000.tar"]["corrupt"] == 1 and manifest["totals"]["corrupt"] == 1
    assert (manifest["max_side"], manifest["quality"]) == (64, 85)


def test_resume_skips_finished_shards_and_redoes_the_rest(tmp_path):
    srcs = [write_tar(tmp_path / f"shard-{i:03d}.tar", sample_members(seed=i)) for i in range(3)]
    out = tmp_path / "out"
    first = resize_shards([str(tmp_path / "shard-{000..002}.tar")], out, 64, workers=2, progress=False)
    assert [r.shard for r in first["results"]] == [s.name for s in srcs] and not first["skipped"]
    stamp = {s.name: (out / s.name).stat().st_mtime_ns for s in srcs}
    # an interrupted run: one output lost, one temporary left behind
    (out / "shard-001.tar").unlink()
    (out / ".shard-002.tar.tmp-99999").write_bytes(b"half a shard")
    again = resize_shards([str(s) for s in srcs], out, 64, progress=False)
    assert [r.shard for r in again["results"]] == ["shard-001.tar"]
    assert again["skipped"] == ["shard-000.tar", "shard-002.tar"]
    assert (out / "shard-002.tar").stat().st_mtime_ns == stamp["shard-002.tar"]
    assert not list(out.glob(".*tmp*"))
    assert members(out / "shard-001.tar")[1:3] == members(srcs[1])[1:3]
    assert again["totals"]["shards"] == 3 and again["totals"]["corrupt"] == 3
    with pytest.raises(CliError, match="--max-side 64 --quality 90"):
        resize_shards([str(s) for s in srcs], out, 32, progress=False)


def test_a_damaged_shard_is_reported_and_written_nowhere(tmp_path, capsys):
    good = write_tar(tmp_path / "good.tar", sample_members())
    data = good.read_bytes()
    (tmp_path / "bad.tar").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code = main(["shards", "resize", str(good), str(tmp_path / "bad.tar"), "--out", str(out), "--max-side", "64",
                 "--no-progress"])
    text = capsys.readouterr().out
    assert code == 1 and "bad.tar: error:" in text and "good.tar: 11 members" in text
    assert (out / "good.tar").exists() and not (out / "bad.tar").exists()
    assert json.loads((out / MANIFEST).read_text())["shards"]["bad.tar"]["error"]


def test_usage_errors_are_one_line(tmp_path, capsys):
    src = write_tar(tmp_path / "s.tar", sample_members())
    for argv in (["--out", str(tmp_path)], ["--out", str(tmp_path / "o"), "--quality", "0"]):
        assert main(["shards", "resize", str(src), "--max-side", "64", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("catlip shards: error:") and err.count("\n") == 1, err


def test_flickr8k_dev_shard(shared_data, tmp_path, capsys):
    src = shared_data / "flickr8k" / "flickr8k-dev-000.tar"
    if not src.exists():
        pytest.skip(f"{src} is absent")
    out = tmp_path / "out"
    assert main(["shards", "resize", str(src), "--out", str(out), "--max-side", "64", "--no-progress"]) == 0
    assert "flickr8k-dev-000.tar: 3,000 members, 1,000 images: 1,000 resized" in capsys.readouterr().out
    before, after = members(src), members(out / src.name)
    assert [n for n, _ in after] == [n for n, _ in before]
    for (name, a), (_, b) in zip(before, after):
        if name.endswith(".jpg"):
            with Image.open(io.BytesIO(b)) as img:
                assert max(img.size) == 64 and img.format == "JPEG"
        else:
            assert a == b, name
    # a second run finds the shard done
    assert main(["shards", "resize", str(src), "--out", str(out), "--max-side", "64", "--no-progress"]) == 0
    assert "0 shard(s) written" in capsys.readouterr().out and os.path.getsize(out / src.name) > 0
