"""Export a pre-trained backbone for timm, with the preprocessing it was trained with.

An export holds the headless backbone's ``state_dict`` and a timm ``config.json``-style description: the timm
``architecture``, its ``model_args`` (the keyword arguments it was built with) and a ``pretrained_cfg`` whose
``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean`` and ``std`` are the run's own (CLIP
mean/std, ``model.image_size``, bilinear resize of the shorter side + center crop, as ``catlip probe`` evaluates).
The description is in the safetensors metadata and in a JSON file beside the weights, in one of two layouts:

- ``-o backbone.safetensors`` (a path ending in ``.safetensors``): the weights plus ``backbone.json``; with any
  timm >= 1.0::

      cfg = json.load(open("backbone.json"))
      model = timm.create_model(cfg["architecture"], pretrained=True,
                                pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file="backbone.safetensors"),
                                **cfg["model_args"])

- ``-o backbone`` (any other path: a folder): timm's Hugging Face layout ``model.safetensors`` + ``config.json``;
  with a timm that has local folders (``local-dir:``, 2025 and later)::

      model = timm.create_model("local-dir:backbone", pretrained=True)

Either way the model is headless (``num_classes=0``) and ``timm.data.resolve_data_config({}, model=model)``
(or ``resolve_model_data_config(model)``) gives the training preprocessing. :func:`load_backbone` does the first
call from the file alone (also forcing ``custom_load=False``, so timm never hands the file to a model's own JAX
``.npz`` loader) and checks that every stored tensor was used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import timm
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..atomic import staged  # noqa: F401  (re-exported: openclip_export uses it from here)
from ..errors import CheckpointError
from .backbone import unwrap

FORMAT = "catlip-backbone-1"
WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"  # timm / Hugging Face folder layout
PREPROCESS_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")


def preprocessing(image_size: int, mean=None, std=None, resize: int = 0) -> dict[str, Any]:
    """timm ``pretrained_cfg`` fields of a run's preprocessing at ``image_size``.

    ``mean``/``std`` are the run's (``data.mean``/``data.std``; default CLIP's); evaluation resizes the shorter
    side to ``resize`` (``data.eval_resize``; 0 = ``image_size``, bilinear) and center-crops ``image_size``: timm's
    ``crop_pct`` = image_size / resize, chosen so that timm's ``floor(image_size / crop_pct)`` gives ``resize``
    back exactly.
    """
    import math

    from catlip.data.transforms import MEAN, STD

    size = int(image_size)
    resize = int(resize or size)
    crop_pct = size / resize
    while math.floor(size / crop_pct) < resize:  # float rounding must not make timm resize one pixel short
        crop_pct = math.nextafter(crop_pct, 0.0)
    return {"input_size": (3, size, size), "interpolation": "bilinear", "crop_pct": crop_pct, "crop_mode": "center",
            "mean": tuple(float(x) for x in (mean or MEAN)), "std": tuple(float(x) for x in (std or STD))}


def timm_config(backbone: nn.Module, spec: dict[str, Any], preprocess: dict[str, Any]) -> dict[str, Any]:
    """The timm ``config.json`` (architecture, num_classes, pretrained_cfg, model_args) of an export."""
    base = dict(getattr(backbone, "pretrained_cfg", None) or {})
    kwargs = dict(spec["kwargs"])
    pretrained_cfg = {
        "architecture": spec["name"], "tag": "catlip", "custom_load": False, "num_classes": 0,
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in preprocess.items()},
        "test_input_size": None, "test_crop_pct": None,
        "fixed_input_size": bool(base.get("fixed_input_size", False)) and not kwargs.get("dynamic_img_size", False),
        "first_conv": base.get("first_conv"), "classifier": base.get("classifier"),
    }
    config = {"architecture": spec["name"], "num_classes": 0,
              "num_features": int(getattr(backbone, "num_features", 0)) or None,
              "pretrained_cfg": pretrained_cfg, "model_args": kwargs}
    pool = getattr(backbone, "global_pool", None)
    if isinstance(pool, str) and pool:
        config["global_pool"] = pool
    return config


def refuse_non_timm(spec: dict[str, Any]) -> None:
    """One-line refusal for a backbone that ``timm.create_model`` cannot rebuild from a name and keyword arguments:
    a catlip stem (conv, corenet) or corenet's 1-D position stretch."""
    stem, pos = spec.get("stem", "patch"), spec.get("pos_resize", "grid")
    if stem == "patch" and pos == "grid":
        return
    what = f"model.stem={stem}" if stem != "patch" else f"model.pos_resize={pos}"
    raise CheckpointError(f"timm cannot rebuild this backbone ({what} is not a timm option: timm's nearest, "
                          "vit_base_mci_224, has an unpadded stem); use it through catlip: "
                          "catlip.evaluate.load_eval_model(RUN).backbone is a timm VisionTransformer with the "
                          "stem in place (docs/pretrained.md)")


