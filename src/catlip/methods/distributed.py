"""The two collectives the methods need, as no-ops when no process group exists (single process works)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (same shape on every rank) over ranks along dim 0, in rank order, keeping autograd.

    The backward of torch.distributed.nn's all_gather sums the incoming gradients of all ranks into each rank's
    slice; every rank computes the same global loss, so each local gradient is world_size times the true one,
    and DDP's gradient *average* divides that back out: the result equals one process on the whole batch.
    """
    if not is_distributed():
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


@torch.no_grad()
def all_reduce_sum_(x: Tensor) -> Tensor:
    """In-place SUM over ranks (no gradient); returns ``x``."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
