"""`catlip segment`: semantic segmentation transfer, DeepLabv3 on the backbone's last map (CatLIP Section 5.2)."""

from __future__ import annotations

import argparse
from typing import Any

from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import print_table
from catlip.evaluate.dense.cli import (add_dense_arguments, check_args, finish, overrides, print_counts, report_history)

DATA_HELP = ("webdataset shards with <key>.jpg + <key>.seg.png, an ADE20k-style folder (images/ + annotations/, "
             "or ROOT/images/<split>), or synthetic[:N[:SIZE]] (embedded scenes, no files)")
CLASSES_HELP = ("mask id -> class: JSON {id: name} (or under \"segmentation\"), id<TAB>name lines, ADE20k's "
                "objectInfo150.csv, or names numbered from 1; id 0 = unlabeled (default: classes.json / "
                "classes.txt / objectInfo150.csv beside the data)")
PERCENT = ("mIoU", "pixel_acc", "mean_acc")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dense_arguments(p, DATA_HELP, CLASSES_HELP)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.dense.segment import run_segment

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


TASK = Task(
    name="segment",
    help="semantic segmentation transfer (DeepLabv3 head, mIoU)",
    description="Train a DeepLabv3 head (ASPP, atrous rates 12/24/36) with the backbone on images with semantic "
    "masks and report mIoU, per-class IoU and pixel accuracy (CatLIP Section 5.2; recipe "
    "configs/segment_ade20k_vit_b16.yaml). --set key=value overrides recipe fields.",
    add_arguments=add_arguments, run=run, report=report, order=60,
)
