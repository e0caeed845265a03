"""catlip detect: Faster R-CNN on the simple feature pyramid over-fits a few synthetic scenes (box AP50 >= 0.5);
boxes are clipped, degenerate ones and unknown labels dropped and counted; COCO jsons and coco128-style shards."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from functools import partial

import pytest
import torch
from PIL import Image

from catlip.errors import DataError
from catlip.evaluate.dense import loop
from catlip.evaluate.dense.data import (DenseDataset, clean_boxes, collate_det, det_eval_transform, det_train_transform,
                                        open_detection)
from catlip.evaluate.dense.detect import _loss, build_detector, evaluate_detector, load_detect_config

TINY = """
model:
  backbone: vit_tiny_patch16_224
  backbone_kwargs: {patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}
  image_size: 64
"""
SMALL = ["image_size=64", "num_workers=0", "weight_decay=0", "fpn_channels=32", "anchor_size=8", "box_head_dim=64"]


@pytest.mark.slow
def test_detector_overfits_a_few_images(tmp_path):
    from catlip.evaluate.common.model import load_eval_model

    torch.set_num_threads(1)
    (tmp_path / "tiny.yaml").write_text(TINY)
    data = open_detection("synthetic:4:64", seed=0)
    cfg = load_detect_config(None, ["batch_size=4", "epochs=100", "lr=0.002", "schedule=cosine", "warmup_epochs=5",
                                    "scale_min=1", "scale_max=1", *SMALL])
    torch.manual_seed(0)
    backbone = load_eval_model(f"random:{tmp_path / 'tiny.yaml'}").backbone
    model = build_detector(backbone, data.num_classes, cfg, masks=False)
    job = loop.Job(model, backbone, DenseDataset(data, det_train_transform(64, (1, 1))), collate_det,
                   partial(_loss, masks=False), None, {})
    loop.train(job, cfg, progress=False)
    m = evaluate_detector(model, data, cfg, torch.device("cpu"), masks=False)
    assert m["test_images"] == 4 and m["box_AP50"] >= 0.5, m


def test_mask_rcnn_trains_a_step_and_reports_mask_ap(tmp_path):
    from catlip.evaluate.common.model import load_eval_model

    (tmp_path / "tiny.yaml").write_text(TINY)
    data = open_detection("synthetic:2:64", seed=0)
    assert data.has_masks
    cfg = load_detect_config(None, ["batch_size=2", "epochs=1", "lr=0.001", "detections_per_image=10", *SMALL])
    backbone = load_eval_model(f"random:{tmp_path / 'tiny.yaml'}").backbone
    model = build_detector(backbone, data.num_classes, cfg, masks=True)
    job = loop.Job(model, backbone, DenseDataset(data, det_train_transform(64, (0.5, 1.5))), collate_det,
                   partial(_loss, masks=True), None, {})
    out = loop.train(job, cfg, progress=False)
    assert "loss_mask" in out["final"]
    m = evaluate_detector(model, data, cfg, torch.device("cpu"), masks=True)
    assert {"box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50"} <= set(m)


def test_boxes_are_clipped_and_bad_ones_counted():
    notes = Counter()
    target = clean_boxes([[-5, 2, 10, 12], [3, 3, 3, 9], [4, 4, 8, 2], [1, 1, 5, 5], [0, 0, 30, 30]],
                         [0, 1, 1, 7, 1], width=20, height=16, num_classes=3, notes=notes)
    assert target["boxes"].tolist() == [[0, 2, 10, 12], [0, 0, 20, 16]] and target["labels"].tolist() == [1, 2]
    assert notes == {"boxes clipped to the image": 2, "boxes with no area": 2,
                     "boxes with labels outside the class list": 1}
    empty = clean_boxes([], [], 20, 16, 3, notes)
    assert empty["boxes"].shape == (0, 4) and notes["images without boxes (kept as background)"] == 1


def _jpg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_shards_with_missing_and_bad_members(tmp_path, capsys):
    from catlip.cli import main

    samples = {"a": {"jpg": _jpg(32, 24), "json": json.dumps({"boxes": [[2, 2, 20, 20]], "labels": [1]}).encode()},
               "b": {"jpg": _jpg(32, 24), "json": b"{broken"},
               "c": {"jpg": _jpg(32, 24)},  # no annotation member: skipped when opened
               "d": {"jpg": _jpg(32, 24), "json": json.dumps({"boxes": [], "labels": []}).encode()}}
    with tarfile.open(tmp_path / "det-000.tar", "w") as tar:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (tmp_path / "classes.json").write_text(json.dumps({"detection": ["cat", "dog"]}))
    data = open_detection(str(tmp_path / "det-000.tar"))
    assert len(data) == 3 and data.skipped == {"no .json member": 1} and data.names == ["cat", "dog"]
    batch = collate_det([DenseDataset(data, det_eval_transform())[i] for i in range(3)])
    assert batch["skipped"] == 1 and len(batch["image"]) == 2
    assert batch["notes"] == {"unreadable box files": 1, "images without boxes (kept as background)": 1}
    (tmp_path / "classes.json").write_text(json.dumps({"detection": ["cat"]}))  # label 1 is not in it
    with pytest.raises(DataError, match="matches none of the labels"):
        open_detection(str(tmp_path / "det-000.tar"))
    assert main(["detect", "random:vit_tiny_patch16_224", "--train", str(tmp_path / "det-000.tar"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matches none of the labels" in err[0]


def test_coco_instances_json(tmp_path):
    (tmp_path / "val2017").mkdir()
    (tmp_path / "annotations").mkdir()
    for name in ("1.jpg", "2.jpg"):
        Image.new("RGB", (40, 30)).save(tmp_path / "val2017" / name)
    coco = {"images": [{"id": 1, "file_name": "1.jpg", "width": 40, "height": 30},
                       {"id": 2, "file_name": "2.jpg", "width": 40, "height": 30},
                       {"id": 3, "file_name": "missing.jpg", "width": 40, "height": 30}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 18, "bbox": [5, 5, 10, 10], "iscrowd": 0,
                 "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]]},
                {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1,
                 "segmentation": {"counts": [0, 1200], "size": [30, 40]}}]}
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(coco))
    data = open_detection(str(tmp_path / "annotations" / "instances_val2017.json"))
    assert data.names == ["car", "dog"] and len(data) == 2 and data.has_masks
    assert data.skipped == {"crowd annotations": 1, "missing image files": 1}
    _, target, _ = DenseDataset(data)[0]
    assert target["labels"].tolist() == [2] and target["boxes"].tolist() == [[5, 5, 15, 15]]
    assert target["masks"].shape == (1, 30, 40) and 90 <= int(target["masks"].sum()) <= 121
    with pytest.raises(DataError, match="image folder"):
        open_detection(str(tmp_path / "annotations" / "instances_val2017.json"), images=tmp_path / "nope")


def test_coco128_shard(shared_data):
    data = open_detection(str(shared_data / "coco128" / "coco128-train-000.tar"))
    assert len(data) == 128 and data.num_classes == 80 and not data.has_masks
    image, target, notes = DenseDataset(data, det_train_transform(128))[0]
    assert image.shape == (3, 128, 128) and target["boxes"].shape[1] == 4
    assert len(target["boxes"]) == len(target["labels"])
