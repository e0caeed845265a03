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


class NonFiniteWatch:
    """Counts consecutive steps whose loss or gradient norm is NaN or inf, without waiting for the device.

    :meth:`add` only keeps a step's 0-d outputs (no kernel, no sync); :meth:`read` tests all kept values at once
    (one sync), which the loop does where it waits anyway: at log steps and before checkpoints. With a GradScaler
    (fp16) an inf gradient norm is the scaler's overflow signal and its update is already skipped, so only the loss
    counts there.
    """

    def __init__(self, patience: int, *, scaled: bool = False):
        self.patience, self.scaled = patience, scaled
        self.pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
        self.streak, self.start, self.tripped = 0, 0, None

    def add(self, step: int, out: dict) -> None:
        self.pending.append((step, out["loss"], None if self.scaled else out["grad_norm"]))

    def read(self) -> tuple[int, int] | None:
        """(first, last) step of the first run of ``patience`` non-finite steps seen so far, else None."""
        if self.pending and self.tripped is None:
            values = [v for _, loss, norm in self.pending for v in (loss, loss if norm is None else norm)]
            finite = torch.isfinite(torch.stack([v.float() for v in values])).reshape(-1, 2).all(dim=1).tolist()
            for (step, _, _), ok in zip(self.pending, finite):
                self._count(step, ok)
        self.pending = []
        return self.tripped

    def _count(self, step: int, ok: bool) -> None:
        if ok:
            self.streak = 0
            return
        self.streak += 1
        self.start = step if self.streak == 1 else self.start
        if self.streak >= self.patience and self.tripped is None:
            self.tripped = (self.start, step)
