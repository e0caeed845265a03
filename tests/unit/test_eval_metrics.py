import math

import torch

from catlip.evaluate.common.metrics import average_precision, mean_average_precision, per_class_accuracy, topk_accuracy


def test_topk_accuracy_hand_case():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.5], [0.2, 0.3, 0.1]])
    targets = torch.tensor([1, 2, 2])
    acc = topk_accuracy(logits, targets, ks=(1, 2, 5))
    assert acc["top1"] == 1 / 3  # only row 0
    assert math.isclose(acc["top2"], 2 / 3)  # row 1: target 2 ranks second; row 2: target 2 ranks third
    assert acc["top5"] == 1.0  # capped at the class count


def test_average_precision_hand_computed():
    # ranked: pos, neg, pos, neg -> precision at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert math.isclose(average_precision(scores, torch.tensor([1, 0, 1, 0])), (1 + 2 / 3) / 2)
    # order of the input does not matter, only the ranking
    assert math.isclose(average_precision(scores.flip(0), torch.tensor([0, 1, 0, 1])), (1 + 2 / 3) / 2)


def test_mean_average_precision_skips_classes_without_positives():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.2], [0.6, 0.7, 0.1]])
    targets = torch.tensor([[1, 0, 0], [0, 0, 0], [0, 1, 0]])
    # class 0: ranking rows 0 (pos), 2, 1 -> AP 1; class 1: ranking rows 1 (neg), 2 (pos) -> AP 1/2; class 2: none
    out = mean_average_precision(scores, targets)
    assert out["classes_scored"] == 2
    assert math.isclose(out["mAP"], (1 + 0.5) / 2)
    assert math.isnan(out["AP"][2])


def test_per_class_accuracy():
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    acc = per_class_accuracy(logits, torch.tensor([0, 0, 1]), 3)
    assert acc[0] == 0.5 and acc[1] == 0.0 and math.isnan(acc[2])
