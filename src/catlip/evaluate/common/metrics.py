"""Classification metrics: top-k accuracy and COCO-style mean average precision.

Written in torch (no scikit-learn dependency): both are a few lines over sorted scores, and keeping them here lets
every evaluation run on the same tensors it already holds.
"""

from __future__ import annotations

import torch


def topk_accuracy(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Fraction of rows whose target is among the k highest logits, for each k (capped at the class count)."""
    if logits.shape[0] == 0:
        return {f"top{k}": float("nan") for k in ks}
    num_classes = logits.shape[1]
    top = logits.topk(min(max(ks), num_classes), dim=1).indices
    hits = top == targets.view(-1, 1)
    return {f"top{k}": hits[:, : min(k, num_classes)].any(dim=1).double().mean().item() for k in ks}


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Non-interpolated AP of one class: mean of the precision at the rank of every positive.

    Ties are broken by the stable descending sort, so equal scores count in input order. Returns NaN when the
    class has no positive (callers leave such classes out of the mean).
    """
    positives = positives.bool()
    num_pos = int(positives.sum())
    if num_pos == 0:
        return float("nan")
    order = torch.sort(scores, descending=True, stable=True).indices
    hits = positives[order].double()
    precision_at = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision_at * hits).sum() / num_pos)


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> dict[str, float | list[float]]:
    """COCO multi-label mAP: the mean over classes (with at least one positive) of their AP.

    ``scores`` (N, C) any monotone score (logits or probabilities); ``targets`` (N, C) 0/1.
    """
    aps = [average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])]
    valid = [a for a in aps if a == a]
    return {"mAP": sum(valid) / len(valid) if valid else float("nan"), "AP": aps, "classes_scored": len(valid)}


def per_class_accuracy(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> list[float]:
    """Top-1 accuracy of each class (NaN for a class absent from ``targets``)."""
    pred = logits.argmax(dim=1)
    out = []
    for c in range(num_classes):
        mask = targets == c
        out.append(float((pred[mask] == c).double().mean()) if mask.any() else float("nan"))
    return out
