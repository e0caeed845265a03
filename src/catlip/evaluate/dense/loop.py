"""The training loop segmentation and detection share: AdamW with layer-wise lr decay, warmup + cosine or
multi-step schedules, bf16 autocast on GPU, torchrun data parallelism, and exact resume from atomic checkpoints.

Exact resume: everything random in an epoch (shuffling, augmentation, dropout) is seeded from ``(seed, epoch)``
at the epoch's start, and a checkpoint (``catlip.train.checkpoint.save_checkpoint``: model, optimizer, history,
counts) is written at epoch ends, so a run stopped after epoch k and restarted with the same command and
``--run-dir`` continues with bit-identical weights (on the same device and number of data workers' seeds).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from catlip.config import ConfigError
from catlip.errors import CheckpointError
from catlip.progress import progress_bar

if TYPE_CHECKING:  # torch is imported where it is used: the dense task modules define their recipes on this one
    import torch
    from torch import nn


@dataclass
class DenseTrainConfig:
    """Fields both dense tasks' recipes have (``configs/segment_*.yaml``, ``configs/detect_*.yaml``)."""

    epochs: int = 10
    lr: float = 1e-4
    min_lr: float = 1e-6  # cosine floor
    warmup_epochs: float = 0.0
    schedule: str = "cosine"  # cosine | multistep
    lr_steps: list[float] = field(default_factory=list)  # multistep: epochs at which lr *= lr_gamma
    lr_gamma: float = 0.1
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float = 1.0  # 1 = off; < 1 scales block i of n by layer_decay ** (n + 1 - i) (timm)
    drop_path: float = 0.0  # stochastic depth of the backbone's blocks (max rate, linear over depth)
    clip_grad: float = 0.0
    batch_size: int = 8
    image_size: int = 512
    eval_batch_size: int = 4
    eval_every: int = 1  # epochs between test evaluations (the last epoch is always evaluated)
    seed: int = 0
    num_workers: int = 4
    device: str = "auto"

    def validate(self):
        if self.epochs <= 0 or self.batch_size <= 0 or self.eval_batch_size <= 0 or self.image_size <= 0:
            raise ConfigError("epochs, batch_size, eval_batch_size and image_size must be positive")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError("layer_decay must lie in (0, 1]")
        if self.schedule not in ("cosine", "multistep"):
            raise ConfigError(f"schedule must be cosine or multistep, got {self.schedule!r}")
        if self.eval_every <= 0 or not 0 <= self.drop_path < 1:
            raise ConfigError("eval_every must be positive and drop_path in [0, 1)")
        return self


# Fields that may change between a run and its resume: they do not change what is computed.
RESUMABLE_CHANGES = ("num_workers", "device", "eval_batch_size", "eval_every")


def lr_factor(step: int, steps_per_epoch: int, cfg: DenseTrainConfig) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr or multi-step."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "multistep":
        epoch = step / steps_per_epoch
        return cfg.lr * cfg.lr_gamma ** sum(epoch >= e for e in cfg.lr_steps)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_drop_path(backbone: nn.Module, rate: float) -> None:
    """Stochastic depth on a timm ViT's blocks after construction (rate rising linearly to ``rate``)."""
    blocks = getattr(backbone, "blocks", None)
    if not rate or blocks is None:
        return
    from timm.layers import DropPath
    from torch import nn

    n = len(blocks)
    for i, block in enumerate(blocks):
        p = rate * i / max(1, n - 1)
        for name in ("drop_path1", "drop_path2"):
            if hasattr(block, name):
                setattr(block, name, DropPath(p) if p > 0 else nn.Identity())


