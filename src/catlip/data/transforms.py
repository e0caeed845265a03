"""Training augmentations (papers: RandomResizedCrop + horizontal flip; RandAugment stands in for RangeAugment)."""

from __future__ import annotations

from torchvision import transforms as T

# OpenAI CLIP statistics, the convention of open_clip and of timm's CLIP models.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def train_transform(kind: str, size: int, scale_min: float = 0.08) -> T.Compose:
    if kind == "none":
        ops = [T.Resize(size), T.CenterCrop(size)]
    elif kind in ("rrc_flip", "randaugment"):
        ops = [T.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True), T.RandomHorizontalFlip()]
        if kind == "randaugment":
            ops.append(T.RandAugment())
    else:
        raise ValueError(f"data.augment must be none | rrc_flip | randaugment, got {kind!r}")
    return T.Compose(ops + [T.ToTensor(), T.Normalize(MEAN, STD)])


def eval_transform(size: int) -> T.Compose:
    return T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])
