"""`catlip segment`: semantic segmentation transfer (CatLIP Section 5.2, Table 8a), DeepLabv3 on the backbone's
last feature map.

The head is DeepLabv3's (``catlip.models.dense.Segmenter``: (torchvision's ``ASPP`` with atrous rates 12/24/36 and image pooling, then a 3x3 conv,
BatchNorm, ReLU and a 1x1 classifier: torchvision's ``DeepLabHead`` with its width, 256, as a recipe field) on the
last block of a ViT (final norm applied; stride = patch) or the last stage of a convnet; logits are upsampled bilinearly to the input size and trained with per-pixel cross-entropy that
ignores unlabeled pixels. Evaluation is whole-image: the shorter side resized to ``image_size``, padded to a
multiple of 32, logits cropped and upsampled to the mask's own resolution; one confusion matrix over the test
set gives mIoU (mean over classes that occur in the predictions or the ground truth), per-class IoU and
pixel accuracy.

:func:`run_segment` loads the checkpoint and the data and trains (``dense.loop``); :func:`evaluate_segmenter` is
the evaluation of a model on a data set. Torch is imported inside the functions (``catlip --help`` reads this
module).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catlip.config import ConfigError, from_dict, read_recipe
from catlip.evaluate.common.cli import print_table
from catlip.evaluate.dense.cli import (add_dense_arguments, check_args, finish, overrides, print_counts,
                                       report_history)
from catlip.evaluate.dense.loop import DenseTrainConfig
from catlip.evaluate.tasks import Task
from catlip.progress import progress_bar

if TYPE_CHECKING:
    import torch
    from torch import nn

    from catlip.evaluate.dense.data import DenseData

DATA_HELP = ("webdataset shards with <key>.jpg + <key>.seg.png, an ADE20k-style folder (images/ + annotations/, "
             "or ROOT/images/<split>), or synthetic[:N[:SIZE]] (embedded scenes, no files)")
CLASSES_HELP = ("mask id -> class: JSON {id: name} (or under \"segmentation\"), id<TAB>name lines, ADE20k's "
                "objectInfo150.csv, or names numbered from 1; id 0 = unlabeled (default: classes.json / "
                "classes.txt / objectInfo150.csv beside the data)")
PERCENT = ("mIoU", "pixel_acc", "mean_acc")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dense_arguments(p, DATA_HELP, CLASSES_HELP)


def run(args: argparse.Namespace) -> dict[str, Any]:
    check_args(args)
    return finish(run_segment(args.checkpoint, args.train, args.test, args.classes, config=args.config,
                              overrides=overrides(args), holdout_n=args.holdout, run_dir=args.run_dir,
                              progress=not args.no_progress))


def _fmt(col: str, value: Any) -> Any:
    return f"{100 * value:.2f}" if col in PERCENT and isinstance(value, float) else value


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"segment {result['checkpoint']} ({result['method']}): {result['train_images']} train / "
          f"{result['test_images']} test images, {result['num_classes']} classes")
    report_history(result, list(PERCENT), _fmt)
    per_class = result["final"].get("per_class_iou")
    if per_class:
        rows = sorted(({"class": k, "IoU": f"{100 * v:.2f}"} for k, v in per_class.items() if v is not None),
                      key=lambda r: -float(r["IoU"]))
        shown = rows if len(rows) <= 20 else rows[:10] + rows[-10:]
        print(f"per-class IoU ({len(rows)} classes in the test predictions or ground truth"
              f"{'; the 10 best and 10 worst' if len(rows) > 20 else ''}):")
        print_table(shown, ["class", "IoU"])
    print_counts(result)


# ---------------------------------------------------------------- the recipe


@dataclass
class SegmentConfig(DenseTrainConfig):
    atrous_rates: list[int] = field(default_factory=lambda: [12, 24, 36])
    head_channels: int = 256  # ASPP width (DeepLabv3: 256)
    scale_min: float = 0.5  # random short-side resize range, as a multiple of image_size
    scale_max: float = 2.0

    def validate(self) -> SegmentConfig:
        super().validate()
        if self.batch_size < 2:
            raise ConfigError("batch_size must be at least 2 (the ASPP image-pooling branch has BatchNorm)")
        if self.head_channels <= 0 or not self.atrous_rates:
            raise ConfigError("head_channels must be positive and atrous_rates non-empty")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError("scale_min and scale_max must satisfy 0 < scale_min <= scale_max")
        return self


def load_segment_config(path: str | Path | None, overrides: list[str] | None = None) -> SegmentConfig:
    """A recipe (``configs/segment_*.yaml``) plus ``key=value`` overrides; unknown keys are errors."""
    return from_dict(read_recipe(path, overrides), SegmentConfig, "segment").validate()


# ---------------------------------------------------------------- metrics


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = None) -> torch.Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; pixels with ``ignore_index`` (default:
    ``dense.data.IGNORE``, unlabeled) left out."""
    import torch

    from catlip.evaluate.dense.data import IGNORE

    ignore_index = IGNORE if ignore_index is None else ignore_index
    keep = target != ignore_index
    idx = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu()


def segmentation_metrics(conf: torch.Tensor, names: list[str]) -> dict[str, Any]:
    """mIoU, per-class IoU (None where a class is neither predicted nor present), pixel and mean class accuracy."""
    import torch

    conf = conf.double()
    tp = conf.diag()
    gt, pred = conf.sum(1), conf.sum(0)
    union = gt + pred - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), torch.nan)
    total = conf.sum()
    return {"mIoU": float(iou.nanmean()) if (union > 0).any() else 0.0,
            "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
            "mean_acc": float(acc.nanmean()) if (gt > 0).any() else 0.0,
            "per_class_iou": {n: (None if torch.isnan(v) else float(v)) for n, v in zip(names, iou)},
            "pixels": int(total)}


