"""Pre-training methods: ``build_method(cfg, num_classes)`` is all the trainer needs."""

from __future__ import annotations

from collections.abc import Iterable

from ..config import Config, ConfigError
from ..losses import CLASSIFICATION_LOSSES
from ..models.backbone import create_backbone, num_features
from ..models.clip import CLIP_VOCAB_SIZE
from ..models.heads import AvgTokenHead, LinearHead
from .base import Method
from .classification import ClassificationMethod
from .contrastive import ContrastiveMethod

DEFAULT_LOSS = {"catlip": "bce", "superclass": "idf_softmax", "clip": "clip", "siglip": "siglip"}
# CLIP BPE ids that carry no caption content: <start_of_text>, <end_of_text>, and 0 (open_clip's padding id).
BPE_SPECIAL_IDS = (0, 49406, 49407)

__all__ = ["BPE_SPECIAL_IDS", "ClassificationMethod", "ContrastiveMethod", "Method", "build_method"]


def build_method(cfg: Config, num_classes: int, *, zero_weight_ids: Iterable[int] | None = None) -> Method:
    """The model and loss of ``cfg.method.name`` (catlip | superclass | clip | siglip), randomly initialised.

    ``num_classes`` is the vocabulary size (ignored by clip / siglip). ``zero_weight_ids``: classes that are
    never targets; by default the BPE special tokens for SuperClass over the full BPE table, else none.
    """
    name = cfg.method.name
    loss = cfg.method.loss or DEFAULT_LOSS.get(name, "")
    backbone = create_backbone(cfg.model, cfg.data.image_size, dynamic_img_size=cfg.data.multiscale)
    if name in ("clip", "siglip"):
        if loss != name:
            raise ConfigError(f"method {name} trains with its own loss; method.loss={cfg.method.loss!r} is unsupported")
        return ContrastiveMethod(name, backbone, cfg.model, cfg.data.context_length)
    if name not in ("catlip", "superclass"):
        raise ConfigError(f"unknown method {name!r}; choose catlip, superclass, clip or siglip")
    if loss not in CLASSIFICATION_LOSSES:
        known = ", ".join(sorted(CLASSIFICATION_LOSSES))
        raise ConfigError(f"method.loss={loss!r} is not a classification loss; choose from {known}")
    if num_classes < 1:
        raise ConfigError(f"{name} needs a non-empty label vocabulary (got {num_classes} classes)")
    if name == "catlip":
        head = LinearHead(num_features(backbone), num_classes, cfg.model.head_bias_init)
    else:
        head = AvgTokenHead(num_features(backbone), num_classes)
    if zero_weight_ids is None:
        zero_weight_ids = BPE_SPECIAL_IDS if name == "superclass" and num_classes == CLIP_VOCAB_SIZE else ()
    return ClassificationMethod(
        name,
        backbone,
        head,
        num_classes,
        loss,
        use_idf=cfg.method.use_idf,
        zero_weight_ids=zero_weight_ids,
        idf_momentum=cfg.method.idf_momentum,
    )
