"""What every pre-training method offers the trainer and the evaluators."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Method(nn.Module):
    """A backbone plus whatever it is trained with; ``forward(batch)`` returns a dict holding ``"loss"``.

    ``inputs`` names the batch keys the method reads, so the data pipeline only builds those. ``backbone`` is a
    headless timm model (the thing that gets exported and evaluated).

    The trainer never asks which method it runs; it asks the method what it needs (:meth:`preparations`,
    :meth:`cached_inputs`), and ``catlip.train.prepare`` says what each answer means.
    """

    name: str = ""
    inputs: tuple[str, ...] = ()
    backbone: nn.Module

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def backbone_spec(self) -> dict[str, Any]:
        """timm name and kwargs the backbone was built with."""
        return dict(self.backbone.catlip_spec)

    def preparations(self) -> dict[str, Any]:
        """What the trainer does to this freshly built method before its first step, as capability -> argument:
        ``locked_tower`` (copy the backbone of the checkpoint folder given; a resumed run has it already) and
        ``prior_bias`` (start the head's bias at the vocabulary's class prior, which only the trainer knows).
        Nothing by default."""
        return dict(getattr(self, "_preparations", {}))

    def ask(self, capability: str, argument: Any = None) -> None:
        """Add ``capability`` to :meth:`preparations` (for a builder that knows a setting the class does not)."""
        self._preparations = {**self.preparations(), capability: argument}

    def cached_inputs(self) -> dict[str, str]:
        """Batch inputs the trainer may serve from a feature cache instead of reading them each step, as input ->
        cache folder (``auto``: the run's own ``feature_cache``). Only an input whose encoder never changes can be
        cached: ``image`` under a locked image tower, where the method offers ``image_features(images)`` and reads
        ``batch["image_features"]`` in place of ``batch["image"]``. Nothing by default."""
        return {}


def build_backbone(cfg) -> nn.Module:
    """The run's image backbone: architecture and input size from ``cfg.model`` alone; multi-scale data
    (``data.multiscale``) feeds it other sizes too, so it is then built to take any."""
    from ..models.backbone import create_backbone

    return create_backbone(cfg.model, dynamic_img_size=cfg.data.multiscale)
