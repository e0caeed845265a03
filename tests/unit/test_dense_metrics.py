"""Dense metrics equal hand-computed values: mIoU / per-class IoU / pixel accuracy from one confusion matrix, and
COCO box AP / AP50 / AP75 (pycocotools) on toy detections."""

from __future__ import annotations

import math

import pytest
import torch

from catlip.evaluate.dense.data import IGNORE
from catlip.evaluate.dense.detect import coco_ap
from catlip.evaluate.dense.segment import confusion_matrix, segmentation_metrics


def test_miou_on_a_toy_mask():
    target = torch.tensor([[0, 0, 1, 1],
                           [0, 0, 1, 1],
                           [2, 2, IGNORE, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 0, 1, 2],
                         [2, 2, 0, 0]])
    conf = confusion_matrix(pred, target, num_classes=4)
    # rows = truth, columns = prediction; the two ignored pixels are left out
    assert conf.tolist() == [[3, 1, 0, 0], [0, 3, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    m = segmentation_metrics(conf, ["a", "b", "c", "d"])
    iou = {"a": 3 / 4, "b": 3 / 5, "c": 2 / 3}  # TP / (TP + FP + FN)
    assert m["per_class_iou"]["d"] is None  # neither present nor predicted: not part of the mean
    assert all(math.isclose(m["per_class_iou"][k], v) for k, v in iou.items())
    assert math.isclose(m["mIoU"], sum(iou.values()) / 3)
    assert math.isclose(m["pixel_acc"], 8 / 10) and m["pixels"] == 10
    assert math.isclose(m["mean_acc"], (3 / 4 + 3 / 4 + 1) / 3)


def test_a_class_predicted_but_absent_counts_as_zero():
    conf = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), num_classes=2)
    m = segmentation_metrics(conf, ["a", "b"])
    assert m["per_class_iou"] == {"a": 0.5, "b": 0.0} and math.isclose(m["mIoU"], 0.25)


def _gt(boxes, labels, size=(100, 100)):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "size": size}


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


def test_box_ap_on_toy_detections():
    # one truth box 0..50 x 0..50; a detection shifted by 5 px in x has IoU 45*50 / (55*50) = 0.818
    gt = [_gt([[0, 0, 50, 50]], [1])]
    shifted = [_det([[5, 0, 55, 50]], [0.9], [1])]
    ap = coco_ap(gt, shifted, num_classes=1)
    # matched at IoU thresholds .50 .55 ... .80 (7 of the 10): AP = 0.7; AP50 = 1; AP75 = 1
    assert ap["AP"] == pytest.approx(0.7) and ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(1.0)
    # a higher-scored false positive first: precision 1/2 at recall 1 everywhere -> AP50 = 0.5
    with_fp = [_det([[60, 60, 90, 90], [0, 0, 50, 50]], [0.95, 0.9], [1, 1])]
    assert coco_ap(gt, with_fp, num_classes=1)["AP50"] == pytest.approx(0.5)
    # the right box with the wrong class finds nothing
    assert coco_ap(gt, [_det([[0, 0, 50, 50]], [0.9], [2])], num_classes=2)["AP50"] == 0.0


def test_box_ap_averages_over_classes_with_truth():
    gts = [_gt([[0, 0, 50, 50]], [1]), _gt([[10, 10, 40, 40]], [2])]
    dets = [_det([[0, 0, 50, 50]], [0.9], [1]), _det([], [], [])]  # class 2 is missed
    assert coco_ap(gts, dets, num_classes=3)["AP50"] == pytest.approx(0.5)  # class 3 has no truth: left out


def test_no_truth_and_no_detections():
    assert coco_ap([_gt([], [])], [_det([], [], [])], 1) == {"AP": None, "AP50": None, "AP75": None}
    assert coco_ap([_gt([[0, 0, 5, 5]], [1])], [_det([], [], [])], 1) == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
