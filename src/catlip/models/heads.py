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


def class_prior_bias(counts: list[int], num_captions: int, softmax: bool) -> torch.Tensor:
    """Per-class initial bias: each class starts at its own frequency in the training captions.

    A constant bias leaves the head to learn the label prior itself, and at the small learning rates of
    pre-training a bias moves by at most ~lr per step: far too slowly to spread over the ~8 nats between "dog"
    (24 % of Flickr8k captions) and a synset seen 5 times in 30,000, so the image features end up encoding label
    frequencies instead. Sigmoid heads get b_i = log(p_i / (1 - p_i)), p_i = count_i / num_captions; softmax heads
    get b_i = log(count_i / sum(count)). Classes never seen start at the frequency of half a caption.
    """
    c = torch.tensor(counts, dtype=torch.float64).clamp_min(0.5)
    if num_captions <= 0 or not len(counts):
        raise ValueError("a prior bias needs vocabulary counts over at least one caption")
    if softmax:
        return (c / c.sum()).log().float()
    p = (c / num_captions).clamp(max=1 - 1e-4)
    return (p / (1 - p)).log().float()


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
