"""Models: timm backbones, classification heads, CLIP towers, and backbone export."""

from .backbone import average_pooled, create_backbone, patch_tokens, pooled_features, unwrap
from .export import export_backbone, load_backbone, read_spec
from .heads import AvgTokenHead, LinearHead, prior_bias

__all__ = [
    "AvgTokenHead",
    "LinearHead",
    "average_pooled",
    "create_backbone",
    "export_backbone",
    "load_backbone",
    "patch_tokens",
    "pooled_features",
    "prior_bias",
    "read_spec",
    "unwrap",
]
