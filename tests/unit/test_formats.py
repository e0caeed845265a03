"""The one reader of the data formats (catlip.data.formats) and its three consumers.

Every format is built here with Pillow and read (1) by the reader itself, (2) as caption stream of vocabularies
(catlip.labels.corpus), (3) as training source (catlip.data.sources) and (4) as evaluation set
(catlip.evaluate.common.datasets), wherever that consumer supports the format; all must give the same samples in the
same order. Images are one flat colour each, so a sample is recognised by its pixel.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from catlip.data import formats, sources, transforms
from catlip.data.sources import FolderSource, ManifestSource, TarShardSource
from catlip.evaluate.common import datasets
from catlip.evaluate.common.datasets import ClassList, open_labelled
from catlip.labels import corpus
from catlip.labels.corpus import ReadStats, expand_inputs, iter_captions

CLASSES = ["cat", "dog"]
N = 6


def colour(i: int) -> tuple[int, int, int]:
    return (20 + 30 * i, 100, 200 - 25 * i)


def caption(i: int) -> str:
    return f"a {CLASSES[i % 2]} number {i} on a coloured square"


def label(i: int) -> str:
    return CLASSES[i % 2]


EXPECTED = [(colour(i), caption(i), label(i)) for i in range(N)]


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (9, 7), colour(i)).save(buf, format="PNG")
    return buf.getvalue()


def pixel(image) -> tuple[int, int, int]:
    if isinstance(image, (bytes, bytearray)):
        image = Image.open(io.BytesIO(image))
    return image.convert("RGB").getpixel((0, 0))


def write_shard(path: Path, indices) -> Path:
    with tarfile.open(path, "w") as tar:
        for i in indices:
            for ext, data in (("png", png(i)), ("txt", caption(i).encode()), ("cls", str(i % 2).encode()),
                              ("json", json.dumps({"labels": [label(i)]}).encode())):
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def write_images(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(N):
        (folder / f"{i:03d}.png").write_bytes(png(i))
        names.append(f"img/{i:03d}.png")
    return names


# ---------------------------------------------------------------------- the consumers


def corpus_captions(files: list[str], column: str | None = None) -> list[str]:
    stats = ReadStats()
    out = [caps[0] for f in expand_inputs(files) for caps in iter_captions(f, column=column, stats=stats)]
    assert stats.skipped == 0 and stats.uncaptioned == 0
    return out


def source_samples(source) -> list[tuple]:
    out = []
    for i in range(len(source)):
        image, caps, _ = source.read(i)
        out.append((pixel(image), caps[0]))
    assert not source.index_skips
    return out


def eval_samples(spec, multilabel: bool = False) -> list[tuple]:
    data = open_labelled(spec, ClassList(CLASSES), transform=None, multilabel=multilabel)
    ds = data.dataset
    items = [ds[i] for i in range(len(ds))] if hasattr(ds, "__len__") else list(ds)
    out = []
    for image, target in items:
        assert image is not None
        if multilabel:
            target = [CLASSES[k] for k, v in enumerate(target.tolist()) if v]
            out.append((pixel(image), target))
        else:
            out.append((pixel(image), CLASSES[target]))
    return out


def reader_tar(paths: list[Path]) -> list[tuple]:
    """The reader itself: colour, caption and class of each shard sample."""
    out = []
    for path in paths:
        scan = formats.TarScan(path, read=lambda ext: True)
        for sample in scan:
            caps, problems = formats.member_captions({"txt": sample.data["txt"]})
            assert not problems
            out.append((pixel(sample.data["png"]), caps[0], CLASSES[int(formats.cls_label(sample.data["cls"]))]))
        assert scan.damage is None
    return out


# ---------------------------------------------------------------------- tar shards


def test_tar_shard_through_every_consumer(tmp_path):
    shard = write_shard(tmp_path / "d-000.tar", range(N))
    assert reader_tar([shard]) == EXPECTED
    assert corpus_captions([str(shard)]) == [c for _, c, _ in EXPECTED]
    src = TarShardSource(str(shard), image_exts=["png"], caption_exts=["txt"], stats=Counter(), cache_dir=tmp_path)
    assert source_samples(src) == [(p, c) for p, c, _ in EXPECTED]
    assert eval_samples(str(shard)) == [(p, lab) for p, _, lab in EXPECTED]
    assert eval_samples(str(shard), multilabel=True) == [(p, [lab]) for p, _, lab in EXPECTED]


def test_brace_pattern_over_two_shards_through_every_consumer(tmp_path):
    write_shard(tmp_path / "d-000.tar", range(0, 3))
    write_shard(tmp_path / "d-001.tar", range(3, N))
    pattern = str(tmp_path / "d-{000..001}.tar")
    assert formats.expand_urls(pattern) == [str(tmp_path / "d-000.tar"), str(tmp_path / "d-001.tar")]
    assert reader_tar([Path(u) for u in formats.expand_urls(pattern)]) == EXPECTED
    assert corpus_captions([pattern]) == [c for _, c, _ in EXPECTED]
    src = TarShardSource(pattern, image_exts=["png"], caption_exts=["txt"], stats=Counter(), cache_dir=tmp_path)
    assert source_samples(src) == [(p, c) for p, c, _ in EXPECTED]
    assert eval_samples(pattern) == [(p, lab) for p, _, lab in EXPECTED]


def test_remote_shard_goes_through_the_local_cache(tmp_path, monkeypatch):
    """A URL webdataset.gopen opens (here pipe:) is copied once into the shard cache, then read like a file."""
    shard = write_shard(tmp_path / "d-000.tar", range(N))
    cache = tmp_path / "cache"
    monkeypatch.setenv("CATLIP_SHARD_CACHE", str(cache))
    url = f"pipe:cat {shard}"
    local = formats.local_shard(url, formats.default_shard_cache())
    assert local.parent == cache and local.read_bytes() == shard.read_bytes()
    assert formats.local_shard(str(shard), cache) == shard  # local paths are used in place
    src = TarShardSource(url, image_exts=["png"], caption_exts=["txt"], stats=Counter(), cache_dir=cache)
    assert source_samples(src) == [(p, c) for p, c, _ in EXPECTED]
    assert eval_samples(url, multilabel=True) == [(p, [lab]) for p, _, lab in EXPECTED]


def test_tar_members_of_one_key_group_over_the_whole_shard(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in [("a.jpg", b"1"), ("dir/b.JPG", b"2"), ("a.txt", b"x"), ("noext", b"3")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    samples = list(formats.TarScan(path, read=lambda ext: ext == "txt"))
    assert [(s.key, list(s.members), s.data) for s in samples] == [("a", ["jpg", "txt"], {"txt": b"x"}),
                                                                     ("dir/b", ["jpg"], {})]


# ---------------------------------------------------------------------- manifests


def write_manifest(tmp_path: Path, kind: str) -> Path:
    names = write_images(tmp_path / "img")
    path = tmp_path / f"m.{kind}"
    if kind == "jsonl":
        path.write_text("".join(json.dumps({"image": n, "caption": caption(i), "labels": [label(i)]}) + "\n"
                                for i, n in enumerate(names)))
    else:
        sep = "\t" if kind == "tsv" else ","
        path.write_text(sep.join(["image", "caption", "label"]) + "\n"
                        + "".join(sep.join([n, caption(i), label(i)]) + "\n" for i, n in enumerate(names)))
    return path


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_manifest_through_every_consumer(tmp_path, kind):
    path = write_manifest(tmp_path, kind)
    bad = []
    manifest = formats.read_manifest(path, lambda n, why: bad.append((n, why)))
    rows = list(manifest.records)
    assert not bad and manifest.kind == kind and len(rows) == N
    assert [(pixel(formats.resolve_image(r["image"], path.parent).read_bytes()),
             formats.captions_of(r)[0]) for _, r in rows] == [(p, c) for p, c, _ in EXPECTED]
    column = "caption" if kind == "tsv" else None  # a .tsv without a column is caption text for the corpus
    assert corpus_captions([str(path)], column=column) == [c for _, c, _ in EXPECTED]
    src = ManifestSource(str(path), image_column="image", caption_column="caption", stats=Counter())
    assert source_samples(src) == [(p, c) for p, c, _ in EXPECTED]
    assert eval_samples(path) == [(p, lab) for p, _, lab in EXPECTED]


def test_manifest_image_paths_relative_to_the_manifest_then_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "here.png").write_bytes(png(0))
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "there.png").write_bytes(png(1))
    monkeypatch.chdir(tmp_path / "work")
    root = tmp_path / "data"
    assert formats.resolve_image("here.png", root) == root / "here.png"
    assert formats.resolve_image("there.png", root) == Path.cwd() / "there.png"
    assert formats.resolve_image(str(tmp_path / "x.png"), root) == tmp_path / "x.png"  # absolute: as given
    with pytest.raises(FileNotFoundError, match=r"image 'gone.png' not found \(tried .*data/gone.png, .*work/gone"):
        formats.resolve_image("gone.png", root)


# ---------------------------------------------------------------------- image folders


def test_image_folder_with_sidecar_captions_and_class_per_folder(tmp_path):
    """One layout read both ways: training reads the sidecar captions, evaluation the class of each sub-folder."""
    for i in range(N):
        folder = tmp_path / label(i)
        folder.mkdir(exist_ok=True)
        (folder / f"{i:03d}.png").write_bytes(png(i))
        (folder / f"{i:03d}.txt").write_text(f"  {caption(i)}\n\n")
    order = sorted(range(N), key=lambda i: (label(i), i))  # class folders in name order, files sorted in each
    expected = [EXPECTED[i] for i in order]
    listed = formats.caption_folder(tmp_path)
    assert [(pixel(img.read_bytes()), formats.read_sidecar(txt)[0]) for img, txt in listed] == \
        [(p, c) for p, c, _ in expected]
    assert [(name, [pixel(f.read_bytes()) for f in files]) for name, files in formats.class_folders(tmp_path)] == \
        [(name, [p for p, _, lab in expected if lab == name]) for name in CLASSES]
    assert source_samples(FolderSource(str(tmp_path), Counter())) == [(p, c) for p, c, _ in expected]
    assert eval_samples(tmp_path) == [(p, lab) for p, _, lab in expected]


# ---------------------------------------------------------------------- one definition of each rule


def test_consumers_share_the_rules_of_the_one_reader():
    for name in ("caption_fields", "captions_of", "member_captions", "read_table", "clean_captions",
                 "caption_column_index", "no_caption_reason", "expand_inputs", "caption_rule_text"):
        assert getattr(corpus, name) is getattr(formats, name), name
    for name in ("caption_fields", "captions_of", "member_captions", "read_table", "clean_captions"):
        assert getattr(sources, name) is getattr(formats, name), name
    assert datasets.IMAGE_EXTENSIONS is formats.IMAGE_EXTENSIONS and sources.IMAGE_EXTS is formats.IMAGE_EXTENSIONS


def test_the_reader_and_the_labels_stage_import_no_torch():
    code = ("import sys, catlip.data.formats, catlip.labels.corpus; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------- one module of transforms


def test_evaluation_transforms_are_the_data_transforms_and_match_the_export():
    from torchvision import transforms as T

    from catlip.models.export import preprocessing

    assert datasets.eval_transform is transforms.eval_transform
    assert datasets.train_transform is transforms.finetune_transform
    cfg = preprocessing(24)
    ops = transforms.eval_transform(24).transforms
    resize, crop, norm = ops[0], ops[1], ops[-1]
    assert isinstance(resize, T.Resize) and resize.size == 24  # the shorter side (crop_pct 1.0)
    assert resize.interpolation.value == cfg["interpolation"] == "bilinear"
    assert isinstance(crop, T.CenterCrop) and tuple(crop.size) == cfg["input_size"][1:] and cfg["crop_mode"] == "center"
    assert cfg["crop_pct"] == 1.0
    assert tuple(norm.mean) == cfg["mean"] and tuple(norm.std) == cfg["std"]
    out = transforms.eval_transform(24)(Image.new("RGB", (50, 30), (255, 0, 0)))
    assert tuple(out.shape) == (3, 24, 24)
    train = transforms.finetune_transform(16)(Image.new("RGB", (40, 20)))
    assert tuple(train.shape) == (3, 16, 16)
