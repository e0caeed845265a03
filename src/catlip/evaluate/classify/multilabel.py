"""Multi-label classification (COCO-style): BCE training objective and mAP evaluation.

The loss is CatLIP's own (``catlip.losses.bce``: summed over classes, averaged over the batch), as the paper
fine-tunes COCO with binary cross-entropy (Appendix A); the metric is the mean over classes of average precision.
"""

from __future__ import annotations

import torch

from catlip.evaluate.common.metrics import mean_average_precision


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE with logits against multi-hot targets; reduction: sum over classes, mean over the batch."""
    from catlip.losses import bce

    return bce(logits.float(), targets.float())


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict:
    """mAP (and per-class AP) of (N, C) scores against (N, C) 0/1 targets."""
    out = mean_average_precision(scores.float(), targets)
    out["mean_labels_per_image"] = float(targets.float().sum(1).mean()) if len(targets) else float("nan")
    return out


def is_multilabel(targets: torch.Tensor) -> bool:
    return targets.dim() == 2
