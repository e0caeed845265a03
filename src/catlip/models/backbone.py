"""Image backbones: any timm model by name, headless, following the timm feature contract.

A backbone is a plain timm model created with ``num_classes=0``: ``forward_features(x)`` gives the unpooled
features, ``forward_head(f, pre_logits=True)`` the pooled embedding of size ``num_features``. Evaluation relies
on nothing else, so every timm architecture (ViTs, ConvNeXts, ResNets, ...) works.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import timm
import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..errors import BackboneError  # noqa: F401  (defined in catlip.errors; imported from here too)


def backbone_spec(model_cfg: ModelConfig, *, dynamic_img_size: bool = False) -> dict[str, Any]:
    """The timm name and keyword arguments a backbone is (re)built from; stored with exported weights."""
    kwargs: dict[str, Any] = {"drop_path_rate": model_cfg.drop_path_rate, **model_cfg.backbone_kwargs}
    kwargs.setdefault("img_size", model_cfg.image_size)
    if dynamic_img_size or model_cfg.pos_resize == "stretch":
        # Multi-scale training feeds several resolutions; ViTs then interpolate position embeddings per batch
        # (a stretch ViT always: it takes any input size, as corenet's ViT does).
        kwargs.setdefault("dynamic_img_size", True)
    return {"name": model_cfg.backbone, "kwargs": kwargs}


def create_backbone(model_cfg: ModelConfig, *, dynamic_img_size: bool = False) -> nn.Module:
    """Build ``model_cfg.backbone`` from timm with random weights and no classifier, for ``model_cfg.image_size``.

    ``img_size`` (and ``dynamic_img_size``) are passed only to models that accept them (ViT-like); the chosen
    arguments are recorded in ``model.catlip_spec`` so exports can rebuild the same architecture.
    ``model_cfg.patch_drop`` > 0 becomes timm's ``patch_drop_rate`` (a ``PatchDropout`` layer, active in train
    mode only, that keeps the prefix tokens); it is left out of ``catlip_spec``, so a rebuilt backbone (exports,
    evaluation: see :func:`for_evaluation`) sees every token.
    """
    spec = backbone_spec(model_cfg, dynamic_img_size=dynamic_img_size)
    kwargs = dict(spec["kwargs"])
    if model_cfg.patch_drop > 0:
        kwargs["patch_drop_rate"] = float(model_cfg.patch_drop)
    model, kwargs = _create(spec["name"], kwargs, explicit=set(model_cfg.backbone_kwargs))
    if model_cfg.patch_drop > 0:
        _check_patch_drop(model, spec["name"])
    from catlip.models.pos_embed import apply_pos_resize
    from catlip.models.stems import apply_stem

    apply_stem(model, model_cfg.stem, spec["name"])
    apply_pos_resize(model, model_cfg.pos_resize, spec["name"])
    if model_cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    model.catlip_spec = {"name": spec["name"], "kwargs": {k: v for k, v in kwargs.items() if k != "patch_drop_rate"}}
    if model_cfg.stem != "patch":
        model.catlip_spec["stem"] = model_cfg.stem  # not a timm argument: exports refuse it (models/export.py)
    if model_cfg.pos_resize != "grid":
        model.catlip_spec["pos_resize"] = model_cfg.pos_resize  # neither is this one
    return model


def for_evaluation(model_cfg: ModelConfig) -> ModelConfig:
    """``model_cfg`` for rebuilding a trained backbone to evaluate or fine-tune: no token dropping (FLIP drops
    tokens in pre-training only; fine-tuning runs in train mode, so ``eval()`` alone would not switch it off)."""
    return dataclasses.replace(model_cfg, patch_drop=0.0)


def _check_patch_drop(model: nn.Module, name: str) -> None:
    # timm models that take **kwargs may accept patch_drop_rate and ignore it; dropping must never be a no-op
    from timm.layers import PatchDropout, PatchDropoutWithIndices  # ViT/DeiT and EVA (rope) respectively

    if not any(isinstance(m, (PatchDropout, PatchDropoutWithIndices)) for m in model.modules()):
        raise BackboneError(f"model.patch_drop needs a ViT-style timm backbone with token dropping; {name!r} has none "
                            "(set model.patch_drop=0)")


def _create(name: str, kwargs: dict[str, Any], explicit: set[str]) -> tuple[nn.Module, dict[str, Any]]:
    # timm offers no way to ask a model class which keywords it takes; a constructor rejects an unknown one
    # before building any layer, so trying is cheap. Only the arguments we added ourselves may be dropped.
    optional = [k for k in ("dynamic_img_size", "img_size") if k not in explicit]
    while True:
        try:
            return timm.create_model(name, pretrained=False, num_classes=0, **kwargs), kwargs
        except TypeError as err:
            dropped = next((k for k in optional if k in kwargs and f"'{k}'" in str(err)), None)
            if dropped is None:
                raise _build_error(name, kwargs, err) from None
            kwargs.pop(dropped)
        except (AssertionError, ValueError, ArithmeticError, RuntimeError) as err:
            # timm checks its arguments with asserts and lets torch fail on impossible sizes (embed_dim not a
            # multiple of num_heads, a negative depth); name and kwargs come from the recipe: the user's to fix
            raise _build_error(name, kwargs, err) from None


def _build_error(name: str, kwargs: dict[str, Any], err: Exception) -> BackboneError:
    if isinstance(err, RuntimeError) and "Unknown model" in str(err):
        return BackboneError(f"unknown timm model {name!r} (see timm.list_models())")
    if isinstance(err, TypeError) and "'patch_drop_rate'" in str(err):
        return BackboneError(f"model.patch_drop needs a ViT-style timm backbone; {name!r} does not drop tokens "
                             "(set model.patch_drop=0)")
    reason = str(err) or type(err).__name__  # a bare `assert` has no message
    return BackboneError(f"timm cannot build {name!r} with {kwargs}: {reason}")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / FSDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def pooled_features(backbone: nn.Module, images: Tensor) -> Tensor:
    """The backbone's own pooled embedding (B, num_features): CLS token for ViTs, average for convnets."""
    return backbone.forward_head(backbone.forward_features(images), pre_logits=True)


def patch_tokens(backbone: nn.Module, features: Tensor) -> Tensor:
    """Spatial tokens (B, N, C) of ``forward_features`` output, without CLS / register (prefix) tokens.

    Sequence models give (B, T, C) with ``num_prefix_tokens`` leading tokens; convnets give (B, C, H, W).
    """
    if features.ndim == 4:
        return features.flatten(2).transpose(1, 2)
    if features.ndim == 3:
        return features[:, getattr(backbone, "num_prefix_tokens", 0):]
    raise BackboneError(f"unexpected forward_features output of shape {tuple(features.shape)}")


def average_pooled(backbone: nn.Module, images: Tensor) -> Tensor:
    """Average of the patch tokens (B, num_features): the features SuperClass classifies."""
    return patch_tokens(backbone, backbone.forward_features(images)).mean(dim=1)


def num_features(backbone: nn.Module) -> int:
    return int(unwrap(backbone).num_features)


@torch.no_grad()
def describe(backbone: nn.Module) -> str:
    params = sum(p.numel() for p in backbone.parameters())
    return f"{type(unwrap(backbone)).__name__} ({params / 1e6:.2f} M parameters, {num_features(backbone)} features)"
