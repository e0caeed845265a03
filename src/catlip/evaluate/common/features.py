"""Frozen features of a labelled dataset, computed once and optionally cached on disk (in the one feature cache,
``catlip.train.feature_cache``, which LiT's training features share).

The encoder is any module mapping images to vectors; :class:`Encoder` builds one from the timm backbone contract
(``forward_features`` then ``forward_head(pre_logits=True)``) or, with a pre-trained head, from the head's own
pooling, so Transfer Init weights apply to exactly these features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from catlip.evaluate.common.datasets import LabelledData, collate_skip
from catlip.progress import progress_bar
from catlip.train.feature_cache import encode, feature_file, module_hash, read_tensors, store_tensors


class Encoder(nn.Module):
    """images -> the features a probe reads.

    Without a head: the timm pooled embedding (``forward_head(forward_features(x), pre_logits=True)``). With a
    pre-trained classification head that defines ``pool(backbone, features)`` (CatLIP: the same embedding;
    SuperClass: LayerNorm of the mean patch token), exactly what the head's Linear layer reads, so Transfer
    Init rows apply to these features unchanged.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None and hasattr(head, "pool") else None

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_features(images)
        if self.head is not None:
            return self.head.pool(self.backbone, feats)
        return self.backbone.forward_head(feats, pre_logits=True)


class ImageTower(nn.Module):
    """A two-tower method's image embedding as an encoder module (for ``extract_features``)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.method.encode_image(images)


@dataclass
class Features:
    x: torch.Tensor  # (N, D) float32
    y: torch.Tensor  # (N,) int64 class indices, or (N, C) multi-hot float
    skipped: int = 0

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, idx: torch.Tensor) -> Features:
        return Features(self.x[idx], self.y[idx], 0)


def default_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def extract_features(encoder: nn.Module, data: LabelledData, *, batch_size: int = 256, num_workers: int = 0,
                     device: str | torch.device = "auto", progress: bool = True, desc: str = "features",
                     limit: int | None = None) -> Features:
    """Run the encoder over every readable image once; unreadable or unlabelled samples are counted in ``skipped``.

    ``limit``: stop after that many labelled images (the first ones in the dataset's order)."""
    device = default_device(device) if isinstance(device, str) else device
    encoder = encoder.to(device).eval()
    loader = DataLoader(data.dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skip)
    xs, ys, skipped, kept = [], [], 0, 0
    total = min(len(data), limit) if limit is not None else len(data)
    bar = progress_bar(total=total or None, desc=desc, unit="img", disable=not progress, leave=False)
    for batch in loader:
        skipped += batch["skipped"]
        bar.update(batch["skipped"])
        if batch["image"] is None:
            continue
        target = batch["target"]
        keep = (target >= 0) if target.dim() == 1 else torch.ones(len(target), dtype=torch.bool)
        skipped += int((~keep).sum())
        images, target = batch["image"][keep], target[keep]
        if limit is not None:  # the last batch is cut at the limit, not encoded whole
            images, target = images[:limit - kept], target[:limit - kept]
        xs.append(encode(encoder, images, device))
        ys.append(target)
        kept += len(target)
        bar.update(len(target) + int((~keep).sum()))
        if limit is not None and kept >= limit:
            break
    bar.close()
    if not xs:
        from catlip.errors import DataError

        raise DataError(f"{data.spec}: no readable labelled image ({skipped} skipped)")
    return Features(torch.cat(xs), torch.cat(ys), skipped)


def cached_features(encoder: nn.Module, data: LabelledData, cache_dir: str | Path | None, *, weights_id: str = "",
                    transform_id: str = "", **kwargs) -> Features:
    """:func:`extract_features`, reusing ``cache_dir/<key>.safetensors`` when the same weights saw the same data.

    The key covers the encoder's weights (``weights_id`` or their hash), the data spec, the transform and the
    class count, so a different checkpoint or resolution never reads stale features.
    """
    if not cache_dir:
        return extract_features(encoder, data, **kwargs)
    weights_id = weights_id or module_hash(encoder)
    limit = kwargs.get("limit")  # a capped extraction is another entry (absent from older keys: they stay valid)
    path = feature_file(cache_dir, weights_id, data.spec, transform_id, data.num_classes, data.multilabel,
                        *([f"limit={limit}"] if limit else []))
    found = read_tensors(path, ("x", "y", "skipped"))
    if found is not None and found["skipped"].numel() == 1:  # anything else is damage: recomputed, never trusted
        return Features(found["x"], found["y"], int(found["skipped"].item()))
    feats = extract_features(encoder, data, **kwargs)
    _store(path, feats, {"data": data.spec, "weights": weights_id})
    return feats


def _store(path: Path, feats: Features, metadata: dict[str, str]) -> None:
    """Write a cache entry atomically; a cache that cannot be written (a full disk) costs a warning, not the run."""
    store_tensors(path, {"x": feats.x, "y": feats.y, "skipped": torch.tensor([feats.skipped])}, metadata)
