"""What kind of data a spec names is decided once (catlip.data.specs) for every consumer, and images are decoded
or skipped under one contract (catlip.data.images.decode_or_skip). Issue 22, item 4.

Every kind is recognised from real files made here; every failure has one message, and every consumer refuses a
kind it does not read with the same sentence, naming what was given and what that consumer takes.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from catlip.data import images, loader, sources, specs
from catlip.data.specs import classify, refusal, resolve
from catlip.errors import DataError


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def _shard(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (("a.png", _png()), ("a.txt", b"a green square")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def files(tmp_path, monkeypatch):
    """One real file or folder of each kind, in a working directory of their own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png())
    for name in ("d-000.tar", "d-001.tar", "old.tar.bak"):
        _shard(tmp_path / name)
    for name in ("m.csv", "m.tsv", "m.jsonl", "m.ndjson", "coco.json", "captions.txt", "captions",
                 "notes.target.txt"):
        (tmp_path / name).write_text("image,caption\na.png,a caption\n")
    for name in ("p.png", "P.JPG", "x[1].png"):
        (tmp_path / name).write_bytes(_png())
    (tmp_path / "dir.csv").mkdir()
    return tmp_path


KNOWN = [
    ("synthetic", specs.SYNTHETIC, ()),
    ("imgs", specs.FOLDER, ("imgs",)),
    ("dir.csv", specs.FOLDER, ("dir.csv",)),  # a folder is a folder, whatever its name
    ("d-*.tar", specs.GLOB, ("d-000.tar", "d-001.tar")),
    ("d-000.tar", specs.SHARDS, ("d-000.tar",)),
    ("d-{000..001}.tar", specs.SHARDS, ("d-000.tar", "d-001.tar")),
    ("a.tar::b.tgz", specs.SHARDS, ("a.tar", "b.tgz")),
    ("https://host/s-{0..1}.tar?sig=x", specs.SHARDS, ("https://host/s-0.tar?sig=x", "https://host/s-1.tar?sig=x")),
    ("pipe:cat d-000.tar", specs.SHARDS, ("pipe:cat d-000.tar",)),
    ("m.csv", specs.MANIFEST, ("m.csv",)),
    ("m.tsv", specs.MANIFEST, ("m.tsv",)),
    ("m.jsonl", specs.MANIFEST, ("m.jsonl",)),
    ("m.ndjson", specs.MANIFEST, ("m.ndjson",)),
    ("coco.json", specs.JSON, ("coco.json",)),
    ("p.png", specs.IMAGE, ("p.png",)),
    ("P.JPG", specs.IMAGE, ("P.JPG",)),
    ("x[1].png", specs.IMAGE, ("x[1].png",)),  # an existing file is no glob
    ("captions.txt", specs.CAPTIONS, ("captions.txt",)),
    ("captions", specs.CAPTIONS, ("captions",)),
    ("notes.target.txt", specs.CAPTIONS, ("notes.target.txt",)),  # ".tar" inside a file's name makes no shard
    ("old.tar.bak", specs.CAPTIONS, ("old.tar.bak",)),
]


@pytest.mark.parametrize("spec,kind,paths", KNOWN, ids=[k[0] for k in KNOWN])
def test_each_kind_is_recognised_from_real_files(files, spec, kind, paths):
    found = classify(spec)
    assert (found.spec, found.kind, found.paths) == (spec, kind, paths)
    assert classify(Path(spec)).kind == kind or "://" in spec or spec.startswith("pipe:")


def test_synthetic_counts_and_sizes_and_the_word_wins_over_a_folder(files):
    (files / "synthetic").mkdir()
    assert classify("synthetic") == specs.DataSpec("synthetic", specs.SYNTHETIC)
    assert classify("./synthetic").kind == specs.FOLDER
    assert (classify("synthetic:8").count, classify("synthetic:8").size) == (8, None)
    assert (classify("synthetic:8:32").count, classify("synthetic:8:32").size) == (8, 32)


