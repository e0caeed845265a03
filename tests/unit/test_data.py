"""Data: synthetic set, sources, skip counting of bad samples, the pure (seed, epoch) order and its resume."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections import Counter

import pytest
import torch
from PIL import Image

from catlip.config import load_config
from catlip.data import build_train_loader
from catlip.data.sampler import BatchPlan
from catlip.data.synthetic import OBJECTS, synthetic_captions, synthetic_sample
from catlip.errors import DataError


def _cfg(*overrides):
    return load_config(None, ["model.image_size=32", "data.batch_size=4", "data.num_workers=0",
                              "data.synthetic_size=40", *overrides])


class CharVocab:
    """Stand-in vocabulary: label ids are the positions of a few known words (extractor from catlip.labels)."""

    method, options = "catlip", {}

    def __init__(self, keys):
        self.keys = list(keys)
        self.hash = "stub" + str(len(self.keys))

    def __len__(self):
        return len(self.keys)

    def encode(self, keys):
        return [self.keys.index(k) for k in keys if k in self.keys]

    def extractor(self):  # the loader asks its vocabulary for the extractor, as catlip.labels.Vocabulary answers
        from catlip.labels import get_extractor

        return get_extractor(self.method, **self.options)


def _jpeg(color=(200, 10, 10), size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_synthetic_is_deterministic_and_captions_name_the_object():
    a, b = synthetic_sample(7, seed=3, image_size=48), synthetic_sample(7, seed=3, image_size=48)
    assert a.captions == b.captions and a.label == b.label
    assert a.image.tobytes() == b.image.tobytes()
    assert synthetic_sample(7, seed=4).captions != a.captions or synthetic_sample(7, seed=4).label != a.label
    labels = Counter()
    for i in range(200):
        s = synthetic_sample(i, seed=0, image_size=16)
        assert OBJECTS[s.label] in s.captions[0].split()
        labels[s.label] += 1
    assert len(labels) == len(OBJECTS) and min(labels.values()) > 5
    # captions do not depend on the image size (the vocabulary is built from tiny renders)
    assert next(synthetic_captions(1, seed=0)) == synthetic_sample(0, 0, 64).captions


def test_plan_is_pure_split_across_ranks_and_resumable():
    plan = BatchPlan(50, 4, seed=1, image_size=32, world_size=2, rank=0)
    other = BatchPlan(50, 4, seed=1, image_size=32, world_size=2, rank=1)
    assert torch.equal(plan.permutation(3), BatchPlan(50, 4, seed=1, image_size=32).permutation(3))
    assert not torch.equal(plan.permutation(0), plan.permutation(1))
    a, b = plan.iter_from(0), other.iter_from(0)
    seen = []
    for _ in range(6):  # one epoch = 6 global batches of 8 (2 of 50 dropped)
        x, y = next(a), next(b)
        assert not set(x.indices) & set(y.indices) and x.samples_after == y.samples_after
        seen += x.indices + y.indices
    assert len(set(seen)) == 48 and next(a).epoch == 1
    full = plan.iter_from(0)
    ref = [next(full) for _ in range(9)]
    resumed = plan.iter_from(ref[3].samples_after)  # mid-epoch
    assert [next(resumed) for _ in range(5)] == ref[4:9]
    with pytest.raises(DataError, match="batch boundary"):
        next(plan.iter_from(5))


def test_multiscale_keeps_pixels_per_batch_roughly_constant():
    plan = BatchPlan(5000, 16, seed=0, image_size=64, multiscale_sizes=[32, 48, 64, 96])
    specs = [next(s) for s in [plan.iter_from(0)] for _ in range(40)]
    assert len({s.resolution for s in specs}) == 4
    for s in specs:
        pixels = len(s.indices) * s.resolution**2
        assert 0.8 * 16 * 64**2 <= pixels <= 1.2 * 16 * 64**2


def test_loader_resume_reproduces_the_stream_mid_epoch():
    cfg = _cfg()
    ref_loader = build_train_loader(cfg, None, method_inputs=("image", "text"))
    it = iter(ref_loader)
    ref = [next(it) for _ in range(14)]  # 10 batches per epoch: crosses into epoch 1
    assert ref_loader.epoch == 1 and ref_loader.samples_seen == 56
    resumed = build_train_loader(cfg, None, method_inputs=("image", "text"), start_sample=24)
    got = iter(resumed)
    for want in ref[6:14]:
        b = next(got)
        assert torch.equal(b["image"], want["image"]) and torch.equal(b["text"], want["text"])
    # a new epoch reshuffles and re-draws captions / crops
    assert not torch.equal(ref[0]["class"], ref[10]["class"]) or not torch.equal(ref[0]["image"], ref[10]["image"])


def test_loader_is_independent_of_worker_count():
    cfg = _cfg("data.synthetic_size=24")
    a = iter(build_train_loader(cfg, None, method_inputs=("image",), num_workers=0))
    b = iter(build_train_loader(cfg, None, method_inputs=("image",), num_workers=2))
    for _ in range(5):
        assert torch.equal(next(a)["image"], next(b)["image"])


def test_labels_are_padded_ids_from_the_extractor():
    from catlip.labels import get_extractor

    ex = get_extractor("catlip")
    keys = sorted({k for caps in synthetic_captions(40) for c in caps for k in ex.extract(c)})
    vocab = CharVocab(keys)
    batch = next(iter(build_train_loader(_cfg(), vocab, method_inputs=("image", "label_ids"))))
    ids = batch["label_ids"]
    assert ids.dtype == torch.int64 and ids.shape[0] == 4 and (ids >= -1).all() and (ids < len(keys)).all()
    assert ((ids >= 0).sum(1) >= 1).all()  # every synthetic caption names at least its object
    for row in ids:
        valid = row[row >= 0]
        assert (row[len(valid):] == -1).all()  # padding only at the end


@pytest.fixture
def bad_shard(tmp_path):
    """A shard with 5 good samples and one of each kind of bad sample."""
    path = tmp_path / "shard-000.tar"
    with tarfile.open(path, "w") as tf:
        for i in range(5):
            _add(tf, f"good{i}.jpg", _jpeg((40 * i, 10, 10)))
            _add(tf, f"good{i}.json", json.dumps({"captions": [f"a dog number {i}", "a red ball"]}).encode())
        _add(tf, "trunc.jpg", _jpeg()[:60])
        _add(tf, "trunc.txt", b"a cut image")
        _add(tf, "zero.jpg", b"")
        _add(tf, "zero.txt", b"an empty file")
        _add(tf, "text.jpg", b"this is not an image at all")
        _add(tf, "text.txt", b"a lie")
        _add(tf, "bomb.jpg", _jpeg(size=(300, 300)))
        _add(tf, "bomb.txt", b"a large picture")
        _add(tf, "nocap.jpg", _jpeg())
        _add(tf, "empty.jpg", _jpeg())
        _add(tf, "empty.txt", b"   \n")
    return path


def test_bad_samples_are_skipped_and_counted(bad_shard):
    cfg = _cfg(f"data.train=[{bad_shard}]", "data.batch_size=10", "data.max_image_pixels=20000")
    loader = build_train_loader(cfg, None, method_inputs=("image", "text"))
    batch = next(iter(loader))
    assert len(batch["image"]) == 5
    assert loader.stats == Counter(no_caption=1, corrupt_image=3, decompression_bomb=1, empty_caption=1)


def test_truncated_shard_keeps_the_members_before_the_damage(bad_shard, tmp_path):
    cut = tmp_path / "cut.tar"
    cut.write_bytes(bad_shard.read_bytes()[:4000])
    cfg = _cfg(f"data.train=[{cut}]", "data.batch_size=1")
    loader = build_train_loader(cfg, None, method_inputs=("image",))
    assert loader.stats["truncated_shard"] == 1 and 1 <= len(loader.dataset) < 5


def test_brace_patterns_manifests_and_folders(tmp_path, bad_shard):
    shards = tmp_path / "s"
    shards.mkdir()
    for k in range(2):
        (shards / f"part-{k:03d}.tar").write_bytes(bad_shard.read_bytes())
    rows = [{"image": f"img{i}.png", "caption": f"a cat {i}"} for i in range(3)]
    for i in range(2):
        Image.new("RGB", (10, 10), (i * 90, 0, 0)).save(tmp_path / f"img{i}.png")  # img2.png is missing
    with open(tmp_path / "m.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "caption"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    Image.new("RGB", (10, 10)).save(folder / "a.png")
    (folder / "a.txt").write_text("a black square\na dark image\n")
    Image.new("RGB", (10, 10)).save(folder / "b.png")  # no sidecar caption
    spec = f"['{shards}/part-{{000..001}}.tar', {tmp_path}/m.csv, {tmp_path}/m.jsonl, {folder}]"
    cfg = _cfg(f"data.train={spec}", "data.batch_size=1")
    loader = build_train_loader(cfg, None, method_inputs=("image",))
    assert len(loader.dataset) == 2 * 10 + 3 + 3 + 1
    assert loader.stats == Counter(no_caption=3, bad_manifest_row=1)
    images = 0  # one epoch at batch size 1
    it = iter(loader)
    while loader.samples_seen < len(loader.dataset):
        images += len(next(it)["image"])
    assert images == 2 * 6 + 2 + 2 + 1  # the 300x300 "bomb" is fine under the default pixel limit
    assert loader.stats["missing_file"] == 2 and loader.stats["corrupt_image"] == 6


def test_unreadable_sources_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        build_train_loader(_cfg(f"data.train=[{tmp_path}/nope.csv]"), None, method_inputs=("image",))
    with pytest.raises(DataError, match="shard not found"):
        build_train_loader(_cfg(f"data.train=['{tmp_path}/x-{{0..1}}.tar']"), None, method_inputs=("image",))
    with pytest.raises(DataError, match="fewer than one global batch"):
        build_train_loader(_cfg("data.synthetic_size=3"), None, method_inputs=("image",))


def test_pre_extracted_labels_file_overrides_the_extractor(tmp_path):
    from catlip.labels import get_extractor

    ex = get_extractor("catlip")
    caps = [c for caps in synthetic_captions(8) for c in caps]
    keys = sorted({k for c in caps for k in ex.extract(c)})
    vocab = CharVocab(keys)
    # every caption "labelled" with the single first key: the loader must use the file, not re-extract
    (tmp_path / "labels.jsonl").write_text("\n".join(json.dumps({"caption": c, "labels": [keys[0]]}) for c in caps)
                                           + "\nbroken line\n")
    cfg = _cfg("data.synthetic_size=8", f"data.labels_file={tmp_path}/labels.jsonl")
    ids = next(iter(build_train_loader(cfg, vocab, method_inputs=("image", "label_ids"))))["label_ids"]
    assert ids.tolist() == [[0]] * 4


def test_remote_shards_are_fetched_once_into_the_cache(bad_shard, tmp_path, monkeypatch):
    monkeypatch.setenv("CATLIP_SHARD_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(f"data.train=['pipe:cat {bad_shard}']", "data.batch_size=2", "data.augment=randaugment")
    loader = build_train_loader(cfg, None, method_inputs=("image",))
    assert len(loader.dataset) == 10 and len(list((tmp_path / "cache").iterdir())) == 1
    batch = next(iter(loader))
    assert batch["image"].shape[1:] == (3, 32, 32)
