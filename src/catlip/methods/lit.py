"""LiT (Zhai et al., 2022): a locked pre-trained image tower, a new projection, a text tower trained with InfoNCE.

The stage that gives CatLIP and SuperClass backbones, which have no text encoder, open-vocabulary zero-shot and
retrieval. The image tower is the pre-trained backbone (``method.image_tower``, which the method asks the trainer
to load before the first step: ``catlip.train.lit.load_image_tower``); its weights never change unless
``method.unlocked_blocks`` opens the last blocks. Its pooled features are ``method.image_pool``: ``token`` (timm's
pooling, the CLS token CatLIP and CLIP were trained on) or ``avg`` (the mean patch token SuperClass's head reads).
With ``method.feature_cache`` the method lets the trainer serve those features precomputed (``image_features``,
from ``catlip.train.feature_cache``) instead of images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import losses
from ..errors import ConfigError
from ..models.backbone import patch_tokens
from ..models.clip import CLIPTowers
from .base import Method
from .distributed import gather_with_grad


def build_lit(cfg, num_classes: int, resolved, zero_weight_ids=()) -> "LiTMethod":
    """The LiT towers at random init; the trainer then loads the locked backbone from ``method.image_tower``."""
    from .base import build_backbone

    backbone = build_backbone(cfg)
    return LiTMethod(backbone, cfg.model, cfg.data.context_length, cfg.method.image_pool,
                     cfg.method.unlocked_blocks, image_tower=cfg.method.image_tower,
                     feature_cache=cfg.method.feature_cache)


def _blocks(backbone: nn.Module) -> nn.Sequential | nn.ModuleList:
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)):
        raise ConfigError(f"method.unlocked_blocks needs a transformer with `blocks`; {type(backbone).__name__} "
                          "has none (keep the whole tower locked)")
    return blocks


class LiTMethod(Method, CLIPTowers):
    """CLIP's towers and loss with the image backbone locked (``requires_grad`` off, kept in eval mode)."""

    name = "lit"
    inputs = ("image", "text")

    def __init__(self, backbone: nn.Module, model_cfg, context_length: int, image_pool: str = "token",
                 unlocked_blocks: int = 0, *, image_tower: str = "", feature_cache: str = ""):
        CLIPTowers.__init__(self, backbone, model_cfg, context_length, model_cfg.init_logit_scale)
        self.image_pool = image_pool
        self.unlocked_blocks = unlocked_blocks
        self.image_tower, self.feature_cache = image_tower, feature_cache
        self._lock()

    def preparations(self) -> dict:
        """The locked tower's weights come from ``method.image_tower`` before the first step."""
        tower = {"locked_tower": self.image_tower} if self.image_tower else {}
        return {**tower, **super().preparations()}

    def cached_inputs(self) -> dict[str, str]:
        """With ``method.feature_cache``, the locked tower's features of each image are computed once."""
        return {"image": self.feature_cache} if self.feature_cache else {}

    def _lock(self) -> None:
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if self.unlocked_blocks:
            blocks = _blocks(self.backbone)
            if self.unlocked_blocks > len(blocks):
                raise ConfigError(f"method.unlocked_blocks={self.unlocked_blocks} but the image tower has "
                                  f"{len(blocks)} blocks")
            opened = list(blocks[len(blocks) - self.unlocked_blocks:])
            opened.append(getattr(self.backbone, "norm", nn.Identity()))
            for module in opened:
                for p in module.parameters():
                    p.requires_grad_(True)

    def train(self, mode: bool = True) -> "LiTMethod":
        super().train(mode)
        if not self.unlocked_blocks:
            self.backbone.eval()  # a locked tower: no dropout / drop-path / token dropping, fixed norm statistics
        return self

    def image_features(self, images: Tensor) -> Tensor:
        """The locked tower's pooled features (B, D): what the projection reads and the feature cache stores."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.unlocked_blocks > 0):
            feats = self.backbone.forward_features(images)
            if self.image_pool == "avg":
                return patch_tokens(self.backbone, feats).mean(dim=1)
            return self.backbone.forward_head(feats, pre_logits=True)

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        return self.project(self.image_features(images), normalize)

    def project(self, features: Tensor, normalize: bool = True) -> Tensor:
        out = self.image_proj(features)
        return torch.nn.functional.normalize(out, dim=-1) if normalize else out

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cached = batch.get("image_features")
        image_features = self.project(cached) if cached is not None else self.encode_image(batch["image"])
        text_features = self.encode_text(batch["text"].to(image_features.device, non_blocking=True))
        scale = self.scale()
        loss = losses.clip_loss(gather_with_grad(image_features), gather_with_grad(text_features), scale)
        return {"loss": loss, "image_features": image_features, "text_features": text_features,
                "logit_scale": scale}

