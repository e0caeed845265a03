"""torchrun detection, process groups (gloo on CPU, NCCL on GPU), DDP / FSDP wrapping and full state dicts.

Outside torchrun everything degrades to one process with no process group, so the same loop runs on a laptop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from catlip.runtime import pick_device


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str = "auto") -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 is set; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


def wrap_model(model: nn.Module, mode: str, d: Dist) -> nn.Module:
    """DDP (default) or FSDP2 (``fully_shard`` on each transformer block, then the root) for large models."""
    if not d.enabled:
        return model
    if mode == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in model.modules():
            if type(module).__name__ in ("Block", "ResidualAttentionBlock"):  # timm ViT / open_clip blocks
                fully_shard(module)
        return fully_shard(model)
    ids = [d.device.index] if d.device.type == "cuda" else None
    # Buffers such as SuperClass document counts are all-reduced by the method itself; no rank-0 broadcast.
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def full_state(model: nn.Module, optimizer) -> tuple[dict, dict]:
    """Full (unsharded, unwrapped) model and optimizer state dicts on CPU; every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(model, optimizer, options=opts)


def load_full_state(model: nn.Module, optimizer, model_state: dict, optim_state: dict | None) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_state_dict(model, optimizer if optim_state is not None else [], model_state_dict=model_state,
                   optim_state_dict=optim_state or {}, options=opts)


def all_mean(value: float, d: Dist) -> float:
    if not d.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t) / d.world_size


def gather_objects(obj, d: Dist) -> list:
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        # every rank tears the group down together: a rank that destroys it while another is still finishing
        # (rank 0 writes the loss plot) can abort in gloo's transport threads at exit
        dist.barrier()
        dist.destroy_process_group()
