"""Multi-level dense feature maps of a timm backbone, for dense transfer (segmentation, detection).

``dense_features(backbone, x)`` returns a list of NCHW maps through timm's ``forward_intermediates``:

* plain ViTs (every level at the patch stride): ``levels`` blocks evenly spaced through the depth, ending with
  the last (ViT-B/16: blocks 3, 6, 9, 12 as in ViTDet / UperNet-on-ViT), each (B, C, H/p, W/p) without the class
  or register tokens. Any input size divisible by the patch works: a ViT built without ``dynamic_img_size`` is
  run with it for this call (position embeddings resampled to the input's grid, timm's ``resample_abs_pos_embed``)
  and left unchanged afterwards.
* hierarchical backbones (convnets, Swin-like: strides differ by level): the last ``levels`` stages.

``SimpleFeaturePyramid(backbone)`` is ViTDet's simple feature pyramid (Li et al. 2022, Fig. 2c) for detection:
maps at strides 4, 8, 16 and 32 (and optionally 64) with one channel width. A plain ViT has one map at its patch
stride p (the last block, final norm applied); each level resamples it by p / stride: 2x2 stride-2 transposed
convolutions per doubling (LayerNorm + GELU between two), identity, or max-pooling per halving; then a 1x1 and a
3x3 convolution, each followed by a channel LayerNorm, bring it to ``out_channels``. A /16 ViT gets 2 deconvs,
1 deconv, identity, max-pool 2; a /8 ViT 1 deconv, identity, max-pool 2, max-pool 4. A hierarchical backbone
(convnet) takes, per level, the stage whose reduction is nearest to that stride (features_only-style
intermediates) and resamples the same way. The extra stride-64 level (``extra_pool``) is a stride-2
subsampling of the stride-32 one, as in ViTDet and torchvision's FPN (``LastLevelMaxPool``).

``Segmenter(backbone, num_classes)`` is DeepLabv3 on the backbone's last map for semantic segmentation: torchvision's
``ASPP`` (atrous rates 12/24/36 and image pooling), a 3x3 conv, BatchNorm, ReLU and a 1x1 classifier, logits
upsampled bilinearly to the input size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from catlip.errors import CatlipError

__all__ = ["Segmenter", "SimpleFeaturePyramid", "dense_features", "dense_levels", "feature_reductions", "last_feature_map"]


def feature_reductions(backbone: nn.Module) -> list[int]:
    """The stride (input pixels per map pixel) of every feature index of a timm backbone."""
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise CatlipError(f"{type(backbone).__name__} has no timm feature_info: dense features need a timm backbone "
                          "with forward_intermediates")
    return [int(f["reduction"]) for f in info] if isinstance(info, list) else [int(r) for r in info.reduction()]


def is_isotropic(backbone: nn.Module) -> bool:
    """Every level at one stride (a plain ViT) rather than a hierarchy of stages (convnets, Swin)."""
    return len(set(feature_reductions(backbone))) == 1


def feature_channels(backbone: nn.Module) -> list[int]:
    info = backbone.feature_info
    return [int(f["num_chs"]) for f in info] if isinstance(info, list) else [int(c) for c in info.channels()]


def last_feature_map(backbone: nn.Module, x: Tensor) -> Tensor:
    """The deepest map (ViT: last block with the final norm, the tokens the pre-training head read)."""
    last = len(feature_reductions(backbone)) - 1
    return dense_features(backbone, x, indices=[last], norm=is_isotropic(backbone))[0]


def dense_levels(backbone: nn.Module, levels: int = 4) -> list[int]:
    """The feature indices ``dense_features`` takes by default (see the module docstring)."""
    reductions = feature_reductions(backbone)
    total = len(reductions)
    levels = max(1, min(levels, total))
    if len(set(reductions)) == 1:  # isotropic (plain ViT): evenly spaced blocks, ending with the last
        return sorted({round((i + 1) * total / levels) - 1 for i in range(levels)})
    return list(range(total - levels, total))  # hierarchical: the deepest stages


def dense_features(backbone: nn.Module, x: Tensor, *, levels: int = 4, indices: Sequence[int] | None = None,
                   norm: bool = False) -> list[Tensor]:
    """(B, C_i, H_i, W_i) feature maps, shallow to deep, from timm's ``forward_intermediates``.

    ``indices`` (feature / block indices) overrides ``levels``; ``norm`` applies the model's final norm to each
    (ViTs). Gradients flow as usual (wrap in ``torch.no_grad()`` for frozen features).
    """
    fn = getattr(backbone, "forward_intermediates", None)
    if fn is None:
        raise CatlipError(f"{type(backbone).__name__} has no forward_intermediates (timm >= 1.0 models have it)")
    take = list(indices) if indices is not None else dense_levels(backbone, levels)
    with _any_input_size(backbone, x):
        kwargs = {"indices": take, "output_fmt": "NCHW", "intermediates_only": True}
        if norm:
            kwargs["norm"] = True
        maps = fn(x, **kwargs)
    return list(maps)


@contextmanager
def _any_input_size(backbone: nn.Module, x: Tensor) -> Iterator[None]:
    """Run a fixed-size timm ViT at ``x``'s size for one call: dynamic position embeddings, then restore."""
    embed = getattr(backbone, "patch_embed", None)
    fixed = getattr(embed, "img_size", None)
    if (embed is None or fixed is None or getattr(backbone, "dynamic_img_size", True)
            or tuple(x.shape[-2:]) == tuple(fixed)):
        yield
        return
    from timm.layers import Format

    ph, pw = embed.patch_size
    if x.shape[-2] % ph or x.shape[-1] % pw:
        raise CatlipError(f"input {tuple(x.shape[-2:])} is not a multiple of the patch size {(ph, pw)}")
    saved = (backbone.dynamic_img_size, embed.flatten, embed.output_fmt, embed.strict_img_size)
    backbone.dynamic_img_size, embed.flatten, embed.output_fmt, embed.strict_img_size = True, False, Format.NHWC, False
    try:
        yield
    finally:
        backbone.dynamic_img_size, embed.flatten, embed.output_fmt, embed.strict_img_size = saved


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid over a timm backbone (see the module docstring).

    ``forward(x)`` returns an ordered dict ``{"0": stride 4, "1": stride 8, "2": 16, "3": 32[, "pool": 64]}`` of
    (B, out_channels, H/s, W/s) maps: the interface torchvision's detection models expect of a backbone (with
    ``out_channels``). ``x`` must be a multiple of the backbone's coarsest source stride in each side.
    """

    def __init__(self, backbone: nn.Module, out_channels: int = 256, strides: Sequence[int] = (4, 8, 16, 32),
                 extra_pool: bool = True):
        super().__init__()
        self.backbone = backbone
        self.out_channels = out_channels
        self.strides = tuple(int(s) for s in strides)
        self.extra_pool = extra_pool
        reductions, channels = feature_reductions(backbone), feature_channels(backbone)
        self.isotropic = len(set(reductions)) == 1
        # which backbone map feeds each level: the last block of a ViT; the stage nearest in stride otherwise
        self.sources = [len(reductions) - 1 if self.isotropic else _nearest_stage(reductions, s) for s in self.strides]
        self.indices = sorted(set(self.sources))
        self.levels = nn.ModuleList(
            _level(channels[src], reductions[src] / stride, out_channels) for src, stride in zip(self.sources, self.strides))

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        maps = dense_features(self.backbone, x, indices=self.indices, norm=self.isotropic)
        by_index = dict(zip(self.indices, maps))
        out = OrderedDict((str(i), level(by_index[src])) for i, (src, level) in enumerate(zip(self.sources, self.levels)))
        if self.extra_pool:
            out["pool"] = F.max_pool2d(out[str(len(self.levels) - 1)], kernel_size=1, stride=2)
        return out


class Segmenter(nn.Module):
    """backbone -> last feature map -> DeepLabv3 head -> logits at the input's size."""

    def __init__(self, backbone: nn.Module, num_classes: int, atrous_rates=(12, 24, 36), channels: int = 256):
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import ASPP

        self.backbone = backbone
        self.head = nn.Sequential(  # torchvision's DeepLabHead, with the width as a parameter
            ASPP(feature_channels(backbone)[-1], list(atrous_rates), channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, num_classes, 1))

    def forward(self, images: Tensor) -> Tensor:
        logits = self.head(last_feature_map(self.backbone, images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _nearest_stage(reductions: list[int], stride: int) -> int:
    """The deepest stage whose stride is closest to ``stride`` on a log scale."""
    return min(range(len(reductions)), key=lambda i: (abs(math.log2(reductions[i] / stride)), -i))


def _level(channels: int, scale: float, out_channels: int) -> nn.Sequential:
    """Resample a map by ``scale`` (a power of two), then project to ``out_channels`` (ViTDet's per-level stem)."""
    from timm.layers import LayerNorm2d

    steps = round(math.log2(scale))
    if abs(2.0 ** steps - scale) > 1e-6:
        raise CatlipError(f"feature pyramid: scale {scale} between a backbone map and a level is not a power of two")
    layers: list[nn.Module] = []
    dim = channels
    for k in range(steps):  # upsample: each doubling halves the width (ViTDet), LN + GELU between deconvs
        if k:
            layers += [LayerNorm2d(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, max(1, dim // 2), kernel_size=2, stride=2))
        dim = max(1, dim // 2)
    if steps < 0:
        layers.append(nn.MaxPool2d(kernel_size=2 ** -steps, stride=2 ** -steps))
    layers += [nn.Conv2d(dim, out_channels, kernel_size=1, bias=False), LayerNorm2d(out_channels),
               nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False), LayerNorm2d(out_channels)]
    return nn.Sequential(*layers)
