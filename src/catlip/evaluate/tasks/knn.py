"""`catlip knn`: weighted k-nearest-neighbour accuracy on frozen features (cosine, exp(s/T) votes; DINO)."""

from __future__ import annotations

import argparse
from typing import Any

from catlip.errors import CliError
from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import DATA_HELP, add_common, add_limit, eval_opts, print_table, print_unlisted


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common(p)
    add_limit(p)
    p.add_argument("--train", required=True, help=DATA_HELP + " (the neighbour bank)")
    p.add_argument("--test", required=True, help=DATA_HELP)
    p.add_argument("--k", type=int, default=20, help="neighbours (default 20)")
    p.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(similarity / T) (default 0.07)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.k < 1 or args.temperature <= 0:
        raise CliError("--k must be >= 1 and --temperature > 0")
    from catlip.evaluate.run import run_knn

    return run_knn(args.checkpoint, args.train, args.test, args.classes, k=args.k, temperature=args.temperature,
                   image_size=args.image_size, **eval_opts(args))


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_unlisted(result)
    print_table(result["rows"], ["protocol", "subset", "n_train", "top1", "top5"])


TASK = Task(
    name="knn",
    help="k-nearest-neighbour accuracy on frozen features",
    description="Classify each test image by its k most similar training images (cosine similarity of the frozen "
    "features, votes weighted by exp(similarity / T), the DINO protocol); no training. `catlip probe` reports the "
    "same 20-NN row unless --no-knn.",
    add_arguments=add_arguments, run=run, report=report, order=20,
)
