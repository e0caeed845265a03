"""Image–caption data: the one reader of the data formats (``formats``, pure Python), sources, the embedded
synthetic set, augmentations, the resumable batch order.

``build_train_loader`` is imported on first use, so that ``catlip.data.formats`` (read by the torch-free
``catlip.labels``) can be imported without torch.
"""

__all__ = ["build_train_loader"]


def __getattr__(name: str):
    if name == "build_train_loader":
        from catlip.data.loader import build_train_loader

        return build_train_loader
    raise AttributeError(f"module 'catlip.data' has no attribute {name!r}")