def param_groups(model: nn.Module, backbone: nn.Module, cfg: DenseTrainConfig) -> list[dict]:
    """AdamW groups with ``lr_scale``: timm's layer-wise decay over the backbone, scale 1 for the task head."""
    from catlip.train import optim

    if cfg.layer_decay >= 1 or not hasattr(backbone, "group_matcher"):
        return [dict(g, lr_scale=1.0) for g in optim.param_groups(model, cfg.weight_decay) if g["params"]]
    from timm.optim import param_groups_layer_decay

    no_wd = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
    groups = param_groups_layer_decay(backbone, cfg.weight_decay, no_weight_decay_list=no_wd,
                                      layer_decay=cfg.layer_decay)
    groups = [{k: v for k, v in g.items() if k != "param_names"} for g in groups]  # tensors and numbers only
    seen = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in model.parameters() if id(p) not in seen and p.requires_grad]
    groups.append({"params": [p for p in rest if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr_scale": 1.0})
    groups.append({"params": [p for p in rest if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


@dataclass
class Job:
    """What a dense task plugs into :func:`train`."""

    model: nn.Module  # the whole model (backbone + head); its forward is called by ``loss``
    backbone: nn.Module
    train_set: torch.utils.data.Dataset
    collate: Callable
    loss: Callable[[nn.Module, dict, torch.device], tuple[torch.Tensor, dict[str, float]] | None]
    evaluate: Callable[[nn.Module, torch.device], dict[str, Any]] | None  # test metrics; None = no test set
    meta: dict  # what the run is (config, checkpoint, data): a resume must match it
    desc: str = "train"


def job_meta(task: str, checkpoint: str, train_data, test_data, cfg, **extra) -> dict:
    """What a dense run records beside its checkpoints (a resume must see the same task, data and settings)."""
    return {"task": task, "checkpoint": checkpoint, "train": train_data.spec, "train_images": len(train_data),
            "test": test_data.spec if test_data else None, "classes": train_data.names, **extra,
            "config": dict(vars(cfg))}


def task_result(checkpoint: str, loaded, train_data, test_data, out: dict, model: nn.Module, **extra) -> dict:
    """What a dense task returns (and ``-o`` writes): the data it read, the loop's results, the checkpoint used."""
    return {"checkpoint": checkpoint, "method": loaded.method_name, "train": train_data.spec,
            "test": test_data.spec if test_data else None, "num_classes": train_data.num_classes, **extra,
            "train_images": len(train_data), "test_images": len(test_data) if test_data else 0,
            "skipped_at_open": {"train": dict(train_data.skipped), "test": dict(test_data.skipped) if test_data else {}},
            **out, **(loaded.loaded or {}), "model": model}


def _run_fingerprint(meta: dict) -> dict:
    cfg = {k: v for k, v in meta.get("config", {}).items() if k not in RESUMABLE_CHANGES}
    return {**{k: v for k, v in meta.items() if k != "config"}, "config": cfg}


def _resume(run_dir: Path, job: Job, model: nn.Module, opt: torch.optim.Optimizer) -> dict | None:
    from catlip.train.checkpoint import find_checkpoint

    loaded = find_checkpoint(run_dir, required=False)
    if loaded is None:
        return None
    if _run_fingerprint(loaded.meta.get("job", {})) != _run_fingerprint(job.meta):
        raise CheckpointError(f"--run-dir {run_dir} holds a run with other settings (checkpoint, data or recipe); "
                              "use another --run-dir, or the same command to resume it")
    try:
        model.load_state_dict(loaded.model_state)
        opt.load_state_dict(loaded.train_state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{loaded.path}: does not fit this model ({str(err).splitlines()[0]})") from None
    return loaded.train_state


def _save(run_dir: Path, step: int, model: nn.Module, opt, state: dict, job: Job) -> None:
    from catlip.train.checkpoint import code_version, save_checkpoint

    save_checkpoint(run_dir / "checkpoints", step, model_state=model.state_dict(),
                    train_state={"optimizer": opt.state_dict(), **state},
                    meta={"job": job.meta, "code": code_version(), "epoch": state["epoch"]})


def train(job: Job, cfg: DenseTrainConfig, *, run_dir: str | Path | None = None, progress: bool = True
          ) -> dict[str, Any]:
    """Train ``job.model`` for ``cfg.epochs`` (resuming from ``run_dir`` when it holds this run), evaluating on
    the test set every ``eval_every`` epochs. Returns history, final row and counts."""
    import torch
    from torch import nn

    from catlip.train.distributed import all_mean, init_distributed, wrap_model

    d = init_distributed(cfg.device)
    device = d.device
    model = job.model.to(device)
    opt = torch.optim.AdamW(param_groups(model, job.backbone, cfg), lr=cfg.lr, betas=tuple(cfg.betas))
    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "notes": {}, "skipped": 0}
    run_dir = Path(run_dir) if run_dir else None
    if run_dir is not None:
        from catlip.train.checkpoint import check_writable

        check_writable(run_dir)
        state = _resume(run_dir, job, model, opt) or state
    wrapped = wrap_model(model, "ddp", d)
    per_epoch = max(1, len(job.train_set) // (cfg.batch_size * d.world_size))
    notes = Counter(state["notes"])
    bar = progress_bar(total=cfg.epochs * per_epoch, initial=state["step"], desc=job.desc, unit="step",
                       disable=not progress or not d.is_main)
    for epoch in range(state["epoch"], cfg.epochs):
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # everything random in this epoch follows (seed, epoch)
        wrapped.train()
        sums: Counter = Counter()
        count = 0
        for batch in _loader(job, cfg, epoch, d):
            notes.update(batch["notes"])
            state["skipped"] += batch["skipped"]
            for g in opt.param_groups:
                g["lr"] = lr_factor(state["step"], per_epoch, cfg) * g.get("lr_scale", 1.0)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = job.loss(wrapped, batch, device)
            if out is None:
                notes["batches too small to train on"] += 1
                continue
            loss, parts = out
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            state["step"] += 1
            count += 1
            sums.update({"train_loss": loss.item(), **parts})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
        row = {"epoch": epoch + 1, "steps": state["step"]}
        row.update({k: all_mean(v / max(1, count), d) for k, v in sums.items()})
        if job.evaluate is not None and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            model.eval()
            row.update(job.evaluate(model, device))
        state["history"].append(row)
        state["epoch"], state["notes"] = epoch + 1, dict(notes)
        if run_dir is not None and d.is_main:
            _save(run_dir, state["step"], model, opt, state, job)
    bar.close()
    model.eval()
    history = state["history"]
    return {"history": history, "final": history[-1] if history else {}, "train_notes": dict(notes),
            "train_skipped": state["skipped"], "steps": state["step"], "config": asdict(cfg),
            "world_size": d.world_size, "run_dir": str(run_dir) if run_dir else None}


def _loader(job: Job, cfg: DenseTrainConfig, epoch: int, d) -> torch.utils.data.DataLoader:
    """This epoch's shuffled batches (this rank's share under torchrun), seeded by (seed, epoch)."""
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    if d.enabled:
        sampler = DistributedSampler(job.train_set, d.world_size, d.rank, shuffle=True, seed=cfg.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(job.train_set, generator=gen)
    return DataLoader(job.train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                      collate_fn=job.collate, drop_last=len(job.train_set) >= cfg.batch_size, generator=gen,
                      persistent_workers=False)
