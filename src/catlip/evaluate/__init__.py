"""Evaluation: linear probes, k-NN, fine-tuning, zero-shot, Transfer Init, retrieval, tagging and dense transfer.

Depends only on the timm backbone contract plus, for Transfer Init and head zero-shot, the pre-trained head's
weight and the vocabulary. Grouped by family: ``classify/``, ``caption/``, ``dense/``, with what they share in
``common/``; one module per task, registered by ``catlip.evaluate.tasks``.

The names below are imported on first use, so ``catlip.evaluate.tasks`` (which ``catlip --help`` reads) does not
import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

TASKS = ("suite",)  # the task modules at this level (`catlip eval`); the families list their own

_EXPORTS = {
    "catlip.evaluate.common.datasets": ("ClassList", "LabelledData", "eval_transform", "load_classes",
                                        "open_labelled"),
    "catlip.evaluate.common.features": ("Encoder", "Features", "cached_features", "extract_features"),
    "catlip.evaluate.classify.knn": ("knn_accuracy",),
    "catlip.evaluate.classify.linear": ("ProbeConfig", "balanced_subset", "ridge_fit", "ridge_probe", "train_probe"),
    "catlip.evaluate.common.metrics": ("mean_average_precision", "topk_accuracy"),
    "catlip.evaluate.common.model": ("EvalModel", "load_eval_model"),
    "catlip.evaluate.classify.transfer_init": ("CoverageReport", "map_classes", "transfer_init"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'catlip.evaluate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
