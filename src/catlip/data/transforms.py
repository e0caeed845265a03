"""The one place of catlip's image transforms: training augmentations, the evaluation transform and the
probe / fine-tune augmentation (``catlip.evaluate.common.datasets`` re-exports the last two).

Training follows the papers (RandomResizedCrop + horizontal flip; RandAugment stands in for RangeAugment).
Evaluation resizes the shorter side to ``resize`` (default ``size``; bilinear, antialiased) and center-crops
``size``, normalised with the run's mean/std (CLIP's by default): exactly what the exported model's timm
``pretrained_cfg`` says (``catlip.models.export.preprocessing``: ``interpolation`` bilinear, ``crop_pct`` size /
resize, ``crop_mode`` center, ``mean``/``std``). :class:`Preprocess` is a run's choice of these values
(``data.mean``, ``data.std``, ``data.eval_resize``), so every command feeds a model what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from catlip.defaults import CLIP_MEAN as MEAN, CLIP_STD as STD  # the default data.mean / data.std
INTERPOLATION = InterpolationMode.BILINEAR  # "bilinear" in the exported pretrained_cfg
AUGMENTS = ("none", "rrc_flip", "randaugment")


def _to_tensor(mean, std) -> list:
    return [T.ToTensor(), T.Normalize(mean, std)]


def _resize_crop(size: int, resize: int = 0) -> list:
    """Shorter side to ``resize`` (0: ``size``), then the center ``size`` x ``size`` crop (timm's crop_pct
    size / resize, center)."""
    return [T.Resize(resize or size, interpolation=INTERPOLATION, antialias=True), T.CenterCrop(size)]


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


def train_transform(kind: str, size: int, scale_min: float = 0.08, mean=MEAN, std=STD) -> T.Compose:
    """Pre-training augmentation ``data.augment``: none | rrc_flip | randaugment."""
    return T.Compose(train_ops(kind, size, scale_min) + _to_tensor(mean, std))


def normalize_uint8(images: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 images (..., 3, H, W) → float, normalised: bit for bit ``ToTensor`` + ``Normalize``, on any device.

    The same element-wise operations in the same order (``/ 255``, ``- mean``, ``/ std`` in float32), so a batch
    normalised here equals the per-image transform of the reference path exactly.
    """
    x = images.to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return x.sub_(m).div_(s)


def eval_transform(size: int, mean=MEAN, std=STD, resize: int = 0) -> T.Compose:
    """Resize the shorter side to ``resize`` (0: ``size``) and center-crop ``size``: any input becomes
    (3, size, size)."""
    return T.Compose(_resize_crop(size, resize) + _to_tensor(mean, std))


def finetune_transform(size: int, mean=MEAN, std=STD, scale_min: float = 0.25) -> T.Compose:
    """Probe / fine-tune augmentation (RandomResizedCrop + flip); ``evaluate.common.datasets.train_transform``."""
    return T.Compose(_rrc_flip(size, scale_min) + _to_tensor(mean, std))


@dataclass(frozen=True)
class Preprocess:
    """A model's input convention: ``size`` (evaluation crop), ``resize`` (shorter side before the crop; 0 =
    ``size``), pixel ``mean`` / ``std``. Built from a run's config by :meth:`of`."""

    size: int
    resize: int = 0
    mean: tuple[float, ...] = MEAN
    std: tuple[float, ...] = STD

    @classmethod
    def of(cls, cfg, size: int | None = None) -> "Preprocess":
        """The preprocessing of a run (``cfg``: its ``Config``) at its own ``model.image_size``, or at ``size``
        with the resize scaled alike (232 -> 224 evaluated at 256 resizes to 265)."""
        base, data_cfg = int(cfg.model.image_size), cfg.data
        size = int(size or base)
        resize = int(getattr(data_cfg, "eval_resize", 0) or 0)
        if resize and size != base:
            resize = round(resize * size / base)
        return cls(size, resize if resize != size else 0, tuple(getattr(data_cfg, "mean", MEAN)),
                   tuple(getattr(data_cfg, "std", STD)))

    def eval_transform(self) -> T.Compose:
        return eval_transform(self.size, self.mean, self.std, self.resize)

    def finetune_transform(self, scale_min: float = 0.25) -> T.Compose:
        return finetune_transform(self.size, self.mean, self.std, scale_min)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return normalize_uint8(images, self.mean, self.std)
