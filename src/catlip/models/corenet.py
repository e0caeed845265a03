"""corenet's CatLIP ViT <-> catlip's: key names, the architecture a checkpoint holds, and reading one safely.

The CatLIP paper's released ViT-B/16, L/16 and H/16 are corenet ``state_dict`` files. Their ViT is a timm
``VisionTransformer`` with three settings that are catlip config values (not import-only code):
``model.stem=corenet`` (models/stems.py), ``backbone_kwargs.no_embed_class=true`` (the position table is added to
the patch tokens before the CLS token is prepended) and ``model.pos_resize=stretch`` (models/pos_embed.py); timm's
ViT already uses LayerNorm eps 1e-6, exact GELU and a 1/sqrt(64) attention scale, as corenet does. So the import
is a renaming of tensors (plus one reshape of the position table), in both directions:

================================================  ==============================================
corenet                                           catlip (method state dict)
================================================  ==============================================
``cls_token``                                     ``backbone.cls_token``
``pos_embed.pos_embed.pos_embed`` [1, 1, N, d]    ``backbone.pos_embed`` [1, N, d]
``patch_emb.0.block.conv`` / ``.norm``            ``backbone.patch_embed.proj.0`` / ``.1``
``patch_emb.1.block.conv`` / ``.norm``            ``backbone.patch_embed.proj.3`` / ``.4``
``patch_emb.2.block.conv``                        ``backbone.patch_embed.proj.6``
``transformer.i.pre_norm_mha.0``                  ``backbone.blocks.i.norm1``
``transformer.i.pre_norm_mha.1.qkv_proj``         ``backbone.blocks.i.attn.qkv`` (rows q; k; v in both)
``transformer.i.pre_norm_mha.1.out_proj_attn``    ``backbone.blocks.i.attn.proj`` (``out_proj`` without flash)
``transformer.i.pre_norm_ffn.0`` / ``.1`` / ``.4``  ``backbone.blocks.i.norm2`` / ``mlp.fc1`` / ``mlp.fc2``
``post_transformer_norm``                         ``backbone.norm``
``classifier``                                    ``head.fc``
``neural_augmentor.*``                            dropped (RangeAugment's six scalars: training only)
================================================  ==============================================
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from catlip.errors import CheckpointError

HEAD_DIM = 64  # every corenet ViT mode (tiny 192/3 ... huge 1280/20) uses 64-wide attention heads
PATCH = 16
TRAINING_ONLY = "neural_augmentor."  # RangeAugment's learnt ranges: not part of the network
# corenet's width -> the timm architecture of the same size (catlip passes every dimension explicitly anyway)
TIMM_NAMES = {(192, 12): "vit_tiny_patch16_224", (384, 12): "vit_small_patch16_224",
              (768, 12): "vit_base_patch16_224", (1024, 24): "vit_large_patch16_224",
              (1280, 32): "vit_huge_patch14_224"}
WRAPPERS = ("ema_state_dict", "ema", "state_dict", "model_state_dict", "model")  # EMA first: the paper's weights

_STEM = {"0.block.conv": "0", "0.block.norm": "1", "1.block.conv": "3", "1.block.norm": "4", "2.block.conv": "6"}
_BLOCK = {"pre_norm_mha.0": "norm1", "pre_norm_mha.1.qkv_proj": "attn.qkv", "pre_norm_mha.1.out_proj_attn": "attn.proj",
          "pre_norm_mha.1.out_proj": "attn.proj", "pre_norm_ffn.0": "norm2", "pre_norm_ffn.1": "mlp.fc1",
          "pre_norm_ffn.4": "mlp.fc2"}
_POS_CORENET, _POS_CATLIP = "pos_embed.pos_embed.pos_embed", "backbone.pos_embed"


def catlip_key(key: str) -> str | None:
    """The catlip method key of a corenet key (None: not part of the network, or unknown)."""
    if key == "cls_token":
        return "backbone.cls_token"
    if key == _POS_CORENET:
        return _POS_CATLIP
    m = re.fullmatch(r"patch_emb\.(\d\.block\.(?:conv|norm))\.(\w+)", key)
    if m and m.group(1) in _STEM:
        return f"backbone.patch_embed.proj.{_STEM[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"transformer\.(\d+)\.(pre_norm_\w+\.\d(?:\.\w+?)?)\.(weight|bias)", key)
    if m and m.group(2) in _BLOCK:
        return f"backbone.blocks.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(post_transformer_norm|classifier)\.(weight|bias)", key)
    if m:
        return ("backbone.norm." if m.group(1) == "post_transformer_norm" else "head.fc.") + m.group(2)
    return None


def corenet_key(key: str, flash: bool = True) -> str | None:
    """The corenet key of a catlip method key (the released files' flash-attention ``out_proj_attn`` names)."""
    if key == "backbone.cls_token":
        return "cls_token"
    if key == _POS_CATLIP:
        return _POS_CORENET
    m = re.fullmatch(r"backbone\.patch_embed\.proj\.(\d)\.(\w+)", key)
    stem = {v: k for k, v in _STEM.items()}
    if m and m.group(1) in stem:
        return f"patch_emb.{stem[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"backbone\.blocks\.(\d+)\.(\w+\.\w+|norm\d)\.(weight|bias)", key)
    if m:
        block = {v: k for k, v in _BLOCK.items() if not k.endswith("out_proj" if flash else "out_proj_attn")}
        if m.group(2) in block:
            return f"transformer.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(backbone\.norm|head\.fc)\.(weight|bias)", key)
    if m:
        return ("post_transformer_norm." if m.group(1) == "backbone.norm" else "classifier.") + m.group(2)
    return None


