"""CLIP / SigLIP towers: a timm image backbone with a projection, and open_clip's text transformer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

from ..config import ModelConfig
from .backbone import num_features

CLIP_VOCAB_SIZE = 49408  # OpenAI CLIP BPE table; <start_of_text> = 49406, <end_of_text> = 49407
MAX_LOGIT_SCALE = 100.0  # CLIP caps the temperature at 100 so training cannot blow the logits up


def build_text_tower(model_cfg: ModelConfig, context_length: int) -> TextTransformer:
    """open_clip's causal text transformer (random init), pooled at the end-of-text token (highest id)."""
    tower = TextTransformer(
        context_length=context_length,
        vocab_size=CLIP_VOCAB_SIZE,
        width=model_cfg.text_width,
        heads=model_cfg.text_heads,
        layers=model_cfg.text_layers,
        output_dim=model_cfg.embed_dim,
    )
    if model_cfg.grad_checkpointing:
        tower.set_grad_checkpointing(True)
    return tower


class CLIPTowers(nn.Module):
    """Image and text encoders into one embedding space, plus the learnable temperature (and SigLIP bias).

    ``backbone`` stays a plain headless timm model so it can be exported and evaluated like any other; the
    image projection lives beside it.
    """

    def __init__(
        self,
        backbone: nn.Module,
        model_cfg: ModelConfig,
        context_length: int,
        init_logit_scale: float,
        init_logit_bias: float | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        width = num_features(backbone)
        self.image_proj = nn.Linear(width, model_cfg.embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=width**-0.5)  # unit-variance outputs, as open_clip's proj
        self.text = build_text_tower(model_cfg, context_length)
        self.context_length = context_length
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        if init_logit_bias is None:
            self.logit_bias = None
        else:
            self.logit_bias = nn.Parameter(torch.tensor(float(init_logit_bias)))

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        pooled = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        features = self.image_proj(pooled)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self) -> Tensor:
        """exp(logit_scale) capped at 100 (the cap passes no gradient, which is how CLIP freezes it there)."""
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
