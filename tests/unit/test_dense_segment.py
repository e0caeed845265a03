"""catlip segment: DeepLabv3 over-fits a small synthetic batch, resume is exact, bad input is counted or one line,
recipes load, ADE20k folders and coco128-style shards are read."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from catlip.errors import CatlipError, CheckpointError, DataError
from catlip.evaluate.dense import loop
from catlip.evaluate.dense.data import (IGNORE, DenseDataset, collate_seg, open_segmentation, seg_eval_transform,
                                        seg_train_transform)
from catlip.evaluate.dense.segment import _loss, evaluate_segmenter, load_segment_config, run_segment
from catlip.models.dense import Segmenter

TINY = """
model:
  backbone: vit_tiny_patch16_224
  backbone_kwargs: {patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}
  image_size: 64
"""
FAST = ["num_workers=0", "weight_decay=0", "head_channels=16", "scale_min=1", "scale_max=1"]


@pytest.fixture
def tiny_recipe(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return f"random:{path}"


@pytest.mark.slow
def test_head_overfits_a_small_batch(tiny_recipe):
    """Four one-object scenes: DeepLabv3 on a random tiny ViT reaches mIoU >= 0.9 on them."""
    from catlip.data.synthetic import synthetic_sample
    from catlip.evaluate.common.model import load_eval_model

    torch.set_num_threads(1)
    data = open_segmentation("synthetic:40:64", seed=0)
    data.records = [r for r in data.records if len(synthetic_sample(r.image[1], 0, 8).objects) == 1][:4]
    cfg = load_segment_config(None, ["batch_size=4", "image_size=64", "epochs=200", "lr=0.01", "min_lr=0.0001",
                                     "warmup_epochs=5", "head_channels=32", *FAST])
    torch.manual_seed(0)
    backbone = load_eval_model(tiny_recipe).backbone
    model = Segmenter(backbone, data.num_classes, cfg.atrous_rates, cfg.head_channels)
    job = loop.Job(model, backbone, DenseDataset(data, seg_train_transform(64, (1, 1))), collate_seg, _loss, None, {})
    loop.train(job, cfg, progress=False)
    m = evaluate_segmenter(model, data, cfg, torch.device("cpu"))
    assert m["test_images"] == 4 and m["mIoU"] >= 0.9, m


def _run(recipe, run_dir, **kw):
    return run_segment(recipe, "synthetic:6:32", holdout_n=2, run_dir=str(run_dir), progress=False,
                       overrides=["epochs=3", "batch_size=2", "image_size=32", "lr=0.003", *FAST], **kw)


def test_resume_is_exact(tiny_recipe, tmp_path, monkeypatch):
    straight = _run(tiny_recipe, tmp_path / "a")
    save = loop._save

    def save_then_stop(run_dir, step, model, opt, state, job):
        save(run_dir, step, model, opt, state, job)
        if state["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after the checkpoint of epoch 2

    monkeypatch.setattr(loop, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_recipe, tmp_path / "b")
    monkeypatch.setattr(loop, "_save", save)
    resumed = _run(tiny_recipe, tmp_path / "b")
    assert resumed["history"] == straight["history"] and len(resumed["history"]) == 3
    a, b = straight["model"].state_dict(), resumed["model"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # another recipe in the same run dir is refused, not mixed in
    with pytest.raises(CheckpointError, match="other settings"):
        run_segment(tiny_recipe, "synthetic:6:32", holdout_n=2, run_dir=str(tmp_path / "b"), progress=False,
                    overrides=["epochs=3", "batch_size=2", "image_size=32", "lr=0.01", *FAST])


def test_recipes_load():
    from catlip.evaluate.dense.detect import load_detect_config

    seg = load_segment_config("configs/segment_ade20k_vit_b16.yaml")
    assert (seg.image_size, seg.epochs, seg.lr, seg.min_lr, seg.weight_decay, seg.atrous_rates) == \
        (512, 50, 3e-5, 3e-6, 0.1, [12, 24, 36])
    det = load_detect_config("configs/detect_coco_maskrcnn_vit_b16.yaml")
    assert (det.image_size, det.layer_decay, det.epochs, det.lr_steps, det.schedule, det.drop_path) == \
        (1024, 0.7, 25, [22, 24], "multistep", 0.1)
    with pytest.raises(CatlipError, match="unknown key"):
        load_segment_config("configs/segment_ade20k_vit_b16.yaml", ["atrous=1"])
    with pytest.raises(CatlipError, match="batch_size"):
        load_segment_config(None, ["batch_size=1"])


# ---------------------------------------------------------------- data formats and bad input


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _jpg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 80, 40)).save(buf, format="JPEG")
    return buf.getvalue()


def _shard(path, samples: dict[str, dict[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_bad_masks_are_counted(tmp_path):
    mask = np.zeros((16, 24), dtype=np.uint8)
    mask[:8] = 3
    odd = mask.copy()
    odd[8:, :4] = 99  # 32 pixels of an id not in the class list
    _shard(tmp_path / "seg-000.tar", {
        "good": {"jpg": _jpg(24, 16), "seg.png": _png(mask)},
        "odd_ids": {"jpg": _jpg(24, 16), "seg.png": _png(odd)},
        "wrong_size": {"jpg": _jpg(24, 16), "seg.png": _png(np.zeros((10, 10)))},
        "no_mask": {"jpg": _jpg(24, 16)},
        "broken": {"jpg": b"not a jpeg", "seg.png": _png(mask)},
    })
    (tmp_path / "classes.json").write_text(json.dumps({"segmentation": {"0": "unlabeled", "3": "cat", "7": "dog"}}))
    data = open_segmentation(str(tmp_path / "seg-000.tar"))
    assert data.names == ["cat", "dog"] and len(data) == 4 and data.skipped == {"no .seg.png member": 1}
    ds = DenseDataset(data, seg_eval_transform(16))
    batch = collate_seg([ds[i] for i in range(len(ds))])
    assert batch["skipped"] == 2 and batch["image"].shape == (2, 3, 32, 32) and batch["notes"] == {
        "masks of another size than their image": 1, "unreadable images": 1,
        "pixels with ids outside the class list": 32, "masks with ids outside the class list": 1}
    good = ds[0][1]
    assert good[:8].eq(0).all() and good[8:].eq(IGNORE).all()  # id 3 -> class 0, id 0 -> ignored


def test_a_class_list_matching_nothing_is_one_line(tmp_path, capsys):
    from catlip.cli import main

    _shard(tmp_path / "seg-000.tar", {"a": {"jpg": _jpg(8, 8), "seg.png": _png(np.full((8, 8), 5))}})
    (tmp_path / "classes.txt").write_text("wall\nfloor\n")  # ids 1 and 2
    with pytest.raises(DataError, match="matches none of the mask ids"):
        open_segmentation(str(tmp_path / "seg-000.tar"))
    assert main(["segment", "random:vit_tiny_patch16_224", "--train", str(tmp_path / "seg-000.tar"),
                 "--no-progress", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matches none of the mask ids" in err[0]
    assert main(["segment", "random:vit_tiny_patch16_224", "--train", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_ade20k_folder_layout(tmp_path):
    root = tmp_path / "ADE"
    (root / "images" / "training").mkdir(parents=True)
    (root / "annotations" / "training").mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (12, 10)).save(root / "images" / "training" / f"{name}.jpg")
    for name in ("a", "b"):  # c has no annotation: skipped and counted
        Image.fromarray(np.full((10, 12), 2, dtype=np.uint8)).save(root / "annotations" / "training" / f"{name}.png")
    (tmp_path / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall\n2,0.1,1,1,building;edifice\n")
    data = open_segmentation(str(root / "images" / "training"), str(tmp_path / "objectInfo150.csv"))
    assert data.names == ["wall", "building"] and [r.key for r in data.records] == ["a", "b"]
    assert data.skipped == {"no mask file": 1}
    assert DenseDataset(data)[0][1].eq(1).all()
    (root / "images" / "validation").mkdir()  # no annotations/validation beside it
    with pytest.raises(DataError, match="annotation folder"):
        open_segmentation(str(root / "images" / "validation"), str(tmp_path / "objectInfo150.csv"))


def test_coco128_shard(shared_data):
    data = open_segmentation(str(shared_data / "coco128" / "coco128-train-000.tar"))
    assert len(data) == 100 and data.num_classes == 129 and data.skipped == {"no .seg.png member": 28}
    image, mask, notes = DenseDataset(data, seg_train_transform(64))[0]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == torch.int64
