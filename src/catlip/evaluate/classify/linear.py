"""Linear probes on frozen features: logistic regression over a small hyper-parameter grid, closed-form ridge.

The logistic probe trains every (learning rate, weight decay) pair of the grid at once: their weights are stacked
into one tensor and each pair is its own AdamW parameter group, so one pass over the cached features (same batches
for all) replaces a loop of runs. The pair with the best validation score is then refit on the whole training set.
Like the paper (Table 7a), training is AdamW with a cosine schedule for a fixed number of epochs; the initial
classifier is either random (``nn.Linear``'s default) or given (Transfer Init).

``Classifier`` (encoder + linear layer) is the model ``catlip finetune`` trains end to end; it lives here because a
task module defines no torch class (``catlip --help`` reads every task module without importing torch).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from catlip.evaluate.common.features import Features
from catlip.evaluate.common.metrics import mean_average_precision, topk_accuracy


# ---------------------------------------------------------------- subsets


def balanced_subset(labels: torch.Tensor, *, fraction: float | None = None, shots: int | None = None,
                    seed: int = 0) -> torch.Tensor:
    """Seeded class-balanced sample: ``fraction`` of each class (at least one image) or ``shots`` per class.

    Multi-label targets (N, C) are balanced on each row's first positive class.
    """
    if (fraction is None) == (shots is None):
        raise ValueError("give exactly one of fraction or shots")
    cls = labels if labels.dim() == 1 else labels.float().argmax(dim=1)
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(cls).tolist():
        members = torch.nonzero(cls == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n = shots if shots is not None else max(1, round(fraction * len(members)))
        chosen.append(members[: min(n, len(members))])
    return torch.sort(torch.cat(chosen)).values


def split_train_val(labels: torch.Tensor, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-balanced split; classes with a single sample stay entirely in the training part."""
    cls = labels if labels.dim() == 1 else labels.float().argmax(dim=1)
    gen = torch.Generator().manual_seed(seed + 7919)
    train, val = [], []
    for c in torch.unique(cls).tolist():
        members = torch.nonzero(cls == c).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_val = int(len(members) * val_fraction) if len(members) > 1 else 0
        val.append(members[:n_val])
        train.append(members[n_val:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


# ---------------------------------------------------------------- feature standardisation


def standardize(train_x: torch.Tensor, *others: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """z-score ``train_x`` and ``others`` with the training statistics: ``([train, *others], mean, std)``.

    The probe protocol of ``catlip probe`` and the study (MAE's linear probe does the same with an affine-free
    BatchNorm): one fixed schedule and lr grid would otherwise under-fit features of small scale."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train_x, *others)], mean, std


def standardize_features(train: Features, *others: Features) -> tuple[list[Features], torch.Tensor, torch.Tensor]:
    """:func:`standardize` on ``Features`` (targets and skip counts kept)."""
    xs, mean, std = standardize(train.x, *(f.x for f in others))
    return [Features(x, f.y, f.skipped) for x, f in zip(xs, (train, *others))], mean, std


def standardized_init(linear: nn.Linear, mean: torch.Tensor, std: torch.Tensor, rows: torch.Tensor) -> nn.Linear:
    """A classifier of raw features re-expressed for standardized ones, in place: W' = W * std, b' = b + W @ mean
    give identical logits. Only ``rows`` (a bool mask: Transfer Init's mapped classes) change; the others keep
    the seeded random init that a Random Init probe starts from."""
    with torch.no_grad():
        linear.bias[rows] += linear.weight[rows] @ mean
        linear.weight[rows] *= std
    return linear


# ---------------------------------------------------------------- logistic regression


@dataclass
class ProbeConfig:
    epochs: int = 30  # paper Table 7a
    min_steps: int = 200  # tiny subsets (1 %, k-shot) still get enough optimiser steps to converge
    batch_size: int = 256
    lrs: list[float] = field(default_factory=lambda: [1e-3, 1e-2, 1e-1])
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-2])
    min_lr_ratio: float = 1e-6 / 3e-5  # paper: 3e-5 -> 1e-6
    val_fraction: float = 0.1
    seed: int = 0


@dataclass
class ProbeResult:
    linear: nn.Linear
    lr: float
    weight_decay: float
    val_score: float
    grid: list[dict] = field(default_factory=list)


def _random_linear(dim: int, num_classes: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(dim, num_classes)


class Classifier(nn.Module):
    """encoder (backbone + pooling) followed by a linear classifier."""

    def __init__(self, encoder: nn.Module, linear: nn.Linear):
        super().__init__()
        self.encoder = encoder
        self.linear = linear

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(self.encoder(images))


def fit_linear_grid(feats: Features, num_classes: int, cfg: ProbeConfig, init: nn.Linear | None = None,
                    grid: list[tuple[float, float]] | None = None, device: str | torch.device = "cpu") -> list[nn.Linear]:
    """Train one linear classifier per (lr, weight decay) pair in a single pass; returns them in grid order."""
    grid = grid or [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    start = init if init is not None else _random_linear(feats.x.shape[1], num_classes, cfg.seed)
    g = len(grid)
    weight = start.weight.detach().float().to(device).expand(g, -1, -1).clone().requires_grad_(True)
    bias = start.bias.detach().float().to(device).expand(g, -1).clone().requires_grad_(True)
    adam = _StackedAdamW([weight, bias], torch.tensor([lr for lr, _ in grid], device=device),
                         torch.tensor([wd for _, wd in grid], device=device))
    x, y = feats.x.to(device), feats.y.to(device)
    with _few_threads(x.device):
        _run_grid(x, y, weight, bias, adam, cfg)
    out = []
    for k in range(g):
        lin = nn.Linear(weight.shape[2], weight.shape[1])
        lin.weight.data.copy_(weight[k].detach().cpu())
        lin.bias.data.copy_(bias[k].detach().cpu())
        out.append(lin)
    return out


@contextlib.contextmanager
def _few_threads(device: torch.device):
    """One intra-op thread on CPU: each step's tensors are tiny, and with a busy CPU several OpenMP threads
    wait on each other (measured 16x slower with 2 threads on a loaded 2-core machine)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_grid(x, y, weight, bias, adam, cfg: ProbeConfig) -> None:
    n = x.shape[0]
    steps = max(cfg.epochs * math.ceil(n / cfg.batch_size), cfg.min_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    multilabel = y.dim() == 2
    step = 0
    while step < steps:
        order = torch.randperm(n, generator=gen).to(x.device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            logits = torch.einsum("nd,gcd->gnc", x[idx], weight) + bias[:, None, :]
            weight.grad = bias.grad = None
            _grid_loss(logits, y[idx], multilabel).backward()
            adam.step(_cosine(step, steps, cfg.min_lr_ratio))
            step += 1
            if step >= steps:
                break


class _StackedAdamW:
    """AdamW (torch's update rule, default betas) over tensors whose first axis indexes grid members, each with
    its own learning rate and weight decay. torch.optim would need one parameter group per member, which costs
    a Python loop per member and step; here every step is a handful of batched tensor operations. Weight decay
    applies to 3-d (weight) tensors only."""

    def __init__(self, params: list[torch.Tensor], lrs: torch.Tensor, wds: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lrs, self.wds, self.betas, self.eps = params, lrs, wds, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, lr_factor: float) -> None:
        self.t += 1
        b1, b2 = self.betas
        lr = self.lrs * lr_factor
        for p, m, v in zip(self.params, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            if p.dim() == 3:
                p.mul_((1 - lr * self.wds).view(shape))
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
            p.sub_((lr.view(shape) / (1 - b1 ** self.t)) * m / denom)


def _cosine(step: int, total: int, min_ratio: float) -> float:
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def _grid_loss(logits: torch.Tensor, y: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Sum over grid members of each one's batch-mean loss (members share no parameters, so gradients separate)."""
    g, n, c = logits.shape
    if multilabel:
        return F.binary_cross_entropy_with_logits(logits, y.expand(g, n, c).float(), reduction="sum") / n
    return F.cross_entropy(logits.reshape(g * n, c), y.repeat(g), reduction="sum") / n


def score(linear: nn.Linear, feats: Features) -> dict[str, float]:
    """top-1/top-5 for single-label features, mAP for multi-label ones."""
    with torch.no_grad():
        logits = linear(feats.x)
    if feats.y.dim() == 2:
        return {"mAP": mean_average_precision(logits, feats.y)["mAP"]}
    return topk_accuracy(logits, feats.y)


def train_probe(train: Features, num_classes: int, cfg: ProbeConfig | None = None, init: nn.Linear | None = None,
                device: str | torch.device = "cpu") -> ProbeResult:
    """Pick (lr, weight decay) on a held-out class-balanced split, then refit on all of ``train``."""
    cfg = cfg or ProbeConfig()
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    tr_idx, val_idx = split_train_val(train.y, cfg.val_fraction, cfg.seed)
    key = "mAP" if train.y.dim() == 2 else "top1"
    if len(grid) > 1 and len(val_idx) > 0:
        models = fit_linear_grid(train.subset(tr_idx), num_classes, cfg, init, grid, device)
        val = train.subset(val_idx)
        scores = [score(m, val)[key] for m in models]
        best = max(range(len(grid)), key=lambda i: (scores[i], -i))
    else:
        scores, best = [float("nan")] * len(grid), 0
    table = [{"lr": lr, "weight_decay": wd, f"val_{key}": s} for (lr, wd), s in zip(grid, scores)]
    (final,) = fit_linear_grid(train, num_classes, cfg, init, [grid[best]], device)
    return ProbeResult(final, grid[best][0], grid[best][1], scores[best], table)


# ---------------------------------------------------------------- ridge (few-shot)


def ridge_fit(x: torch.Tensor, y: torch.Tensor, num_classes: int, lam: float) -> nn.Linear:
    """Closed-form ridge regression onto one-hot targets, unpenalised bias (solved on centred data, float64)."""
    x64 = x.double()
    targets = F.one_hot(y, num_classes).double() if y.dim() == 1 else y.double()
    mx, my = x64.mean(0), targets.mean(0)
    xc, yc = x64 - mx, targets - my
    gram = xc.T @ xc + lam * torch.eye(x.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, xc.T @ yc)  # (D, C)
    lin = nn.Linear(x.shape[1], num_classes)
    lin.weight.data.copy_(w.T.float())
    lin.bias.data.copy_((my - mx @ w).float())
    return lin


def ridge_probe(train: Features, num_classes: int, lambdas: list[float] | None = None) -> tuple[nn.Linear, dict]:
    """Ridge probe with the penalty chosen by exact leave-one-out accuracy (hat-matrix identity, no refits).

    ``lambdas`` are relative to the mean eigenvalue of the centred Gram matrix, so the grid is scale-free.
    """
    lambdas = lambdas or [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    x = train.x.double()
    y1 = F.one_hot(train.y, num_classes).double() if train.y.dim() == 1 else train.y.double()
    n = x.shape[0]
    xc, yc = x - x.mean(0), y1 - y1.mean(0)
    evals, evecs = torch.linalg.eigh(xc.T @ xc)
    evals = evals.clamp_min(0)
    proj = xc @ evecs  # (N, D)
    pty = proj.T @ yc  # (D, C)
    scale = float(evals.mean()) or 1.0
    results = []
    for rel in lambdas:
        inv = 1.0 / (evals + rel * scale)
        fitted = proj @ (inv[:, None] * pty) + y1.mean(0)
        hat = (proj.pow(2) * inv).sum(1) + 1.0 / n
        loo = y1 - (y1 - fitted) / (1 - hat).clamp_min(1e-9)[:, None]
        truth = train.y if train.y.dim() == 1 else y1.argmax(1)
        acc = float((loo.argmax(1) == truth).double().mean())
        err = float((y1 - loo).pow(2).sum(1).mean())
        results.append({"lambda": rel * scale, "relative_lambda": rel, "loo_top1": acc, "loo_sq_error": err})
    best = max(results, key=lambda r: (r["loo_top1"], -r["loo_sq_error"]))
    return ridge_fit(train.x, train.y, num_classes, best["lambda"]), {"chosen": best, "grid": results}
