"""`catlip finetune`: fine-tune backbone + linear classifier with a configs/finetune_*.yaml recipe."""

from __future__ import annotations

import argparse
from typing import Any

from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import DATA_HELP, add_common, print_coverage, print_table, print_unlisted


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--config", help="recipe YAML (configs/finetune_*.yaml)")
    p.add_argument("--train", required=True, help=DATA_HELP)
    p.add_argument("--test", help=DATA_HELP)
    p.add_argument("--save", help="write the fine-tuned weights (safetensors) here")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set epochs=2 --set init=transfer (repeatable)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.run import run_finetune

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


TASK = Task(
    name="finetune",
    help="fine-tune the whole model on a labelled dataset",
    description="Fine-tune backbone + linear classifier with a recipe from configs/finetune_*.yaml (paper Table 7); "
    "--set key=value overrides recipe fields.",
    add_arguments=add_arguments, run=run, report=report, order=50,
)
