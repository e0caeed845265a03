"""Export a pre-trained backbone as a timm-loadable safetensors file.

The file holds the headless backbone's ``state_dict`` plus, in the safetensors metadata, the timm model name and
the keyword arguments it was built with, so it loads anywhere with

    timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=path), **kwargs)

:func:`load_backbone` does exactly that (also forcing ``custom_load=False``, so timm never hands the file to a
model's own JAX ``.npz`` loader) and checks that every stored tensor was used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import timm
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import CheckpointError
from .backbone import unwrap

FORMAT = "catlip-backbone-1"


def export_backbone(method: nn.Module, path: str | Path) -> dict[str, Any]:
    """Write ``method.backbone`` to ``path`` (atomically) and return the timm spec ``{"name", "kwargs"}``."""
    backbone = unwrap(unwrap(method).backbone)
    spec = getattr(backbone, "catlip_spec", None)
    if spec is None:
        raise CheckpointError("this backbone was not built by catlip.models.create_backbone; its timm spec is unknown")
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    metadata = {"format": FORMAT, "timm_model": spec["name"], "timm_kwargs": json.dumps(spec["kwargs"])}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])}


def read_spec(path: str | Path) -> dict[str, Any]:
    """The timm name and kwargs stored in an exported backbone file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own (non-OSError) type for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a catlip backbone export (format {meta.get('format')!r})")
    return {"name": meta["timm_model"], "kwargs": json.loads(meta["timm_kwargs"])}


def load_backbone(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild an exported backbone through timm's own pretrained-file loader; ``overrides`` change kwargs."""
    spec = read_spec(path)
    kwargs = {**spec["kwargs"], **overrides}
    overlay = {"file": str(path), "custom_load": False}
    model = timm.create_model(spec["name"], pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs)
    # timm loads non-strictly when num_classes differs from its default; make sure nothing was left out.
    with safe_open(str(path), framework="pt") as f:
        stored = set(f.keys())
    expected = set(model.state_dict())
    if stored != expected:
        missing, extra = sorted(expected - stored), sorted(stored - expected)
        raise CheckpointError(
            f"{path}: weights do not fit {spec['name']}: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    return model
