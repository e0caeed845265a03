"""CLIP and SigLIP baselines: image and text towers trained contrastively over the global batch."""

from __future__ import annotations

from torch import Tensor, nn

from .. import losses
from ..config import ModelConfig
from ..models.clip import CLIPTowers
from .base import Method, build_backbone
from .distributed import gather_with_grad


def build_contrastive(cfg, num_classes: int, resolved, zero_weight_ids=()) -> "ContrastiveMethod":
    """CLIP or SigLIP (``resolved.spec.name``): image and text towers; ``num_classes`` is ignored."""
    backbone = build_backbone(cfg)
    return ContrastiveMethod(resolved.spec.name, backbone, cfg.model, cfg.data.context_length)


class ContrastiveMethod(Method, CLIPTowers):
    """``kind`` "clip" (symmetric InfoNCE) or "siglip" (sigmoid pairs with a learnable bias).

    Under data parallelism the features of all ranks are gathered with gradient and every rank computes the
    loss over the global batch, so DDP's averaged gradient equals that of one process on the whole batch.
    Returned features are the local, L2-normalised ones.
    """

    inputs = ("image", "text")

    def __init__(self, kind: str, backbone: nn.Module, model_cfg: ModelConfig, context_length: int):
        if kind == "clip":
            CLIPTowers.__init__(self, backbone, model_cfg, context_length, model_cfg.init_logit_scale)
        else:
            CLIPTowers.__init__(
                self, backbone, model_cfg, context_length, model_cfg.siglip_init_logit_scale, model_cfg.init_logit_bias
            )
        self.name = kind

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]
        image_features = self.encode_image(images)
        text_features = self.encode_text(batch["text"].to(images.device, non_blocking=True))
        scale = self.scale()
        all_images, all_texts = gather_with_grad(image_features), gather_with_grad(text_features)
        out = {"image_features": image_features, "text_features": text_features, "logit_scale": scale}
        if self.logit_bias is None:
            out["loss"] = losses.clip_loss(all_images, all_texts, scale)
        else:
            out["loss"] = losses.siglip_loss(all_images, all_texts, scale, self.logit_bias)
            out["logit_bias"] = self.logit_bias
        return out
