"""CatLIP and SuperClass: an image classifier over caption-derived labels."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from .. import losses
from .base import Method
from .targets import IDFStats, class_mask, multi_hot


class ClassificationMethod(Method):
    """Backbone + head trained with a multi-label loss on targets densified from ``batch["label_ids"]``.

    ``loss`` is a name in :data:`catlip.losses.CLASSIFICATION_LOSSES`. For ``idf_softmax`` with ``use_idf`` the
    IDF statistics are updated from each training batch *before* its weights are computed (so the first batch
    is weighted by its own counts). ``zero_weight_ids`` (special tokens) are never targets.
    """

    inputs = ("image", "label_ids")

    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        head: nn.Module,
        num_classes: int,
        loss: str,
        *,
        use_idf: bool = True,
        zero_weight_ids: Iterable[int] = (),
        idf_momentum: float = 0.0,
    ):
        super().__init__()
        self.name = name
        self.backbone = backbone
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

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]
        logits = self.head(self.features(images))
        targets = self.targets(batch["label_ids"].to(images.device, non_blocking=True))
        if self.idf is not None:
            if self.training:
                self.idf.update(targets)
            loss = self.loss_fn(logits, self.idf.weights(targets))
        else:
            loss = self.loss_fn(logits, targets)
        return {"loss": loss, "logits": logits, "targets": targets}

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
