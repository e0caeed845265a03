"""The one place of catlip's image transforms: training augmentations, the evaluation transform and the
probe / fine-tune augmentation (``catlip.evaluate.datasets`` re-exports the last two).

Training follows the papers (RandomResizedCrop + horizontal flip; RandAugment stands in for RangeAugment).
Evaluation resizes the shorter side to ``size`` (bilinear, antialiased) and center-crops it, with CLIP's
mean/std: exactly what the exported model's timm ``pretrained_cfg`` says (``catlip.models.export.preprocessing``:
``interpolation`` bilinear, ``crop_pct`` 1.0, ``crop_mode`` center, ``MEAN``/``STD``).
"""

from __future__ import annotations

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

# OpenAI CLIP statistics, the convention of open_clip and of timm's CLIP models.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
INTERPOLATION = InterpolationMode.BILINEAR  # "bilinear" in the exported pretrained_cfg
AUGMENTS = ("none", "rrc_flip", "randaugment")


def _to_tensor(mean, std) -> list:
    return [T.ToTensor(), T.Normalize(mean, std)]


def _resize_crop(size: int) -> list:
    """Shorter side to ``size``, then the center ``size`` x ``size`` crop (timm's crop_pct 1.0, center)."""
    return [T.Resize(size, interpolation=INTERPOLATION, antialias=True), T.CenterCrop(size)]


def _rrc_flip(size: int, scale_min: float) -> list:
    return [T.RandomResizedCrop(size, scale=(scale_min, 1.0), interpolation=INTERPOLATION, antialias=True),
            T.RandomHorizontalFlip()]


def train_ops(kind: str, size: int, scale_min: float = 0.08) -> list:
    """The PIL-image part of ``train_transform`` (everything before the tensor conversion)."""
    if kind == "none":
        return _resize_crop(size)
    if kind in ("rrc_flip", "randaugment"):
        ops = _rrc_flip(size, scale_min)
        if kind == "randaugment":
            ops.append(T.RandAugment())
        return ops
    raise ValueError(f"data.augment must be none | rrc_flip | randaugment, got {kind!r}")


def train_transform(kind: str, size: int, scale_min: float = 0.08) -> T.Compose:
    """Pre-training augmentation ``data.augment``: none | rrc_flip | randaugment."""
    return T.Compose(train_ops(kind, size, scale_min) + _to_tensor(MEAN, STD))


def normalize_uint8(images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 images (..., 3, H, W) → float, normalised: bit for bit ``ToTensor`` + ``Normalize``, on any device.

    The same element-wise operations in the same order (``/ 255``, ``- mean``, ``/ std`` in float32), so a batch
    normalised here equals the per-image transform of the reference path exactly.
    """
    x = images.to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub_(m).div_(s)


def eval_transform(size: int, mean=MEAN, std=STD) -> T.Compose:
    """Resize the shorter side to ``size`` and center-crop: any input size becomes (3, size, size)."""
    return T.Compose(_resize_crop(size) + _to_tensor(mean, std))


def finetune_transform(size: int, mean=MEAN, std=STD, scale_min: float = 0.25) -> T.Compose:
    """Probe / fine-tune augmentation (RandomResizedCrop + flip); ``catlip.evaluate.datasets.train_transform``."""
    return T.Compose(_rrc_flip(size, scale_min) + _to_tensor(mean, std))
