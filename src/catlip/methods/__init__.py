"""Pre-training methods: ``build_method(cfg, num_classes)`` is all the trainer needs.

The methods are the entries of ``catlip.methods.registry`` (catlip, superclass, clip, siglip, superclip, lit);
importing this package or the registry does not import torch (the builders and the ``nn.Module`` classes load on first use).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from catlip.labels.registry import BPE_SPECIAL_IDS

from . import registry

if TYPE_CHECKING:  # pragma: no cover
    from .base import Method
    from .classification import ClassificationMethod
    from .contrastive import ContrastiveMethod
    from .superclip import SuperCLIPMethod

__all__ = ["BPE_SPECIAL_IDS", "ClassificationMethod", "ContrastiveMethod", "LiTMethod", "Method", "SuperCLIPMethod",
           "build_method", "registry"]

_LAZY = {"Method": ".base", "ClassificationMethod": ".classification", "ContrastiveMethod": ".contrastive",
         "SuperCLIPMethod": ".superclip", "LiTMethod": ".lit"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_method(cfg, num_classes: int, *, zero_weight_ids: Iterable[int] | None = None,
                 resolved: registry.Resolved | None = None) -> "Method":
    """The model and loss of ``cfg.method`` (a ``catlip.methods.registry`` entry), randomly initialised.

    ``num_classes`` is the vocabulary size (ignored by methods without labels). ``zero_weight_ids``: classes that
    are never targets; by default the label source's special ids (the BPE start/end/pad tokens when the
    vocabulary is the full BPE table), else none. ``resolved``: the run's ``registry.resolve(cfg.method)``, when
    the caller has it already. Bad names or combinations are a ``ConfigError``.
    """
    resolved = resolved or registry.resolve(cfg.method)
    ids = resolved.zero_weight_ids(num_classes) if zero_weight_ids is None else tuple(zero_weight_ids)
    method = resolved.spec.builder(cfg, num_classes, resolved, ids)
    if cfg.model.head_bias == "prior":  # asked of every method: one without a head gets a one-line error then
        method.ask("prior_bias")
    return method
