"""`catlip finetune`: fine-tune the whole model on a labelled dataset (CatLIP Appendix A, Table 7b/c).

AdamW with weight decay on matrices only, optional layer-wise learning-rate decay (timm), the pre-training
warmup + cosine schedule (``catlip.train.optim.lr_at``), cross-entropy with label smoothing (single-label) or
BCE (multi-label). The classifier starts random or from the pre-trained head (Transfer Init). A recipe from
``configs/finetune_*.yaml`` sets it all; ``--set key=value`` overrides recipe fields.

:func:`run_finetune` loads the checkpoint and opens the data; :func:`finetune` is the procedure, given the encoder
(images -> features) and the classifier to train. Torch is imported inside the functions (``catlip --help`` reads
this module).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from catlip.config import ConfigError, OptimConfig, from_dict, read_recipe
from catlip.errors import DataError, OutputError
from catlip.evaluate.common.cli import DATA_HELP, add_common, print_coverage, print_table, print_unlisted, unlisted
from catlip.evaluate.tasks import Task
from catlip.progress import progress_bar

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from catlip.evaluate.classify.linear import Classifier
    from catlip.evaluate.common.datasets import LabelledData


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p, batch_default="the recipe's")
    p.add_argument("--config", help="recipe YAML (configs/finetune_*.yaml)")
    p.add_argument("--train", required=True, help=DATA_HELP)
    p.add_argument("--test", help=DATA_HELP)
    p.add_argument("--save", help="write the fine-tuned weights (safetensors) here")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set epochs=2 --set init=transfer (repeatable)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(args.overrides) + [f"num_workers={args.workers}", f"device={args.device}"]
    if args.batch_size:
        overrides.append(f"batch_size={args.batch_size}")
    if args.image_size:
        overrides.append(f"image_size={args.image_size}")
    return run_finetune(args.checkpoint, args.train, args.test, args.classes, config=args.config,
                        overrides=overrides, save=args.save, progress=not args.no_progress,
                        allow_partial=args.allow_partial_classes)


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_unlisted(result)
    print_coverage(result)
    cols = ["epoch", "steps", "train_loss"] + ([c for c in ("top1", "top5", "mAP") if c in result["final"]])
    print_table(result["history"], cols)


def run_finetune(checkpoint: str, train: str, test: str | None, classes: str | None = None, *,
                 config: str | None = None, overrides: Sequence[str] = (), save: str | None = None,
                 progress: bool = True, allow_partial: bool = False) -> dict[str, Any]:
    """Fine-tune the whole network with a ``configs/finetune_*.yaml`` recipe; optionally save the weights."""
    from catlip.evaluate.classify.linear import _random_linear
    from catlip.evaluate.classify.transfer_init import head_mapping, transfer_init
    from catlip.evaluate.common.datasets import open_labelled
    from catlip.evaluate.common.model import load_eval_model

    cfg = load_finetune_config(config, list(overrides))
    model = load_eval_model(checkpoint, cfg.image_size or None)
    size = model.image_size
    train_data = open_labelled(train, classes, model.train_transform(cfg.rrc_scale_min), cfg.multilabel,
                               shuffle=cfg.shuffle_buffer, seed=cfg.seed, allow_partial=allow_partial)
    test_data = open_labelled(test, train_data.classes, model.eval_transform(), cfg.multilabel,
                              allow_partial=allow_partial) if test else None
    result: dict[str, Any] = {"checkpoint": checkpoint, "method": model.method_name, "train": train, "test": test,
                              "num_classes": train_data.num_classes, "image_size": size,
                              **unlisted(train=train_data, test=test_data), **(model.loaded or {})}
    encoder = model.encoder()
    if cfg.init == "transfer":
        weight, bias, report = head_mapping(model, train_data.classes, cfg.alpha, "init: transfer", Path(train).name)
        linear = transfer_init(weight, bias, report, cfg.seed)
        result["coverage"] = report.to_dict()
    else:
        linear = _random_linear(encoder.num_features, train_data.num_classes, cfg.seed)
    out = finetune(encoder, linear, train_data, test_data, cfg, progress=progress)
    trained = out.pop("model")
    if save:
        _save_weights(trained, save)
        result["saved"] = save
    result.update(out)
    return result


def _save_weights(model: nn.Module, path: str) -> None:
    from catlip.atomic import staged
    from catlip.models.export import save_tensors

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        with staged(Path(path)) as (tmp,):
            save_tensors(state, tmp, {"format": "pt"})
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


# ---------------------------------------------------------------- the procedure


@dataclass
class FinetuneConfig:
    epochs: int = 10
    lr: float = 3e-5
    min_lr: float = 3e-6
    warmup_epochs: float = 0.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float = 1.0  # 1 = off; the paper's classification recipes list none
    label_smoothing: float = 0.1
    batch_size: int = 128
    image_size: int = 0  # 0 = the checkpoint's pre-training resolution
    rrc_scale_min: float = 0.08
    multilabel: bool = False
    init: str = "random"  # random | transfer
    alpha: float = 0.5  # Transfer Init path-similarity threshold
    fraction: float = 1.0  # class-balanced share of the training set
    clip_grad: float = 0.0
    seed: int = 0
    num_workers: int = 4
    shuffle_buffer: int = 2000  # webdataset shards
    device: str = "auto"

    def validate(self) -> FinetuneConfig:
        if self.init not in ("random", "transfer"):
            raise ConfigError(f"init must be random or transfer, got {self.init!r}")
        if self.epochs <= 0 or self.batch_size <= 0 or not 0 < self.fraction <= 1:
            raise ConfigError("epochs and batch_size must be positive and fraction in (0, 1]")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError("layer_decay must lie in (0, 1]")
        return self


def load_finetune_config(path: str | Path | None, overrides: list[str] | None = None) -> FinetuneConfig:
    """A recipe from ``configs/finetune_*.yaml`` plus ``key=value`` overrides; unknown keys are errors."""
    return from_dict(read_recipe(path, overrides), FinetuneConfig, "finetune").validate()


def param_groups(model: Classifier, cfg: FinetuneConfig) -> list[dict]:
    """AdamW groups carrying ``lr_scale``: layer-wise decay over the backbone (timm), scale 1 for the rest."""
    from catlip.train import optim

    if cfg.layer_decay >= 1 or not hasattr(model.encoder.backbone, "group_matcher"):
        groups = optim.param_groups(model, cfg.weight_decay)
        return [dict(g, lr_scale=1.0) for g in groups if g["params"]]
    from timm.optim import param_groups_layer_decay

    backbone = model.encoder.backbone
    no_wd = backbone.no_weight_decay() if hasattr(backbone, "no_weight_decay") else ()
    groups = param_groups_layer_decay(backbone, cfg.weight_decay, no_weight_decay_list=no_wd,
                                      layer_decay=cfg.layer_decay)
    seen = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in model.parameters() if id(p) not in seen and p.requires_grad]
    groups.append({"params": [p for p in rest if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr_scale": 1.0})
    groups.append({"params": [p for p in rest if p.ndim <= 1], "weight_decay": 0.0, "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


def _train_loader(data: LabelledData, cfg: FinetuneConfig) -> tuple[DataLoader, int]:
    import torch
    from torch.utils.data import DataLoader, Subset

    from catlip.evaluate.classify.linear import balanced_subset
    from catlip.evaluate.common.datasets import _ShardDataset, collate_skip

    ds = data.dataset
    if isinstance(ds, _ShardDataset):
        if cfg.fraction < 1:
            raise DataError("fine-tuning on a fraction of the data needs an image folder or a manifest, not shards")
        return DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=collate_skip), \
            count_shard_samples(ds.urls)
    if cfg.fraction < 1:
        targets = torch.stack([torch.as_tensor(t) for _, t in ds.items])
        ds = Subset(ds, balanced_subset(targets, fraction=cfg.fraction, seed=cfg.seed).tolist())
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, generator=gen, num_workers=cfg.num_workers,
                        collate_fn=collate_skip, drop_last=len(ds) > cfg.batch_size)
    return loader, len(ds)


def _batches_per_epoch(loader: DataLoader, num_samples: int, batch_size: int) -> int:
    """The steps one epoch takes: the loader's own count (a dropped last batch included), or for streamed shards
    every sample in ceil(n / batch) batches. The LR schedule and the progress bar end where training does."""
    try:
        return len(loader)
    except TypeError:  # an iterable dataset has no length
        return math.ceil(num_samples / batch_size)


def count_shard_samples(urls: list[str]) -> int:
    """Samples (keys with an image member) in tar shards, from the member headers only, by the one reader's
    grouping rule (data/formats.py)."""
    from catlip.data import formats

    return sum(any(e in s.members for e in formats.SHARD_IMAGE_EXTS) for url in urls for s in formats.TarScan(url))


def evaluate_classifier(model: nn.Module, data: LabelledData, *, batch_size: int = 256, num_workers: int = 0,
                        device: str | torch.device = "auto", progress: bool = True) -> dict[str, Any]:
    """top-1/top-5 (single-label) or mAP (multi-label) of a model mapping images to logits."""
    from catlip.evaluate.classify.multilabel import multilabel_metrics
    from catlip.evaluate.common.features import extract_features
    from catlip.evaluate.common.metrics import topk_accuracy

    out = extract_features(model, data, batch_size=batch_size, num_workers=num_workers, device=device,
                           progress=progress, desc="evaluate")
    if data.multilabel:
        m = multilabel_metrics(out.x, out.y)
        return {"mAP": m["mAP"], "num_images": len(out), "skipped": out.skipped}
    return {**topk_accuracy(out.x, out.y), "num_images": len(out), "skipped": out.skipped}


def finetune(encoder: nn.Module, linear: nn.Linear, train: LabelledData, test: LabelledData | None,
             cfg: FinetuneConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train encoder + linear end to end; evaluate on ``test`` after every epoch. Returns history and config."""
    import torch
    from torch import nn

    from catlip.evaluate.classify.linear import Classifier
    from catlip.evaluate.common.features import default_device
    from catlip.train.optim import lr_at

    torch.manual_seed(cfg.seed)
    device = default_device(cfg.device)
    model = Classifier(encoder, linear).to(device)
    loader, num_samples = _train_loader(train, cfg)
    per_epoch = max(1, _batches_per_epoch(loader, num_samples, cfg.batch_size))
    total = cfg.epochs * per_epoch
    schedule = OptimConfig(lr=cfg.lr, warmup_steps=int(cfg.warmup_epochs * per_epoch), steps=total,
                           min_lr_ratio=cfg.min_lr / cfg.lr if cfg.lr else 0.0)
    groups = param_groups(model, cfg)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    history, step, skipped = [], 0, 0
    bar = progress_bar(total=total, desc="finetune", unit="step", disable=not progress)
    for epoch in range(cfg.epochs):
        if hasattr(train.dataset, "set_epoch"):
            train.dataset.set_epoch(epoch)
        model.train()
        losses = []
        for batch in loader:
            skipped += batch["skipped"]
            if batch["image"] is None:
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, schedule) * g.get("lr_scale", 1.0)
            loss = _loss(model, batch, cfg, device)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch)
        row = {"epoch": epoch + 1, "steps": step, "train_loss": sum(losses) / max(1, len(losses))}
        if test is not None:
            model.eval()
            row.update(evaluate_classifier(model, test, batch_size=cfg.batch_size, device=device, progress=False))
        history.append(row)
    bar.close()
    return {"history": history, "final": history[-1], "train_images": num_samples, "train_skipped": skipped,
            "config": dataclasses.asdict(cfg), "model": model}


def _loss(model: Classifier, batch: dict, cfg: FinetuneConfig, device: torch.device) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    from catlip.evaluate.classify.multilabel import multilabel_loss

    images, target = batch["image"].to(device, non_blocking=True), batch["target"].to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(images)
    if target.dim() == 2:
        return multilabel_loss(logits, target)
    return F.cross_entropy(logits.float(), target, label_smoothing=cfg.label_smoothing)


TASK = Task(
    name="finetune",
    help="fine-tune the whole model on a labelled dataset",
    description="Fine-tune backbone + linear classifier with a recipe from configs/finetune_*.yaml (paper Table 7); "
    "--set key=value overrides recipe fields.",
    add_arguments=add_arguments, run=run, report=report, order=50,
)
