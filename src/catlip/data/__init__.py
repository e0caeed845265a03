"""Image–caption data: sources, the embedded synthetic set, augmentations, the resumable batch order."""

from catlip.data.loader import build_train_loader

__all__ = ["build_train_loader"]
