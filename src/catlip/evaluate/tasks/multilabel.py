"""`catlip multilabel`: a multi-label linear probe (BCE, mean average precision), e.g. COCO-style labels.

The same probe as ``catlip probe --multilabel`` (fractions, Transfer Init, the lr/wd grid), without k-NN or ridge,
which need one class per image.
"""

from __future__ import annotations

import argparse
from typing import Any

from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import DATA_HELP, add_common, add_limit, print_coverage, print_table, print_unlisted


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


TASK = Task(
    name="multilabel",
    help="multi-label linear probe (BCE, mAP) on frozen features",
    description="Train a multi-label linear probe (binary cross-entropy over an lr/wd grid) on frozen features and "
    "report the test mean average precision; targets from .json {\"labels\": [...]} shard members or a manifest's "
    "`labels` column (label|label). Same as `catlip probe --multilabel`.",
    add_arguments=add_arguments, run=run, report=report, order=30,
)
