"""One optimizer step over one or more micro-batches; no hidden state beyond what is passed in."""

from __future__ import annotations

import contextlib

import torch


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _scalars(out: dict) -> dict[str, torch.Tensor]:
    """Scalar extras a method reports (loss terms, temperature) for logging, as detached 0-d tensors: reading
    their value waits for the device, so the trainer does it only at log steps."""
    res = {}
    for k, v in out.items():
        if k != "loss" and torch.is_tensor(v) and v.numel() == 1:
            res[k] = v.detach().float().reshape(())
    return res


def train_step(model, micro_batches: list[dict], optimizer, *, autocast, scaler=None, clip_grad: float = 0.0,
               params=None) -> dict[str, float]:
    """Accumulate gradients over ``micro_batches`` (loss averaged over them), clip, step, zero the gradients.

    ``model`` may be wrapped (DDP): gradient synchronisation is deferred to the last micro-batch.
    ``scaler`` is a GradScaler for fp16, else None. Returns the mean loss, the gradient norm (before clipping) and
    scalar extras as detached 0-d tensors: nothing here waits for the device (``float()`` them to log).
    """
    n = len(micro_batches)
    total, extras = None, {}
    for i, batch in enumerate(micro_batches):
        sync = contextlib.nullcontext() if i == n - 1 or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast():
                out = model(batch)
            loss = out["loss"].float() / n
            (scaler.scale(loss) if scaler else loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
        extras = _scalars(out)
    if scaler:
        scaler.unscale_(optimizer)
    params = params if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
    if clip_grad > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().float().norm() for p in params
                                                     if p.grad is not None]))
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": total, "grad_norm": norm.detach(), **extras}
