"""Evaluation: linear probes, k-NN, fine-tuning, zero-shot and Transfer Init.

Depends only on the timm backbone contract plus, for Transfer Init and head zero-shot, the pre-trained head's
weight and the vocabulary.
"""

from catlip.evaluate.datasets import ClassList, LabelledData, eval_transform, load_classes, open_labelled
from catlip.evaluate.features import Encoder, Features, cached_features, extract_features
from catlip.evaluate.linear_probe import (ProbeConfig, balanced_subset, knn_accuracy, ridge_fit, ridge_probe,
                                          train_probe)
from catlip.evaluate.metrics import mean_average_precision, topk_accuracy
from catlip.evaluate.transfer_init import CoverageReport, map_classes, transfer_init

__all__ = [
    "ClassList", "CoverageReport", "Encoder", "Features", "LabelledData", "ProbeConfig", "balanced_subset",
    "cached_features", "eval_transform", "extract_features", "knn_accuracy", "load_classes", "map_classes",
    "mean_average_precision", "open_labelled", "ridge_fit", "ridge_probe", "topk_accuracy", "train_probe",
    "transfer_init",
]
