"""AdamW with the usual no-decay groups, and a steps-based warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

# Scalars that set a scale rather than a feature (CLIP temperature, SigLIP bias) must never be shrunk by decay.
NO_DECAY_NAMES = ("logit_scale", "logit_bias")


def _no_decay_names(model: nn.Module) -> set[str]:
    """Names timm models declare as exempt (pos_embed, cls_token, ...), prefixed for nested modules."""
    out: set[str] = set()
    for prefix, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            try:
                names = fn()
            except TypeError:
                continue
            out.update(f"{prefix}.{n}" if prefix else n for n in names)
    return out


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    exempt = _no_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(".bias") or name in exempt or name.split(".")[-1] in NO_DECAY_NAMES
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, optim_cfg) -> torch.optim.Optimizer:
    """AdamW; on CUDA its fused kernel (one launch for every parameter instead of a few per tensor)."""
    groups = param_groups(model, optim_cfg.weight_decay)
    params = [p for g in groups for p in g["params"]]
    # plain CUDA tensors only: FSDP's sharded (DTensor) parameters keep the default implementation
    on_cuda = bool(params) and all(p.is_cuda and type(p.data) is torch.Tensor for p in params)
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                             fused=True if on_cuda else None)


def lr_at(step: int, optim_cfg) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine to lr * min_lr_ratio."""
    base, warmup, total = optim_cfg.lr, optim_cfg.warmup_steps, optim_cfg.steps
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    low = base * optim_cfg.min_lr_ratio
    return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    # The schedule is a pure function of the step, so there is no scheduler object whose state could drift.
    for group in optimizer.param_groups:
        group["lr"] = lr
