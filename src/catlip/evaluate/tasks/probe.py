"""`catlip probe`: linear probes (logistic over an lr/wd grid; ridge for k-shot) + k-NN on frozen features."""

from __future__ import annotations

import argparse
from typing import Any

from catlip.errors import CliError
from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import (DATA_HELP, add_common, add_limit, comma_list, eval_opts, print_coverage,
                                        print_table, print_unlisted)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_limit(p)
    p.add_argument("--train", required=True, help=DATA_HELP)
    p.add_argument("--test", required=True, help=DATA_HELP)
    p.add_argument("--fractions", default="1", help="comma list of training-set fractions, e.g. 0.01,0.1,1")
    p.add_argument("--shots", default="", help="comma list of images per class, e.g. 1,5,10")
    p.add_argument("--init", default="random", help="random | transfer | random,transfer")
    p.add_argument("--epochs", type=int, default=30, help="probe epochs (paper: 30)")
    p.add_argument("--lrs", default="0.001,0.01,0.1", help="probe learning-rate grid (paper Table 7a: 0.00003)")
    p.add_argument("--wds", default="0,0.0001,0.01", help="probe weight-decay grid (paper: 0)")
    p.add_argument("--multilabel", action="store_true", help="multi-label targets (.json labels): BCE + mAP")
    p.add_argument("--no-knn", action="store_true", help="skip the k-NN evaluation")
    p.add_argument("--raw-features", action="store_true",
                   help="probe the raw features (default: standardized with the training split's mean and std, "
                   "as benchmarks/small_study.py does)")
    p.add_argument("--seed", type=int, default=0)


def probe_arguments(args: argparse.Namespace, *, multilabel: bool, knn: bool) -> dict[str, Any]:
    """Keyword arguments of ``run_probe`` from the probe flags (shared with the multilabel task)."""
    from catlip.evaluate.classify.linear import ProbeConfig

    inits = comma_list(args.init, str, "--init")
    fractions = comma_list(args.fractions, float, "--fractions")
    if any(i not in ("random", "transfer") for i in inits) or any(not 0 < f <= 1 for f in fractions):
        raise CliError("--init takes random and/or transfer; --fractions values lie in (0, 1]")
    return dict(fractions=fractions, shots=comma_list(args.shots, int, "--shots"), inits=inits, knn=knn,
                multilabel=multilabel, alpha=args.alpha, image_size=args.image_size, seed=args.seed,
                raw_features=args.raw_features,
                probe=ProbeConfig(epochs=args.epochs, seed=args.seed, lrs=comma_list(args.lrs, float, "--lrs"),
                                  weight_decays=comma_list(args.wds, float, "--wds")),
                **eval_opts(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.run import run_probe

    return run_probe(args.checkpoint, args.train, args.test, args.classes,
                     **probe_arguments(args, multilabel=args.multilabel, knn=not args.no_knn))


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_unlisted(result)
    print_coverage(result)
    metric = ["mAP"] if result.get("multilabel", getattr(args, "multilabel", False)) else ["top1", "top5"]
    print_table(result["rows"], ["protocol", "subset", "init", "n_train", *metric])


def linear_probe(train, test, num_classes: int, config=None, *, init=None, device="cpu",
                 standardize: bool = False) -> dict[str, Any]:
    """One logistic probe on frozen ``Features``: fit (lr/wd grid on a validation split), score on ``test``.

    ``standardize``: z-score both sets with the training mean/std first (one lr grid then fits any backbone's
    feature scale; the demo uses it). Returns the test metrics plus the chosen ``lr`` and ``weight_decay``.
    """
    from catlip.evaluate.classify.linear import score, standardize_features, train_probe

    if standardize:
        (train, test), _, _ = standardize_features(train, test)
    fit = train_probe(train, num_classes, config, init=init, device=device)
    return {**score(fit.linear, test), "lr": fit.lr, "weight_decay": fit.weight_decay}


TASK = Task(
    name="probe",
    help="linear probe (+ k-NN) on frozen features",
    description="Train linear classifiers on frozen features over fractions / k-shot subsets of the training set "
    "(lr/wd grid picked on a validation split; ridge for k-shot) and report test accuracy, plus 20-NN accuracy. "
    "--init transfer starts from the pre-trained head (CatLIP Transfer Init).",
    add_arguments=add_arguments, run=run, report=report, order=10,
)
