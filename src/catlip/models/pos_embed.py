"""How a ViT's absolute position table meets an input size other than the one it was trained at
(``model.pos_resize``).

``grid`` is timm's own behaviour: the (h, w) grid of the table is resampled in 2-D (bicubic) to the new grid.
``stretch`` is what corenet does for the CatLIP paper's ViTs, in training (multi-scale sampler) and evaluation:
the table, flattened row-major to (N, C), is stretched linearly along the sequence to the new token count
(``F.interpolate(..., mode="bilinear", align_corners=False)`` on a (1, 1, N, C) tensor, which leaves C alone).
The two agree at the training size and differ elsewhere; a released corenet model matches its own numbers only
with ``stretch``.

timm offers no hook for this, so a ``stretch`` backbone is built with ``dynamic_img_size=True`` (timm then
accepts any input size and hands the position step a (B, H, W, C) grid) and its ``_pos_embed`` is replaced on the
instance by :func:`stretched_pos_embed`; everything else (prefix tokens, ``no_embed_class``, dropout) is as in
timm's method.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catlip.errors import BackboneError

POS_RESIZE = ("grid", "stretch")


def stretch_table(table: Tensor, length: int) -> Tensor:
    """(1, N, C) -> (1, length, C): corenet's 1-D linear stretch of a flattened position table."""
    if table.shape[1] == length:
        return table
    return F.interpolate(table.unsqueeze(0), size=(length, table.shape[-1]), mode="bilinear",
                         align_corners=False).squeeze(0)


def stretched_pos_embed(self: nn.Module, x: Tensor) -> Tensor:
    """timm ``VisionTransformer._pos_embed`` with the 1-D stretch instead of the 2-D grid resample."""
    if x.ndim == 4:  # dynamic_img_size: (B, H, W, C) from the patch embedding
        x = x.reshape(x.shape[0], -1, x.shape[-1])
    prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
    if self.no_embed_class:
        x = x + stretch_table(self.pos_embed, x.shape[1])
        x = torch.cat(prefix + [x], dim=1) if prefix else x
    else:
        n = self.num_prefix_tokens
        table = torch.cat([self.pos_embed[:, :n], stretch_table(self.pos_embed[:, n:], x.shape[1])], dim=1)
        x = (torch.cat(prefix + [x], dim=1) if prefix else x) + table
    return self.pos_drop(x)


def apply_pos_resize(model: nn.Module, mode: str, name: str) -> nn.Module:
    """Give a timm ViT built with ``dynamic_img_size=True`` the ``mode`` position resize (``grid``: unchanged)."""
    if mode == "grid":
        return model
    if mode not in POS_RESIZE:
        raise BackboneError(f"model.pos_resize must be one of {' | '.join(POS_RESIZE)}, got {mode!r}")
    if getattr(model, "pos_embed", None) is None or not hasattr(model, "_pos_embed"):
        raise BackboneError(f"model.pos_resize=stretch needs a timm ViT with an absolute position table; "
                            f"{name!r} has none")
    if not getattr(model, "dynamic_img_size", False):
        raise BackboneError("model.pos_resize=stretch needs the ViT built with dynamic_img_size")
    model._pos_embed = types.MethodType(stretched_pos_embed, model)
    model.catlip_pos_resize = mode
    return model
