"""SuperCLIP (Zhao et al., NeurIPS 2025): CLIP plus a SuperClass-style token-classification head.

The image and text towers are CLIP's (``CLIPTowers``); the extra head is SuperClass's
(:class:`~catlip.models.heads.AvgTokenHead`: LayerNorm + one ``nn.Linear`` on the mean of the patch tokens, as the
reference code hustvl/SuperCLIP does with its ``layers: 0`` class head) over the label vocabulary (by default the
label source ``bpe``: the whole CLIP BPE table, class ids = BPE ids). One ``forward_features`` pass feeds both:
the CLIP image embedding is ``image_proj`` of timm's pooled embedding (CLS token for a ViT), the classifier reads
the patch tokens of the same pass, so the extra cost is the head alone. The loss is

    loss = clip_loss(image, text) + method.superclip_weight * classification_loss(head(pooled), targets)

with the classification loss ``method.loss`` (default ``idf_softmax``: SuperClass's IDF-weighted softmax, the IDF
statistics kept and updated exactly as in :class:`~catlip.methods.classification.ClassificationMethod`; the
reference sums the two losses, i.e. ``superclip_weight`` 1, the default). Both
parts are logged (``clip_loss``, ``cls_loss``). Under data parallelism the contrastive part is computed over the
gathered global batch (as CLIP) and the classification part is a per-sample mean over the local batch, so DDP's
averaged gradient is that of one process on the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor, nn
from torch.nn import functional as F

from .. import losses
from ..config import ModelConfig
from ..models.clip import CLIPTowers
from .base import Method, build_backbone
from .classification import LabelHead, check_label_head
from .distributed import gather_with_grad


def build_superclip(cfg, num_classes: int, resolved, zero_weight_ids=()) -> "SuperCLIPMethod":
    """SuperCLIP: CLIP towers + LayerNorm/Linear(mean patch token -> ``num_classes``) with ``resolved.loss``."""
    from ..errors import ConfigError

    loss = resolved.loss
    check_label_head("superclip", loss, num_classes)
    weight = float(getattr(cfg.method, "superclip_weight", 1.0))
    if not weight >= 0.0:
        raise ConfigError(f"method.superclip_weight must be >= 0, got {weight}")
    backbone = build_backbone(cfg)
    return SuperCLIPMethod(backbone, cfg.model, cfg.data.context_length, num_classes, loss, weight=weight,
                           use_idf=cfg.method.use_idf, zero_weight_ids=zero_weight_ids,
                           idf_momentum=cfg.method.idf_momentum, name=resolved.spec.name)


class SuperCLIPMethod(LabelHead, Method, CLIPTowers):
    """CLIP towers, the learnable temperature, and a classification head (``head.fc``) over the label vocabulary.

    ``head`` is SuperClass's :class:`~catlip.models.heads.AvgTokenHead` (``pool`` = LayerNorm of the mean patch
    token), so evaluation's feature extractor, Transfer Init and head zero-shot read it like SuperClass's; text
    zero-shot (the registry's mode) uses the text tower.
    """

    inputs = ("image", "text", "label_ids")

    def __init__(
        self,
        backbone: nn.Module,
        model_cfg: ModelConfig,
        context_length: int,
        num_classes: int,
        loss: str = "idf_softmax",
        *,
        weight: float = 1.0,
        use_idf: bool = True,
        zero_weight_ids: Iterable[int] = (),
        idf_momentum: float = 0.0,
        name: str = "superclip",
    ):
        from ..models.backbone import num_features
        from ..models.heads import AvgTokenHead

        CLIPTowers.__init__(self, backbone, model_cfg, context_length, model_cfg.init_logit_scale)
        self.name = name
        self.weight = float(weight)
        self.init_label_head(AvgTokenHead(num_features(backbone), num_classes), num_classes, loss, use_idf=use_idf,
                             zero_weight_ids=zero_weight_ids, idf_momentum=idf_momentum)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        images = batch["image"]
        tokens = self.backbone.forward_features(images)  # one pass for both heads
        pooled = self.backbone.forward_head(tokens, pre_logits=True)
        image_features = F.normalize(self.image_proj(pooled), dim=-1)
        text_features = self.encode_text(batch["text"].to(images.device, non_blocking=True))
        scale = self.scale()
        contrastive = losses.clip_loss(gather_with_grad(image_features), gather_with_grad(text_features), scale)
        logits = self.head(self.head.pool(self.backbone, tokens))
        targets = self.targets(batch["label_ids"].to(images.device, non_blocking=True))
        classification = self.classification_loss(logits, targets)
        return {"loss": contrastive + self.weight * classification, "clip_loss": contrastive.detach(),
                "cls_loss": classification.detach(), "image_features": image_features,
                "text_features": text_features, "logit_scale": scale, "logits": logits, "targets": targets}