def _paths(path: str | Path) -> tuple[Path, Path]:
    """(weights file, config JSON) for an output path: ``x.safetensors`` + ``x.json``, or a folder."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    return path / WEIGHTS_NAME, path / CONFIG_NAME


def write_json(path: Path, data: dict) -> None:
    """``data`` as indented JSON into ``path`` (a temp path of :func:`staged`)."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_tensors(tensors: dict, path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file``, whose failed writes (a full disk) become the ``OSError`` they are."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        # safetensors wraps the OS error in its own type and keeps the errno only in the text
        found = re.search(r"I/O error: (.*) \(os error (\d+)\)", str(err))
        if found is None:
            raise
        raise OSError(int(found[2]), found[1]) from None


def export_backbone(method: nn.Module, path: str | Path, *, image_size: int | None = None,
                    preprocess: Any = None) -> dict[str, Any]:
    """Write ``method.backbone`` to ``path`` (atomically) and return the timm spec ``{"name", "kwargs"}``.

    ``path`` ending in ``.safetensors``: that file plus ``<stem>.json``; otherwise a folder with
    ``model.safetensors`` + ``config.json`` (timm's ``local-dir:`` layout). ``image_size`` is the training
    resolution (``model.image_size``); default: the backbone's ``img_size`` argument, else timm's input size.
    ``preprocess``: the run's ``catlip.data.transforms.Preprocess`` (mean/std/resize; default: CLIP's, no resize).
    """
    backbone = unwrap(unwrap(method).backbone)
    spec = getattr(backbone, "catlip_spec", None)
    if spec is None:
        raise CheckpointError("this backbone was not built by catlip.models.create_backbone; its timm spec is unknown")
    refuse_non_timm(spec)
    if image_size is None:
        size = spec["kwargs"].get("img_size") or (getattr(backbone, "pretrained_cfg", None) or {}).get("input_size")
        image_size = int(size[-1] if isinstance(size, (list, tuple)) else size or 224)
    if preprocess is not None:
        image_size = preprocess.size
    pre = preprocessing(image_size) if preprocess is None else preprocessing(
        preprocess.size, preprocess.mean, preprocess.std, preprocess.resize)
    config = timm_config(backbone, spec, pre)
    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    metadata = {"format": FORMAT, "timm_model": spec["name"], "timm_kwargs": json.dumps(spec["kwargs"]),
                "timm_config": json.dumps(config)}
    weights, config_file = _paths(path)
    try:
        with staged(weights, config_file) as (tmp_weights, tmp_config):
            save_tensors(tensors, tmp_weights, metadata)
            write_json(tmp_config, config)
    except OSError as err:
        raise CheckpointError(f"cannot write the export {path}: {err.strerror or err}") from None
    return {"name": spec["name"], "kwargs": dict(spec["kwargs"])}


def _metadata(path: str | Path) -> dict[str, str]:
    weights, _ = _paths(path) if Path(path).is_dir() else (Path(path), None)
    try:
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises its own (non-OSError) type for corrupt headers
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a catlip backbone export (format {meta.get('format')!r})")
    return meta


def read_spec(path: str | Path) -> dict[str, Any]:
    """The timm name and kwargs stored in an exported backbone (file or folder)."""
    meta = _metadata(path)
    return {"name": meta["timm_model"], "kwargs": json.loads(meta["timm_kwargs"])}


def read_config(path: str | Path) -> dict[str, Any]:
    """The timm ``config.json`` stored in an export; exports older than it get timm's default preprocessing."""
    meta = _metadata(path)
    if "timm_config" in meta:
        return json.loads(meta["timm_config"])
    return {"architecture": meta["timm_model"], "num_classes": 0, "pretrained_cfg": {"num_classes": 0},
            "model_args": json.loads(meta["timm_kwargs"])}


def load_backbone(path: str | Path, **overrides: Any) -> nn.Module:
    """Rebuild an exported backbone through timm's own pretrained-file loader; ``overrides`` change kwargs.

    The stored ``pretrained_cfg`` (preprocessing included) is applied, so ``model.pretrained_cfg`` and
    ``timm.data.resolve_data_config({}, model=model)`` describe the training preprocessing.
    """
    config = read_config(path)
    weights = _paths(path)[0] if Path(path).is_dir() else Path(path)
    kwargs = {**config["model_args"], **overrides}
    pretrained_cfg = {k: v for k, v in config["pretrained_cfg"].items() if k != "architecture"}
    overlay = {**pretrained_cfg, "file": str(weights), "custom_load": False}
    model = timm.create_model(config["architecture"], pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay,
                              **kwargs)
    # timm loads non-strictly when num_classes differs from its default; make sure nothing was left out.
    with safe_open(str(weights), framework="pt") as f:
        stored = set(f.keys())
    expected = set(model.state_dict())
    if stored != expected:
        missing, extra = sorted(expected - stored), sorted(stored - expected)
        raise CheckpointError(
            f"{path}: weights do not fit {config['architecture']}: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    return model