def evaluate_segmenter(model: nn.Module, data: DenseData, cfg: SegmentConfig, device: torch.device,
                       progress: bool = False, norm: tuple = (None, None)) -> dict[str, Any]:
    """Whole-image inference over ``data``; metrics from one confusion matrix at the masks' resolution.
    ``norm``: the backbone's pixel (mean, std) (None: CLIP's)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from catlip.evaluate.dense.data import DenseDataset, collate_seg, seg_eval_transform

    ds = DenseDataset(data, seg_eval_transform(cfg.image_size, *norm))
    loader = DataLoader(ds, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers, collate_fn=collate_seg)
    conf = torch.zeros(data.num_classes, data.num_classes, dtype=torch.int64)
    notes, skipped, images = Counter(), 0, 0
    with torch.no_grad():
        for batch in progress_bar(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
            notes.update(batch["notes"])
            skipped += batch["skipped"]
            if batch["image"] is None:
                continue
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(batch["image"].to(device))
            for i, (h, w) in enumerate(batch["sizes"]):
                target = batch["mask"][i]
                if target.shape != (h, w):  # evaluation masks are at full resolution
                    up = F.interpolate(logits[i:i + 1, :, :h, :w].float(), size=target.shape, mode="bilinear",
                                       align_corners=False)
                else:
                    up = logits[i:i + 1, :, :h, :w].float()
                conf += confusion_matrix(up.argmax(1)[0].cpu(), target, data.num_classes)
                images += 1
    return {**segmentation_metrics(conf, data.names), "test_images": images, "test_skipped": skipped,
            "test_notes": dict(notes)}


# ---------------------------------------------------------------- training


def _loss(model: nn.Module, batch: dict, device: torch.device):
    import torch.nn.functional as F

    from catlip.evaluate.dense.data import IGNORE

    if batch["image"] is None or batch["image"].shape[0] < 2:
        return None  # BatchNorm in the ASPP pooling branch needs two images
    logits = model(batch["image"].to(device, non_blocking=True))
    return F.cross_entropy(logits.float(), batch["mask"].to(device), ignore_index=IGNORE), {}


def open_pair(train: str, test: str | None, classes: str | None, holdout_n: int = 0
              ) -> tuple[DenseData, DenseData | None]:
    """Training and test data; ``holdout_n`` > 0 splits the last samples of ``train`` off as the test set."""
    from catlip.evaluate.dense.data import holdout, open_segmentation

    train_data = open_segmentation(train, classes, seed=0)
    if holdout_n:
        if test:
            from catlip.errors import CliError

            raise CliError("give --test or --holdout, not both")
        return holdout(train_data, holdout_n)
    return train_data, (open_segmentation(test, classes, seed=1) if test else None)


def run_segment(checkpoint: str, train_spec: str, test_spec: str | None = None, classes: str | None = None, *,
                config: str | None = None, overrides: list[str] | None = None, holdout_n: int = 0,
                run_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Load ``checkpoint`` (or ``random:...``), train DeepLabv3 on ``train_spec``, evaluate on the test set."""
    import torch

    from catlip.evaluate.common.model import check_source, load_eval_model
    from catlip.evaluate.dense.data import DenseDataset, collate_seg, seg_train_transform
    from catlip.evaluate.dense.loop import Job, job_meta, set_drop_path, task_result, train
    from catlip.models.dense import Segmenter

    check_source(checkpoint)  # before opening the data
    cfg = load_segment_config(config, overrides)
    train_data, test_data = open_pair(train_spec, test_spec, classes, holdout_n)
    torch.manual_seed(cfg.seed)  # the head's initial weights
    loaded = load_eval_model(checkpoint)
    set_drop_path(loaded.backbone, cfg.drop_path)
    model = Segmenter(loaded.backbone, train_data.num_classes, cfg.atrous_rates, cfg.head_channels)
    norm = (loaded.preprocess.mean, loaded.preprocess.std)  # what the backbone was trained on
    evaluate = None if test_data is None else partial(_evaluate, data=test_data, cfg=cfg, progress=progress,
                                                      norm=norm)
    meta = job_meta("segment", checkpoint, train_data, test_data, cfg)
    job = Job(model, loaded.backbone, DenseDataset(train_data, seg_train_transform(cfg.image_size, (cfg.scale_min,
              cfg.scale_max), *norm)), partial(collate_seg, divisor=32), _loss, evaluate, meta, desc="segment")
    out = train(job, cfg, run_dir=run_dir, progress=progress)
    return task_result(checkpoint, loaded, train_data, test_data, out, model)


def _evaluate(model: nn.Module, device: torch.device, *, data: DenseData, cfg: SegmentConfig, progress: bool,
              norm: tuple = (None, None)):
    return evaluate_segmenter(model, data, cfg, device, progress, norm)


TASK = Task(
    name="segment",
    help="semantic segmentation transfer (DeepLabv3 head, mIoU)",
    description="Train a DeepLabv3 head (ASPP, atrous rates 12/24/36) with the backbone on images with semantic "
    "masks and report mIoU, per-class IoU and pixel accuracy (CatLIP Section 5.2; recipe "
    "configs/segment_ade20k_vit_b16.yaml). --set key=value overrides recipe fields.",
    add_arguments=add_arguments, run=run, report=report, order=60,
)
