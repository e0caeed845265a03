"""Dense targets from padded label ids, and SuperClass's running IDF statistics."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..errors import DataError
from .distributed import all_reduce_sum_


def multi_hot(label_ids: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B, L) int64 ids padded with -1 -> (B, num_classes) 0/1 targets, built on the ids' device.

    Padding is routed to an extra column that is dropped, so every scatter writes the same value 1 and
    repeated ids are harmless.
    """
    if label_ids.ndim != 2:
        raise DataError(f"label_ids must be (batch, length), got shape {tuple(label_ids.shape)}")
    if not label_ids.is_cuda and label_ids.numel() and int(label_ids.max()) >= num_classes:
        # Checked off-GPU only: on CUDA this would stall the stream every step (there scatter asserts instead).
        raise DataError(f"label id {int(label_ids.max())} outside the vocabulary of {num_classes} classes")
    ids = torch.where(label_ids >= 0, label_ids, num_classes)
    dense = torch.zeros(label_ids.shape[0], num_classes + 1, dtype=dtype, device=label_ids.device)
    dense.scatter_(1, ids, 1.0)
    return dense[:, :num_classes]


def class_mask(num_classes: int, ids: Iterable[int]) -> Tensor:
    """Boolean (num_classes,) mask that is True at ``ids`` (ids outside the vocabulary are ignored)."""
    mask = torch.zeros(num_classes, dtype=torch.bool)
    kept = [i for i in ids if 0 <= i < num_classes]
    mask[kept] = True
    return mask


class IDFStats(nn.Module):
    """Running document frequencies of each class, for SuperClass's IDF target weights.

    Buffers (saved in ``state_dict`` so a resumed run continues the same statistics): ``doc_freq`` (V,) -- in how
    many samples each class occurred -- and ``num_docs`` -- how many samples were seen (all of them, labelled or
    not). float64 holds counts exactly up to 2**53. Under data parallelism each rank adds the SUM of all ranks'
    batch counts, so every rank holds the same statistics; without a process group it just counts locally.
    """

    def __init__(self, num_classes: int, zero_weight_ids: Iterable[int] = (), momentum: float = 0.0):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"idf momentum must lie in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("doc_freq", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("num_docs", torch.zeros((), dtype=torch.float64))
        self.register_buffer("zero_mask", class_mask(num_classes, zero_weight_ids), persistent=False)

    @torch.no_grad()
    def update(self, targets: Tensor) -> None:
        """Add a batch of 0/1 targets (B, V). With momentum m > 0 the old counts are first scaled by m."""
        docs = targets.new_full((1,), targets.shape[0], dtype=torch.float64)
        counts = torch.cat([(targets > 0).sum(dim=0, dtype=torch.float64), docs])  # one collective, not two
        all_reduce_sum_(counts)
        if self.momentum > 0:
            self.doc_freq.mul_(self.momentum)
            self.num_docs.mul_(self.momentum)
        self.doc_freq.add_(counts[:-1])
        self.num_docs.add_(counts[-1])

    def idf(self) -> Tensor:
        """log((N + 1) / (df + 1)) per class as float32, 0 for the zero-weight (special-token) classes."""
        idf = torch.log((self.num_docs + 1) / (self.doc_freq + 1)).float()
        return idf.masked_fill(self.zero_mask, 0.0)

    def weights(self, targets: Tensor) -> Tensor:
        """IDF-weighted targets (not yet normalised; the loss L1-normalises per sample)."""
        return targets * self.idf().to(targets.dtype)
