"""What every pre-training method offers the trainer and the evaluators."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Method(nn.Module):
    """A backbone plus whatever it is trained with; ``forward(batch)`` returns a dict holding ``"loss"``.

    ``inputs`` names the batch keys the method reads, so the data pipeline only builds those. ``backbone`` is a
    headless timm model (the thing that gets exported and evaluated).
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


def build_backbone(cfg) -> nn.Module:
    """The run's image backbone: architecture and input size from ``cfg.model`` alone; multi-scale data
    (``data.multiscale``) feeds it other sizes too, so it is then built to take any."""
    from ..models.backbone import create_backbone

    return create_backbone(cfg.model, dynamic_img_size=cfg.data.multiscale)
