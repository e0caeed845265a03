"""`catlip multilabel`: a multi-label linear probe (BCE, mean average precision), e.g. COCO-style labels.

The same probe as ``catlip probe --multilabel`` (fractions, Transfer Init, the lr/wd grid), without k-NN or ridge,
which need one class per image. The objective and the metric are shared with multi-label fine-tuning: the loss is
CatLIP's own (``catlip.losses.bce``: summed over classes, averaged over the batch), as the paper fine-tunes COCO
with binary cross-entropy (Appendix A); the metric is the mean over classes of average precision. Torch is imported
inside the functions (``catlip --help`` reads this module).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from catlip.evaluate.common.cli import DATA_HELP, add_common, add_limit, print_coverage, print_table, print_unlisted
from catlip.evaluate.tasks import Task

if TYPE_CHECKING:
    import torch


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_limit(p)
    p.add_argument("--train", required=True, help=DATA_HELP + "; labels: .json {\"labels\": [...]} or label|label")
    p.add_argument("--test", required=True, help=DATA_HELP)
    p.add_argument("--fractions", default="1", help="comma list of training-set fractions, e.g. 0.01,0.1,1")
    p.add_argument("--init", default="random", help="random | transfer | random,transfer")
    p.add_argument("--epochs", type=int, default=30, help="probe epochs (paper: 30)")
    p.add_argument("--lrs", default="0.001,0.01,0.1", help="probe learning-rate grid")
    p.add_argument("--wds", default="0,0.0001,0.01", help="probe weight-decay grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--raw-features", action="store_true",
                   help="probe the raw features (default: standardized with the training split's mean and std, "
                   "as benchmarks/small_study.py does)")
    p.set_defaults(shots="")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.classify.probe import probe_arguments, run_probe

    result = run_probe(args.checkpoint, args.train, args.test, args.classes,
                       **probe_arguments(args, multilabel=True, knn=False))
    result["multilabel"] = True
    return result


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_unlisted(result)
    print_coverage(result)
    print_table(result["rows"], ["protocol", "subset", "init", "n_train", "mAP"])


# ---------------------------------------------------------------- objective and metric (also fine-tuning's)


def multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE with logits against multi-hot targets; reduction: sum over classes, mean over the batch."""
    from catlip.losses import bce

    return bce(logits.float(), targets.float())


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor) -> dict:
    """mAP (and per-class AP) of (N, C) scores against (N, C) 0/1 targets."""
    from catlip.evaluate.common.metrics import mean_average_precision

    out = mean_average_precision(scores.float(), targets)
    out["mean_labels_per_image"] = float(targets.float().sum(1).mean()) if len(targets) else float("nan")
    return out


def is_multilabel(targets: torch.Tensor) -> bool:
    return targets.dim() == 2


TASK = Task(
    name="multilabel",
    help="multi-label linear probe (BCE, mAP) on frozen features",
    description="Train a multi-label linear probe (binary cross-entropy over an lr/wd grid) on frozen features and "
    "report the test mean average precision; targets from .json {\"labels\": [...]} shard members or a manifest's "
    "`labels` column (label|label). Same as `catlip probe --multilabel`.",
    add_arguments=add_arguments, run=run, report=report, order=30,
)
