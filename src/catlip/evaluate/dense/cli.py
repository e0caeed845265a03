"""Arguments, running and printing shared by the dense tasks (segment, detect); not a task itself."""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

from catlip.evaluate.common.cli import CKPT_HELP, print_table

DENSE_DATA_HELP = ("webdataset shards ({000..009} patterns) with <key>.jpg and the task's member, or "
                   "synthetic[:N[:SIZE]] (embedded scenes, no files)")


def add_dense_arguments(p: argparse.ArgumentParser, data_help: str, classes_help: str) -> None:
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("--train", required=True, help=data_help)
    p.add_argument("--test", help=data_help + " (default: none, or --holdout)")
    p.add_argument("--holdout", type=int, default=0, metavar="N",
                   help="use the last N samples of --train (in its order) as the test set: a fixed split")
    p.add_argument("--classes", help=classes_help)
    p.add_argument("--config", help="recipe YAML (configs/segment_*.yaml, configs/detect_*.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set epochs=2 --set lr=0.001 (repeatable)")
    p.add_argument("--run-dir", help="write a checkpoint here after every epoch; the same command resumes from it")
    p.add_argument("--output", "-o", help="write the full result as JSON here")
    p.add_argument("--image-size", type=int, help="training crop / evaluation size (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="images per training batch (default: the recipe's)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loading processes (default: min(4, CPU cores))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (torchrun: one process per GPU)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def overrides(args: argparse.Namespace) -> list[str]:
    """The recipe overrides the flags stand for, after the user's own --set ones."""
    out = list(args.overrides) + [f"num_workers={args.workers}", f"device={args.device}"]
    for flag, key in (("image_size", "image_size"), ("batch_size", "batch_size"), ("epochs", "epochs")):
        if getattr(args, flag):
            out.append(f"{key}={getattr(args, flag)}")
    return out


def check_args(args: argparse.Namespace) -> None:
    from catlip.errors import CliError

    if args.holdout < 0:
        raise CliError("--holdout must be a positive number of samples")
    if args.holdout and args.test:
        raise CliError("give --test or --holdout, not both")
    if args.workers < 0:
        raise CliError("--workers must be >= 0")


def finish(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able result (the trained model stays out)."""
    result.pop("model", None)
    return result


def print_counts(result: dict[str, Any]) -> None:
    """Skipped samples and corrected annotations, one line per data set, when there were any."""
    parts = []
    for name, counts in (("train (opening)", result.get("skipped_at_open", {}).get("train")),
                         ("test (opening)", result.get("skipped_at_open", {}).get("test")),
                         ("train", result.get("train_notes")),
                         ("test", result.get("final", {}).get("test_notes"))):
        if counts:
            parts.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if parts:
        print("counted and skipped or corrected:")
        print("\n".join(parts))


def report_history(result: dict[str, Any], metrics: list[str], fmt: Callable[[str, Any], Any]) -> None:
    history = result["history"]
    cols = ["epoch", "steps", "train_loss"] + [m for m in metrics if any(m in r for r in history)]
    print_table([{c: fmt(c, r.get(c)) for c in cols if c in r} for r in history], cols)