@pytest.mark.parametrize("spec,message", [
    ("synthetic:x", "'synthetic:x': synthetic data is written synthetic[:N[:SIZE]]"),
    ("synthetic:", "'synthetic:': synthetic data is written synthetic[:N[:SIZE]]"),
    ("synthetic:4:32:1", "'synthetic:4:32:1': synthetic data is written synthetic[:N[:SIZE]]"),
    ("synthetic:0", "'synthetic:0': N must be positive and SIZE at least 16"),
    ("synthetic:4:8", "'synthetic:4:8': N must be positive and SIZE at least 16"),
])
def test_a_malformed_synthetic_spec_is_one_message(spec, message):
    with pytest.raises(DataError) as err:
        classify(spec)
    assert str(err.value) == message


@pytest.mark.parametrize("spec,message", [
    ("gone.csv", "manifest not found: gone.csv"),
    ("gone.tar", "shard not found: gone.tar"),
    ("gone-{0..6}.tar", "shard not found: gone-0.tar, gone-1.tar, gone-2.tar, gone-3.tar, gone-4.tar (+2 more)"),
    ("gone.json", ".json file not found: gone.json"),
    ("gone.png", "image not found: gone.png"),
    ("gone.txt", "caption file not found: gone.txt"),
])
def test_missing_data_is_one_message_per_kind(files, spec, message):
    with pytest.raises(DataError) as err:
        resolve(spec, "test data", [k.name for k in specs.KINDS])
    assert str(err.value) == message


def test_remote_shards_are_checked_when_they_are_fetched_not_before(files):
    found = resolve("https://host/s-{0..1}.tar", "test data", (specs.SHARDS,))
    assert found.paths == ("https://host/s-0.tar", "https://host/s-1.tar")


def test_a_refusal_names_the_spec_what_the_consumer_takes_and_what_it_is(files):
    takes = (specs.FOLDER, specs.MANIFEST, specs.SHARDS)
    with pytest.raises(DataError) as err:
        resolve("captions.txt", "evaluation data", takes)
    assert str(err.value) == ("evaluation data 'captions.txt' is not an image folder, a .csv/.tsv/.jsonl manifest or "
                              ".tar shards (it is a caption text file)")
    with pytest.raises(DataError) as err:
        resolve("nowhere", "evaluation data", takes)
    assert str(err.value).endswith("or .tar shards (not found)")
    assert str(refusal(classify("synthetic"), "tag input", (specs.IMAGE,))) == \
        "tag input 'synthetic' is not an image file (it is the synthetic set)"


# ---------------------------------------------------------------------- every consumer asks the one function


def _train(spec):
    from catlip.config import DataConfig

    return sources.open_sources(DataConfig(train=[spec]), seed=0, stats=Counter())


def _corpus(spec):
    from catlip.labels.corpus import iter_captions

    return list(iter_captions(spec))


def _tag(spec):
    from catlip.evaluate.caption.images import list_images

    return list_images([spec])


def _consumers():
    from catlip.evaluate.caption import images as tagging
    from catlip.evaluate.common import datasets
    from catlip.evaluate.dense import data as dense
    from catlip.labels import corpus

    return [  # (reader, its role in messages, the kinds it takes, a spec of a kind it does not take)
        (_train, "data.train entry", sources.TRAIN_KINDS, "captions.txt"),
        (datasets.open_labelled, "evaluation data", datasets.EVAL_KINDS, "captions.txt"),
        (_corpus, "caption input", corpus.CAPTION_KINDS, "imgs"),
        (_tag, "tag input", tagging.TAG_KINDS, "synthetic"),
        (dense.open_segmentation, "segmentation data", dense.SEGMENT_KINDS, "coco.json"),
        (dense.open_detection, "detection data", dense.DETECT_KINDS, "imgs"),
    ]


def test_every_consumer_refuses_with_the_shared_message(files):
    for read, role, takes, spec in _consumers():
        with pytest.raises(DataError) as err:
            read(spec)
        assert str(err.value) == str(refusal(classify(spec), role, takes)), role


