"""Export a two-tower run (CLIP, SigLIP, SuperCLIP, LiT) for open_clip, converted to its native ViT.

open_clip's ``TimmModel`` adapter rebuilds an image tower from a registered timm name only, and catlip's ViTs use
custom sizes (``model.backbone_kwargs``), so the timm ViT is converted to open_clip's own ``VisionTransformer``:

- ``patch_embed.proj`` -> ``conv1``, which has no bias: the conv bias is added to every patch row of
  ``positional_embedding`` (both are added to the patch tokens before anything else, so the sum is the same);
- ``cls_token`` / ``pos_embed`` -> ``class_embedding`` / ``positional_embedding`` (a zero row for the class token
  when timm adds no position to it, ``no_embed_class``);
- ``norm_pre`` -> ``ln_pre`` (``no_ln_pre`` when timm has none), blocks -> ``transformer.resblocks`` (fused qkv ->
  ``attn.in_proj_*``, absent biases as zeros), the final LayerNorm -> ``ln_post``, ``image_proj.weight.T`` ->
  ``proj``; every LayerNorm keeps timm's eps through ``vision_cfg.norm_kwargs``.

The image embedding follows the run's ``image_pool`` (LiT; a method without one pools like CLIP, ``token``):
``token`` is timm's own pooling (CLS token, or the patch mean for ``global_pool="avg"``), ``avg`` the mean of the
patch tokens of ``forward_features``. The text tower is open_clip's ``TextTransformer`` already, so with
``custom_text`` (``CustomTextCLIP``) its ``text.*`` weights are copied as they are. The folder holds

- ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``: catlip's evaluation transform) and
  ``open_clip_model.safetensors``: ``open_clip.create_model_and_transforms("local-dir:DIR")``;
- ``<name>.json``, the ``model_cfg`` alone: ``open_clip.add_model_config("DIR/<name>.json")`` then
  ``create_model_and_transforms("<name>", pretrained="DIR/open_clip_model.safetensors",
  image_interpolation="bilinear")`` (a named config carries no preprocessing: bilinear is the one field that
  differs from open_clip's defaults).

Whatever open_clip cannot compute exactly the same way is refused with an :class:`~catlip.errors.ExportError`, and
the export checks itself: the converted model must give the run's embeddings before anything is written.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ExportError
from .backbone import unwrap
from .export import preprocessing, save_tensors, staged, write_json

CONFIG_NAME, WEIGHTS_NAME = "open_clip_config.json", "open_clip_model.safetensors"
FORMAT = "catlip-open_clip-1"
IMAGE_POOLS = ("token", "avg")
VERIFY_ATOL = 1e-4  # on L2-normalised embeddings: far above float32 noise, far below any conversion mistake


def export_open_clip(method: nn.Module, out_dir: str | Path, *, image_size: int, context_length: int,
                     preprocess: dict[str, Any] | None = None, name: str | None = None,
                     verify: bool = True) -> dict[str, Any]:
    """Write ``method``'s towers to the folder ``out_dir`` for open_clip; returns what was written.

    ``preprocess``: timm ``pretrained_cfg``-style fields (:func:`catlip.models.export.preprocessing`, the
    default); ``name``: the open_clip model name of ``<name>.json`` (default ``catlip-<folder name>``).
    Returns ``{"dir", "name", "weights", "config", "model_config", "model_cfg", "preprocess_cfg"}``.
    """
    method = unwrap(method)
    model_cfg, tensors = convert(method, image_size=image_size, context_length=context_length)
    preprocess_cfg = open_clip_preprocess(preprocess or preprocessing(image_size))
    if verify:
        check_conversion(method, model_cfg, tensors)
    out = Path(out_dir)
    name = name or "catlip-" + re.sub(r"[^A-Za-z0-9._-]+", "-", out.resolve().name)
    written = {"dir": str(out), "name": name, "weights": str(out / WEIGHTS_NAME), "config": str(out / CONFIG_NAME),
               "model_config": str(out / f"{name}.json"), "model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    _write(out, written, tensors)
    return written


def _write(out: Path, written: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    files = [Path(written[k]) for k in ("weights", "config", "model_config")]
    try:
        with staged(*files) as (weights, config, model_config):
            save_tensors(tensors, weights, {"format": "pt", "catlip_format": FORMAT})
            write_json(config, {"model_cfg": written["model_cfg"], "preprocess_cfg": written["preprocess_cfg"]})
            write_json(model_config, written["model_cfg"])
    except OSError as err:
        raise ExportError(f"cannot write the open_clip export {out}: {err.strerror or err}") from None


# ---------------------------------------------------------------- the whole model


def convert(method: nn.Module, *, image_size: int, context_length: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(open_clip ``model_cfg``, ``CustomTextCLIP`` state dict) of a two-tower method; refuses what does not fit."""
    _check_towers(method)
    vit = unwrap(method.backbone)
    pool_type, final_ln_after_pool, post_norm = _pooling(vit, getattr(method, "image_pool", None) or "token")
    vision_cfg = _vision_cfg(vit, image_size, pool_type, final_ln_after_pool, post_norm)
    tensors = {f"visual.{k}": v for k, v in _vision_state(vit, post_norm).items()}
    tensors["visual.proj"] = method.image_proj.weight.detach().t()
    text_cfg = _text_cfg(method.text, context_length)
    tensors.update({f"text.{k}": v for k, v in method.text.state_dict().items()})
    # open_clip does not cap the temperature; CLIPTowers.scale() does, so the capped value is what the run used
    from .clip import MAX_LOGIT_SCALE

    tensors["logit_scale"] = method.logit_scale.detach().clamp(max=math.log(MAX_LOGIT_SCALE))
    model_cfg: dict[str, Any] = {"embed_dim": method.image_proj.out_features, "custom_text": True,
                                 "quick_gelu": False, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if getattr(method, "logit_bias", None) is not None:
        model_cfg["init_logit_bias"] = method.logit_bias.item()  # makes open_clip create the parameter at all
        tensors["logit_bias"] = method.logit_bias.detach()
    return model_cfg, {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _check_towers(method: nn.Module) -> None:
    if not all(isinstance(getattr(method, k, None), nn.Module) for k in ("backbone", "text", "image_proj")):
        raise ExportError(f"a {getattr(method, 'name', type(method).__name__)} run has no text tower, so open_clip "
                          "has nothing to pair its images with: train one on its frozen backbone with `catlip lit` "
                          "first and export that run (or export the backbone alone with --format timm)")
    spec = getattr(unwrap(method.backbone), "catlip_spec", None) or {}
    if spec.get("stem", "patch") != "patch":
        raise ExportError(f"a ViT with model.stem={spec['stem']} has a convolutional stem that open_clip's "
                          "VisionTransformer (one patch convolution) cannot represent")
    if spec.get("pos_resize", "grid") != "grid":
        raise ExportError(f"a ViT with model.pos_resize={spec['pos_resize']} stretches its position table in 1-D "
                          "at other input sizes; open_clip's VisionTransformer resamples it in 2-D")
    proj = method.image_proj
    if not isinstance(proj, nn.Linear) or proj.bias is not None:
        raise ExportError("open_clip's image projection is one bias-free matrix; this run's image_proj is "
                          f"{type(proj).__name__}{' with a bias' if isinstance(proj, nn.Linear) else ''}")
    text_dim = getattr(method.text, "output_dim", None)
    if text_dim != proj.out_features:
        raise ExportError(f"the text tower embeds into {text_dim} dimensions, the image tower into "
                          f"{proj.out_features}; open_clip needs one embed_dim")


# ---------------------------------------------------------------- image tower


def _is_ln(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1


def _pooling(vit: nn.Module, image_pool: str) -> tuple[str, bool, nn.Module]:
    """(open_clip ``pool_type``, ``final_ln_after_pool``, the module that becomes ``ln_post``) for the run's pooling.

    open_clip's ViT has exactly one final LayerNorm, ``ln_post``: on every token before pooling, or (with
    ``final_ln_after_pool``) on the pooled vector, i.e. timm's ``norm`` or its ``fc_norm``, one of the two.
    """
    if image_pool not in IMAGE_POOLS:
        raise ExportError(f"unknown image_pool {image_pool!r} (open_clip export knows {' | '.join(IMAGE_POOLS)})")
    if image_pool == "avg":  # the mean patch token of forward_features: after `norm`, no fc_norm
        pool, fc_norm = "avg", nn.Identity()
    else:
        pool, fc_norm = getattr(vit, "global_pool", None), getattr(vit, "fc_norm", nn.Identity())
        if getattr(vit, "attn_pool", None) is not None or pool not in ("token", "avg"):
            raise ExportError(f"open_clip's ViT pools the class token or the patch mean; this backbone pools "
                              f"{pool!r}")
        if pool == "avg" and getattr(vit, "pool_include_prefix", False):
            raise ExportError("open_clip's average pooling leaves the class token out; this backbone includes it")
    norm = getattr(vit, "norm", None)
    open_pool = "tok" if pool == "token" else "avg"
    if _is_ln(norm) and isinstance(fc_norm, nn.Identity):
        return open_pool, False, norm
    if isinstance(norm, nn.Identity) and _is_ln(fc_norm):
        return open_pool, True, fc_norm
    raise ExportError(f"open_clip's ViT ends with exactly one LayerNorm (before or after pooling); with "
                      f"image_pool={image_pool} this backbone has norm={type(norm).__name__}, "
                      f"fc_norm={type(fc_norm).__name__}")


def _check_vit(vit: nn.Module, image_size: int) -> None:
    from timm.layers import PatchEmbed
    from timm.models.vision_transformer import VisionTransformer

    if type(vit) is not VisionTransformer:  # subclasses (EVA, ...) compute their blocks differently
        raise ExportError(f"open_clip export converts timm VisionTransformer backbones only, not "
                          f"{type(vit).__name__}")
    if getattr(vit, "cls_token", None) is None or vit.num_prefix_tokens != 1 or vit.pos_embed is None:
        raise ExportError("open_clip's ViT has exactly one class token and learned position embeddings; this "
                          f"backbone has {vit.num_prefix_tokens} prefix tokens (register/distillation tokens or none)"
                          f"{' and no position embedding' if vit.pos_embed is None else ''}")
    pe = vit.patch_embed
    conv = getattr(pe, "proj", None)
    if (type(pe) is not PatchEmbed or not isinstance(conv, nn.Conv2d) or conv.kernel_size != conv.stride
            or conv.kernel_size[0] != conv.kernel_size[1] or any(conv.padding) or conv.in_channels != 3
            or not isinstance(pe.norm, nn.Identity) or getattr(pe, "dynamic_img_pad", False)):
        raise ExportError("open_clip's ViT embeds patches with one square stride-p convolution on RGB and no norm; "
                          "this backbone's patch embedding differs")
    p = conv.kernel_size[0]
    if image_size % p or tuple(pe.grid_size) != (image_size // p,) * 2:
        raise ExportError(f"the position embeddings cover a {tuple(pe.grid_size)} patch grid, not {image_size} px "
                          f"at patch size {p}; export at the training image size")
    if not (isinstance(vit.norm_pre, nn.Identity) or _is_ln(vit.norm_pre)):
        raise ExportError(f"open_clip's ln_pre is a LayerNorm; this backbone's norm_pre is "
                          f"{type(vit.norm_pre).__name__}")
    for i, block in enumerate(vit.blocks):
        _check_block(i, block)


def _check_block(i: int, block: nn.Module) -> None:
    from timm.layers import Attention, LayerScale, Mlp
    from timm.models.vision_transformer import Block

    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    problem = None
    if type(block) is not Block or type(attn) is not Attention or type(mlp) is not Mlp:
        problem = f"{type(block).__name__} / {type(attn).__name__} / {type(mlp).__name__} instead of timm's Block"
    elif not all(isinstance(m, nn.Identity) for m in (attn.q_norm, attn.k_norm, attn.norm, mlp.norm)):
        problem = "qk-norm or an extra norm inside attention / MLP"
    elif getattr(attn, "gate", None) is not None or attn.num_heads * attn.head_dim != attn.qkv.in_features:
        problem = "gated attention or a custom head width"
    elif type(mlp.act) is not nn.GELU or mlp.act.approximate != "none":
        problem = f"activation {mlp.act} (open_clip uses exact GELU)"
    elif not (_is_ln(block.norm1) and _is_ln(block.norm2)):
        problem = "norms other than LayerNorm"
    elif {type(block.ls1), type(block.ls2)} not in ({nn.Identity}, {LayerScale}):
        problem = "layer scale on one branch only"
    if problem:
        raise ExportError(f"open_clip's ViT block cannot represent block {i} of this backbone: {problem}")


def _layer_norms(vit: nn.Module, post_norm: nn.Module) -> list[nn.LayerNorm]:
    norms = [vit.norm_pre, post_norm] + [n for b in vit.blocks for n in (b.norm1, b.norm2)]
    return [n for n in norms if _is_ln(n)]


def _vision_cfg(vit: nn.Module, image_size: int, pool_type: str, final_ln_after_pool: bool,
                post_norm: nn.Module) -> dict[str, Any]:
    _check_vit(vit, image_size)
    eps = {float(n.eps) for n in _layer_norms(vit, post_norm)}
    if len(eps) != 1:
        raise ExportError(f"open_clip's ViT uses one LayerNorm eps; this backbone mixes {sorted(eps)}")
    block = vit.blocks[0]
    width, hidden = block.mlp.fc1.in_features, block.mlp.fc1.out_features
    cfg: dict[str, Any] = {
        "image_size": int(image_size), "patch_size": vit.patch_embed.proj.kernel_size[0], "width": width,
        "layers": len(vit.blocks), "head_width": block.attn.head_dim, "mlp_ratio": hidden / width,
        "no_ln_pre": isinstance(vit.norm_pre, nn.Identity), "pool_type": pool_type,
        "final_ln_after_pool": final_ln_after_pool, "norm_kwargs": {"eps": eps.pop()},
    }
    if int(width * cfg["mlp_ratio"]) != hidden:
        raise ExportError(f"open_clip computes the MLP width as int(width * mlp_ratio), which misses {hidden}")
    if not isinstance(block.ls1, nn.Identity):
        cfg["ls_init_value"] = 1.0  # any value: open_clip then has ls_1/ls_2.gamma, overwritten by the weights
    return cfg


def _ln(prefix: str, norm: nn.LayerNorm) -> dict[str, Tensor]:
    ones = torch.ones(norm.normalized_shape)  # a LayerNorm without affine (or bias) is one with 1 (and 0)
    weight = norm.weight if norm.weight is not None else ones
    bias = norm.bias if norm.bias is not None else torch.zeros_like(ones)
    return {f"{prefix}.weight": weight.detach(), f"{prefix}.bias": bias.detach()}


def _linear(prefix: str, linear: nn.Linear) -> dict[str, Tensor]:
    bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
    return {f"{prefix}.weight": linear.weight.detach(), f"{prefix}.bias": bias.detach()}


def _block_state(prefix: str, block: nn.Module) -> dict[str, Tensor]:
    qkv = _linear("in_proj", block.attn.qkv)  # q, k, v stacked by rows, heads contiguous: MHA's own layout
    state = {**_ln(f"{prefix}.ln_1", block.norm1), **_ln(f"{prefix}.ln_2", block.norm2),
             f"{prefix}.attn.in_proj_weight": qkv["in_proj.weight"], f"{prefix}.attn.in_proj_bias": qkv["in_proj.bias"],
             **_linear(f"{prefix}.attn.out_proj", block.attn.proj),
             **_linear(f"{prefix}.mlp.c_fc", block.mlp.fc1), **_linear(f"{prefix}.mlp.c_proj", block.mlp.fc2)}
    if not isinstance(block.ls1, nn.Identity):
        state[f"{prefix}.ls_1.gamma"] = block.ls1.gamma.detach()
        state[f"{prefix}.ls_2.gamma"] = block.ls2.gamma.detach()
    return state


def _vision_state(vit: nn.Module, post_norm: nn.Module) -> dict[str, Tensor]:
    conv = vit.patch_embed.proj
    pos = vit.pos_embed.detach()[0].float()
    if vit.no_embed_class:  # timm adds no position to the class token; open_clip always adds row 0
        pos = torch.cat([pos.new_zeros(1, pos.shape[1]), pos])
    if conv.bias is not None:  # open_clip's conv1 has no bias: both sums reach the patch tokens unchanged
        pos = torch.cat([pos[:1], pos[1:] + conv.bias.detach().float()])
    state = {"conv1.weight": conv.weight.detach(), "class_embedding": vit.cls_token.detach().reshape(-1),
             "positional_embedding": pos.to(vit.pos_embed.dtype)}
    if not isinstance(vit.norm_pre, nn.Identity):
        state.update(_ln("ln_pre", vit.norm_pre))
    for i, block in enumerate(vit.blocks):
        state.update(_block_state(f"transformer.resblocks.{i}", block))
    state.update(_ln("ln_post", post_norm))
    return state


# ---------------------------------------------------------------- text tower


def _text_cfg(text: nn.Module, context_length: int) -> dict[str, Any]:
    """open_clip ``text_cfg`` that rebuilds this ``TextTransformer`` (catlip's :func:`build_text_tower`)."""
    from open_clip.transformer import LayerNorm, ResidualAttentionBlock, TextTransformer

    if type(text) is not TextTransformer:
        raise ExportError(f"open_clip export needs open_clip's TextTransformer, not {type(text).__name__}")
    if text.context_length != context_length:
        raise ExportError(f"the text tower has {text.context_length} positions, not context_length={context_length}")
    blocks = list(text.transformer.resblocks)
    if (text.cls_emb is not None or text.use_pad_mask or not blocks
            or any(type(b) is not ResidualAttentionBlock or not isinstance(b.ls_1, nn.Identity) for b in blocks)
            or any(type(b.mlp.gelu) is not nn.GELU or b.mlp.gelu.approximate != "none" for b in blocks)):
        raise ExportError("this text tower uses options (class token, padding mask, custom blocks, layer scale, "
                          "another activation) that the export does not carry over")
    norms = [text.ln_final] + [n for b in blocks for n in (b.ln_1, b.ln_2)]
    eps = {float(n.eps) for n in norms}
    if len(eps) != 1 or any(type(n) is not LayerNorm for n in norms):
        raise ExportError("open_clip's text tower uses one LayerNorm class and eps; this one mixes them")
    width, hidden = text.width, blocks[0].mlp.c_fc.out_features
    cfg: dict[str, Any] = {
        "context_length": text.context_length, "vocab_size": text.vocab_size, "width": width, "heads": text.heads,
        "layers": len(blocks), "mlp_ratio": hidden / width, "pool_type": text.pool_type, "eos_id": text.eos_id,
        "pad_id": text.pad_id, "no_causal_mask": text.attn_mask is None,
        "proj_type": "none" if text.text_projection is None else "linear",
        "proj_bias": isinstance(text.text_projection, nn.Linear),
    }
    if eps != {1e-5}:  # open_clip's LayerNorm default
        cfg["norm_kwargs"] = {"eps": eps.pop()}
    return cfg


# ---------------------------------------------------------------- preprocessing and the self-check


def open_clip_preprocess(timm_cfg: dict[str, Any]) -> dict[str, Any]:
    """open_clip ``preprocess_cfg`` of timm ``pretrained_cfg``-style fields (catlip's evaluation transform).

    open_clip's eval transform resizes the shorter side and center-crops to ``size`` ("shortest"), which is
    timm's ``crop_pct`` 1.0 / ``crop_mode`` center and catlip's ``eval_transform``; other crops have no
    open_clip equivalent.
    """
    size = timm_cfg["input_size"][-2:]
    if size[0] != size[1] or float(timm_cfg.get("crop_pct", 1.0)) != 1.0 or timm_cfg.get("crop_mode") != "center":
        raise ExportError(f"open_clip's evaluation transform resizes and center-crops a square; cannot express "
                          f"input_size={tuple(timm_cfg['input_size'])}, crop_pct={timm_cfg.get('crop_pct')}, "
                          f"crop_mode={timm_cfg.get('crop_mode')}")
    if timm_cfg["interpolation"] not in ("bilinear", "bicubic"):
        raise ExportError(f"open_clip resizes with bilinear or bicubic, not {timm_cfg['interpolation']!r}")
    return {"size": int(size[0]), "mode": "RGB", "mean": [float(x) for x in timm_cfg["mean"]],
            "std": [float(x) for x in timm_cfg["std"]], "interpolation": timm_cfg["interpolation"],
            "resize_mode": "shortest", "fill_color": 0}


@torch.no_grad()
def check_conversion(method: nn.Module, model_cfg: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Build the open_clip model from ``model_cfg``, load ``tensors`` strictly, and compare embeddings with
    ``method``'s on random images and token rows: anything the checks above missed fails here, not downstream."""
    from open_clip.model import CustomTextCLIP

    model = CustomTextCLIP(**{k: v for k, v in model_cfg.items() if k != "custom_text"}).eval()
    model.load_state_dict(tensors, strict=True)
    g = torch.Generator().manual_seed(0)
    size, ctx = model_cfg["vision_cfg"]["image_size"], model_cfg["text_cfg"]["context_length"]
    images = torch.randn(2, 3, size, size, generator=g)
    tokens = torch.zeros(2, ctx, dtype=torch.long)  # <start> a photo <end>, and an empty caption
    tokens[0, :4], tokens[1, :2] = torch.tensor([49406, 320, 1125, 49407]), torch.tensor([49406, 49407])
    was_training, param = method.training, next(method.parameters())
    method.eval()
    try:
        ours_image = method.encode_image(images.to(param.device, param.dtype)).float().cpu()
        ours_text = method.encode_text(tokens.to(param.device)).float().cpu()
    finally:
        method.train(was_training)
    for kind, ours, theirs in (("image", ours_image, model.encode_image(images, normalize=True)),
                               ("text", ours_text, model.encode_text(tokens, normalize=True))):
        err = (F.normalize(ours, dim=-1) - theirs).abs().max().item()  # whatever catlip's normalize default
        if not err <= VERIFY_ATOL:
            raise ExportError(f"the converted open_clip model's {kind} embeddings differ from the run's by {err:.2e} "
                              "(an unsupported backbone option?)")

