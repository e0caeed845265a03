"""CatLIP and SuperClass: an image classifier over caption-derived labels."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from .. import losses
from .base import Method, build_backbone
from .targets import IDFStats, class_mask, multi_hot


def check_label_head(name: str, loss: str, num_classes: int) -> None:
    """A label head needs a classification loss and at least one class (one-line ConfigError otherwise)."""
    from ..errors import ConfigError

    if loss not in losses.CLASSIFICATION_LOSSES:
        known = ", ".join(sorted(losses.CLASSIFICATION_LOSSES))
        raise ConfigError(f"method.loss={loss!r} is not a classification loss; choose from {known}")
    if num_classes < 1:
        raise ConfigError(f"{name} needs a non-empty label vocabulary (got {num_classes} classes)")


def _build(cfg, num_classes: int, resolved, zero_weight_ids, make_head) -> "ClassificationMethod":
    name, loss = resolved.spec.name, resolved.loss
    check_label_head(name, loss, num_classes)
    backbone = build_backbone(cfg)
    return ClassificationMethod(name, backbone, make_head(backbone), num_classes, loss, use_idf=cfg.method.use_idf,
                                zero_weight_ids=zero_weight_ids, idf_momentum=cfg.method.idf_momentum)


def build_catlip(cfg, num_classes: int, resolved, zero_weight_ids=()) -> "ClassificationMethod":
    """CatLIP: one Linear layer on the backbone's pooled embedding (bias from ``model.head_bias_init``)."""
    from ..models.backbone import num_features
    from ..models.heads import LinearHead

    return _build(cfg, num_classes, resolved, zero_weight_ids,
                  lambda bb: LinearHead(num_features(bb), num_classes, cfg.model.head_bias_init))


def build_superclass(cfg, num_classes: int, resolved, zero_weight_ids=()) -> "ClassificationMethod":
    """SuperClass: LayerNorm + Linear on the mean patch token."""
    from ..models.backbone import num_features
    from ..models.heads import AvgTokenHead

    return _build(cfg, num_classes, resolved, zero_weight_ids, lambda bb: AvgTokenHead(num_features(bb), num_classes))


class LabelHead:
    """The label head shared by the classification methods and SuperCLIP: ``head`` (its ``fc`` row i belongs to
    label id i), dense targets from ``batch["label_ids"]``, the loss ``loss`` (a name in
    :data:`catlip.losses.CLASSIFICATION_LOSSES`) and, for ``idf_softmax`` with ``use_idf``, IDF statistics updated
    from each training batch *before* its weights are computed (so the first batch is weighted by its own counts).
    ``zero_weight_ids`` (special tokens) are never targets. Mixed into an ``nn.Module``."""

    def init_label_head(self, head: nn.Module, num_classes: int, loss: str, *, use_idf: bool,
                        zero_weight_ids: Iterable[int], idf_momentum: float) -> None:
        self.head = head
        self.num_classes = num_classes
        self.loss_name = loss
        self.loss_fn: Callable[[Tensor, Tensor], Tensor] = losses.CLASSIFICATION_LOSSES[loss]
        zero_weight_ids = tuple(zero_weight_ids)
        self.register_buffer("ignore_mask", class_mask(num_classes, zero_weight_ids), persistent=False)
        self.idf = IDFStats(num_classes, zero_weight_ids, idf_momentum) if loss == "idf_softmax" and use_idf else None

    def features(self, images: Tensor) -> Tensor:
        """The (B, D) features the classifier reads (for linear probes / Transfer Init on the same features)."""
        return self.head.pool(self.backbone, self.backbone.forward_features(images))

    def targets(self, label_ids: Tensor) -> Tensor:
        return multi_hot(label_ids, self.num_classes).masked_fill_(self.ignore_mask, 0.0)

    def classification_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The head's loss (IDF statistics are updated from ``targets`` first while training)."""
        if self.idf is None:
            return self.loss_fn(logits, targets)
        if self.training:
            self.idf.update(targets)
        return self.loss_fn(logits, self.idf.weights(targets))

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear layer; row i of its weight belongs to label id i."""
        return self.head.fc

    def head_weight(self) -> tuple[Tensor, Tensor]:
        """(weight (V, D), bias (V,)), detached: CatLIP's Transfer Init copies the rows of the target labels."""
        return self.head.fc.weight.detach(), self.head.fc.bias.detach()

    @torch.no_grad()
    def idf_weights(self) -> Tensor | None:
        """Current per-class IDF (None when the loss does not use it)."""
        return None if self.idf is None else self.idf.idf()


class ClassificationMethod(LabelHead, Method):
    """Backbone + label head (see :class:`LabelHead`) trained with a multi-label loss."""

    inputs = ("image", "label_ids")

    def __init__(self, name: str, backbone: nn.Module, head: nn.Module, num_classes: int, loss: str, *,
                 use_idf: bool = True, zero_weight_ids: Iterable[int] = (), idf_momentum: float = 0.0):
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.init_label_head(head, num_classes, loss, use_idf=use_idf, zero_weight_ids=zero_weight_ids,
                             idf_momentum=idf_momentum)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]
        logits = self.head(self.features(images))
        targets = self.targets(batch["label_ids"].to(images.device, non_blocking=True))
        return {"loss": self.classification_loss(logits, targets), "logits": logits, "targets": targets}
