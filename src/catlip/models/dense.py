"""Multi-level dense feature maps of a timm backbone, for dense transfer (segmentation, detection).

``dense_features(backbone, x)`` returns a list of NCHW maps through timm's ``forward_intermediates``:

* plain ViTs (every level at the patch stride): ``levels`` blocks evenly spaced through the depth, ending with
  the last (ViT-B/16: blocks 3, 6, 9, 12 as in ViTDet / UperNet-on-ViT), each (B, C, H/p, W/p) without the class
  or register tokens. Any input size divisible by the patch works: a ViT built without ``dynamic_img_size`` is
  run with it for this call (position embeddings resampled to the input's grid, timm's ``resample_abs_pos_embed``)
  and left unchanged afterwards.
* hierarchical backbones (convnets, Swin-like: strides differ by level): the last ``levels`` stages.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

from torch import Tensor, nn

from catlip.errors import CatlipError

__all__ = ["dense_features", "dense_levels"]


def dense_levels(backbone: nn.Module, levels: int = 4) -> list[int]:
    """The feature indices ``dense_features`` takes by default (see the module docstring)."""
    info = getattr(backbone, "feature_info", None)
    if not info:
        raise CatlipError(f"{type(backbone).__name__} has no timm feature_info: dense features need a timm backbone "
                          "with forward_intermediates")
    reductions = [f["reduction"] for f in info] if isinstance(info, list) else list(info.reduction())
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
