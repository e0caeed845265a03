"""`catlip detect`: object detection transfer, Mask R-CNN on ViTDet's simple feature pyramid (CatLIP Section 5.3)."""

from __future__ import annotations

import argparse
from typing import Any

from catlip.evaluate.tasks import Task
from catlip.evaluate.dense.cli import (add_dense_arguments, check_args, finish, overrides, print_counts, report_history)

DATA_HELP = ("webdataset shards with <key>.jpg + <key>.json ({\"boxes\": [[x0,y0,x1,y1]...], \"labels\": [...]}), "
             "a COCO instances_*.json (images: --images), or synthetic[:N[:SIZE]] (embedded scenes, no files)")
CLASSES_HELP = ("class names in label-index order: a JSON list (or one under \"detection\") or one per line "
                "(default: classes.json / classes.txt beside the shards; a COCO json brings its categories)")
PERCENT = ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dense_arguments(p, DATA_HELP, CLASSES_HELP)
    p.add_argument("--images", help="image folder of a COCO --train json (default: found beside the json)")
    p.add_argument("--test-images", help="image folder of a COCO --test json")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.dense.detect import run_detect

    check_args(args)
    return finish(run_detect(args.checkpoint, args.train, args.test, args.classes, images=args.images,
                             test_images=args.test_images, config=args.config, overrides=overrides(args),
                             holdout_n=args.holdout, run_dir=args.run_dir, progress=not args.no_progress))


def _fmt(col: str, value: Any) -> Any:
    return f"{100 * value:.2f}" if col in PERCENT and isinstance(value, float) else value


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    head = "Mask R-CNN" if result["masks"] else "Mask R-CNN, box branch (no instance masks in the data)"
    print(f"detect {result['checkpoint']} ({result['method']}), {head}: {result['train_images']} train / "
          f"{result['test_images']} test images, {result['num_classes']} classes")
    report_history(result, list(PERCENT), _fmt)
    print_counts(result)


TASK = Task(
    name="detect",
    help="object detection transfer (Mask R-CNN on a ViTDet feature pyramid, COCO AP)",
    description="Train Mask R-CNN (boxes; masks when the data has them) on ViTDet's simple feature pyramid over the "
    "backbone and report COCO box AP / AP50 / AP75 (CatLIP Section 5.3; recipe "
    "configs/detect_coco_maskrcnn_vit_b16.yaml). --set key=value overrides recipe fields.",
    add_arguments=add_arguments, run=run, report=report, order=61,
)