def to_catlip(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(catlip method state, corenet keys left out: training-only ones). Unknown keys are a CheckpointError."""
    out, dropped, unknown = {}, [], []
    for key, value in state.items():
        if key.startswith(TRAINING_ONLY):
            dropped.append(key)
            continue
        new = catlip_key(key)
        if new is None:
            unknown.append(key)
            continue
        out[new] = value.reshape(value.shape[0], -1, value.shape[-1]) if new == _POS_CATLIP else value
    if unknown:
        raise CheckpointError(f"{len(unknown)} tensor(s) that a corenet CatLIP ViT does not have: "
                              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    return out, dropped


def to_corenet(state: dict[str, torch.Tensor], flash: bool = True) -> dict[str, torch.Tensor]:
    """A catlip method state (a ``model.stem=corenet``, ``no_embed_class`` ViT with a linear head) in corenet's
    names and shapes; keys with no corenet counterpart are a CheckpointError."""
    out, unknown = {}, []
    for key, value in state.items():
        new = corenet_key(key, flash)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value.unsqueeze(1) if key == _POS_CATLIP else value
    if unknown:
        raise CheckpointError(f"no corenet name for {', '.join(unknown[:5])}")
    return out


# ---------------------------------------------------------------- reading a checkpoint


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """(plain corenet state dict, where it was found) from a ``.pt`` file, read with ``weights_only=True``.

    ``{"model" / "state_dict" / "ema" / ...: state}`` wrappers are unwrapped (EMA first) and a DDP ``module.``
    prefix is stripped; a pickle that carries code is refused before anything runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused: the file holds pickled code or objects, not plain tensors; it was "
                              f"not run ({str(err).splitlines()[0][:160]})") from None
    except Exception as err:  # noqa: BLE001 - torch.load's parser fails on foreign bytes with many types (IndexError on text)
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({' '.join(str(err).split())[:200]})") from None
    where = "top level"
    if isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
        name = next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if name is None:
            raise CheckpointError(f"{path}: no state dict inside (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
        obj, where = obj[name], f"[{name!r}]"
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CheckpointError(f"{path}: not a state dict of named tensors ({type(obj).__name__})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, where


def architecture(state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Width, depth, heads, MLP ratio, classes and position grid of a corenet CatLIP ViT state dict."""
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"transformer\.(\d+)\.", k))}
    if "cls_token" not in state or not blocks:
        sample = ", ".join(list(state)[:4])
        raise CheckpointError(f"{source}: not a corenet ViT checkpoint (no cls_token / transformer.N.pre_norm_mha "
                              f"tensors; it starts with {sample})")
    if "classifier.weight" not in state:
        raise CheckpointError(f"{source}: a corenet ViT without its classifier (classifier.weight): catlip imports "
                              "CatLIP checkpoints with their synset head")
    width = int(state["cls_token"].shape[-1])
    depth = max(blocks) + 1
    if sorted(blocks) != list(range(depth)):
        missing = sorted(set(range(depth)) - blocks)
        raise CheckpointError(f"{source}: transformer block(s) {missing[:5]} missing")
    if width % HEAD_DIM:
        raise CheckpointError(f"{source}: width {width} is not a multiple of corenet's head size {HEAD_DIM}")
    fc1 = state.get("transformer.0.pre_norm_ffn.1.weight")
    pos = state.get(_POS_CORENET)
    if fc1 is None or pos is None:
        raise CheckpointError(f"{source}: missing {'transformer.0.pre_norm_ffn.1.weight' if fc1 is None else _POS_CORENET}")
    side = math.isqrt(int(pos.shape[-2]))
    if side * side != pos.shape[-2]:
        raise CheckpointError(f"{source}: position table of {pos.shape[-2]} rows is not a square grid")
    return {"width": width, "depth": depth, "heads": width // HEAD_DIM, "mlp_ratio": fc1.shape[0] / width,
            "num_classes": int(state["classifier.weight"].shape[0]), "image_size": side * PATCH,
            "qkv_bias": "transformer.0.pre_norm_mha.1.qkv_proj.bias" in state}


def model_section(arch: dict[str, Any]) -> dict[str, Any]:
    """The ``model`` config section that builds this architecture (the paper's ViT layout)."""
    name = TIMM_NAMES.get((arch["width"], arch["depth"]), "vit_base_patch16_224")
    kwargs = {"patch_size": PATCH, "embed_dim": arch["width"], "depth": arch["depth"], "num_heads": arch["heads"],
              "mlp_ratio": arch["mlp_ratio"], "qkv_bias": arch["qkv_bias"], "no_embed_class": True}
    return {"backbone": name, "backbone_kwargs": kwargs, "image_size": arch["image_size"], "stem": "corenet",
            "pos_resize": "stretch"}


def check_fits(converted: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Missing, unexpected or mis-shaped tensors against the catlip model: one line naming them (corenet names)."""
    missing = [corenet_key(k) or k for k in expected if k not in converted]
    extra = [corenet_key(k) or k for k in converted if k not in expected]
    shapes = [f"{corenet_key(k) or k} {list(v.shape)} (expected {list(expected[k].shape)})"
              for k, v in converted.items() if k in expected and v.shape != expected[k].shape]
    problems = ([f"missing {', '.join(missing[:4])}"] if missing else []) + \
               ([f"unexpected {', '.join(extra[:4])}"] if extra else []) + \
               ([f"mis-shaped {'; '.join(shapes[:3])}"] if shapes else [])
    if problems:
        raise CheckpointError(f"{source}: does not fit a corenet CatLIP ViT: {'; '.join(problems)}")
