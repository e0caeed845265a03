"""Classification heads put on a headless timm backbone during pre-training."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backbone import patch_tokens


def prior_bias(num_classes: int, labels_per_sample: float) -> float:
    """Logit bias that starts every sigmoid at the label prior p = labels_per_sample / num_classes.

    With BCE summed over classes, a zero bias starts each of the V - k absent classes at probability 1/2, so the
    first updates mainly push all logits down (initial loss V log 2). b = log(p / (1 - p)) starts at the
    prior instead (RetinaNet-style); e.g. V = 24,320 synsets with ~3 per caption gives b ~ -9.0.
    """
    p = labels_per_sample / num_classes
    if not 0 < p < 1:
        raise ValueError(f"labels_per_sample must lie in (0, num_classes), got {labels_per_sample}")
    return math.log(p / (1 - p))


class LinearHead(nn.Module):
    """CatLIP head: one Linear layer on the backbone's pooled embedding (CLS token for ViTs)."""

    def __init__(self, in_features: int, num_classes: int, bias_init: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        # Small random weights: a zero weight would give the backbone no gradient on the first step.
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.constant_(self.fc.bias, bias_init)

    def pool(self, backbone: nn.Module, features: Tensor) -> Tensor:
        """What the Linear layer reads, from ``backbone.forward_features`` output: timm's pooled embedding."""
        return backbone.forward_head(features, pre_logits=True)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)


class AvgTokenHead(nn.Module):
    """SuperClass head: LayerNorm + Linear on the average of the patch tokens (CLS / register tokens excluded)."""

    def __init__(self, in_features: int, num_classes: int, bias_init: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(in_features)
        self.fc = nn.Linear(in_features, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.constant_(self.fc.bias, bias_init)

    def pool(self, backbone: nn.Module, features: Tensor) -> Tensor:
        """What the Linear layer reads, from ``backbone.forward_features`` output: LayerNorm(mean patch token)."""
        return self.norm(patch_tokens(backbone, features).mean(dim=1))

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)


HEADS = {"linear": LinearHead, "avg_tokens": AvgTokenHead}


def head_weight(head: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (V, D), bias (V,)) of a head's classifier, detached; rows are label ids."""
    return head.fc.weight.detach(), head.fc.bias.detach()