def test_each_consumer_keeps_the_kinds_it_read_before():
    from catlip.evaluate.caption import images as tagging
    from catlip.evaluate.common import datasets
    from catlip.evaluate.dense import data as dense
    from catlip.labels import corpus

    every_file = {specs.CAPTIONS, specs.MANIFEST, specs.JSON, specs.IMAGE}
    assert set(sources.TRAIN_KINDS) == {specs.SYNTHETIC, specs.SHARDS, specs.MANIFEST, specs.FOLDER}
    assert set(datasets.EVAL_KINDS) == {specs.FOLDER, specs.MANIFEST, specs.SHARDS}  # class per sub-folder
    assert set(corpus.CAPTION_KINDS) == every_file | {specs.SHARDS}  # any other file is caption text
    assert set(tagging.TAG_KINDS) == every_file | {specs.FOLDER, specs.GLOB, specs.SHARDS}  # any file tried
    assert set(dense.SEGMENT_KINDS) == {specs.SHARDS, specs.FOLDER, specs.SYNTHETIC}  # ADE20k folders
    assert set(dense.DETECT_KINDS) == {specs.SHARDS, specs.JSON, specs.SYNTHETIC}  # COCO instances .json


def test_training_takes_the_synthetic_size_from_the_config(files):
    with pytest.raises(DataError, match="the synthetic set's size is data.synthetic_size; write 'synthetic'"):
        _train("synthetic:16")


def test_adding_a_kind_is_one_row_of_the_table(files, monkeypatch):
    """A new kind needs a row in specs.KINDS (and its reader in formats): classification, the missing-file message
    and every consumer's refusal pick it up from there."""
    row = specs.Kind("parquet", "a .parquet table", "parquet table", lambda s: s.lower().endswith(".parquet"),
                     check=specs.file_there)
    monkeypatch.setattr(specs, "KINDS", specs.KINDS[:-1] + (row, specs.KINDS[-1]))
    (files / "t.parquet").write_bytes(b"PAR1")
    assert resolve("t.parquet", "test data", ("parquet",)) == specs.DataSpec("t.parquet", "parquet", ("t.parquet",))
    with pytest.raises(DataError, match="^parquet table not found: gone.parquet$"):
        resolve("gone.parquet", "test data", ("parquet",))
    for read, role, takes, _ in _consumers():
        refused = re.escape(f"{role} 't.parquet' is not ") + r".*\(it is a \.parquet table\)$"
        with pytest.raises(DataError, match=refused):
            read("t.parquet")


# ---------------------------------------------------------------------- one decode-or-skip contract


def test_decode_or_skip_returns_the_image_or_a_named_reason(tmp_path, monkeypatch):
    img = images.decode_or_skip(_png())
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (6, 4)
    bad = images.decode_or_skip(b"not an image")
    assert isinstance(bad, images.Skip) and bad == "corrupt_image"
    assert bad.error.startswith("UnidentifiedImageError: ") and "0x" not in bad.error
    missing = images.decode_or_skip(tmp_path / "gone.png")
    assert missing == "missing_file" and "gone.png" in missing.error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # max_pixels sets it process-wide
    assert images.decode_or_skip(_png(), max_pixels=10) == "decompression_bomb"
    assert images.read_skip(FileNotFoundError("image 'x' not found")) == "missing_file"
    assert images.read_skip(OSError("member truncated")).error == "OSError: member truncated"


def test_every_reader_of_images_uses_the_one_contract(tmp_path):
    from catlip.evaluate.common.datasets import decode_image
    from catlip.evaluate.caption.images import IndexedImages

    assert loader.decode_or_skip is images.decode_or_skip  # training and LiT's feature cache
    assert decode_image(b"not an image") is None  # evaluation items: (None, target)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    ds = IndexedImages([str(tmp_path / "bad.png")], lambda p: p, lambda x: x)
    assert ds[0] == (None, 0) and ds.error(0) == images.decode_or_skip(str(tmp_path / "bad.png")).error
    gone = IndexedImages(["x"], lambda _: (_ for _ in ()).throw(OSError("member truncated")), lambda x: x)
    assert gone[0] == (None, 0) and gone.error(0) == "OSError: member truncated"
    package = Path(images.__file__).parents[1]
    callers = {str(p.relative_to(package)) for p in package.rglob("*.py") if "decode_rgb(" in p.read_text()}
    # data/loader.py: decode_image, the raising form; data/resize.py keeps an undecodable image as it is
    assert callers == {"data/images.py", "data/loader.py", "data/resize.py"}
