"""`catlip zeroshot`: classify without training (head for CatLIP/SuperClass, text tower for CLIP/SigLIP)."""

from __future__ import annotations

import argparse
from typing import Any

from catlip.evaluate.tasks import Task
from catlip.evaluate.tasks._common import DATA_HELP, add_common, eval_opts, print_coverage, print_table


def add_arguments(p: argparse.ArgumentParser) -> None:
    from catlip.methods.registry import ZERO_SHOT_MODES

    add_common(p)
    p.add_argument("--test", required=True, help=DATA_HELP)
    p.add_argument("--mode", default="auto", choices=("auto", *ZERO_SHOT_MODES),
                   help="auto: head for classification checkpoints, text tower for CLIP/SigLIP")
    p.add_argument("--no-bias", action="store_true", help="head mode: ignore the head's bias (label prior)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.run import run_zeroshot

    return run_zeroshot(args.checkpoint, args.test, args.classes, mode=args.mode, alpha=args.alpha,
                        use_bias=not args.no_bias, image_size=args.image_size, **eval_opts(args))


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_coverage(result)
    print_table([result], ["method", "mode", "num_classes", "test_images", "top1", "top5"])


def head_zero_shot(model, feats, classes, *, alpha: float | None = None, use_bias: bool = True,
                   dataset: str = "") -> dict[str, Any]:
    """Head zero-shot of an ``EvalModel`` on its frozen ``Features``: classes mapped by the vocabulary's label
    source, scored by their head rows. Returns the metrics plus ``coverage`` (the class-mapping report as a dict)."""
    from catlip.evaluate.transfer_init import DEFAULT_ALPHA, map_classes
    from catlip.evaluate.zero_shot import head_zero_shot as score_head

    weight, bias = model.head_weight("head zero-shot")
    report = map_classes(classes, model.vocab, DEFAULT_ALPHA if alpha is None else alpha, dataset)
    return {**score_head(feats, weight, bias, report, use_bias), "coverage": report.to_dict()}


TASK = Task(
    name="zeroshot",
    help="zero-shot classification (head for CatLIP/SuperClass, text tower for CLIP)",
    description="Classify without training: CatLIP/SuperClass score each class by the head rows its name maps to "
    "(by the vocabulary's label source: WordNet synsets, BPE tokens or words; unmapped classes are listed), "
    "CLIP by prompt-template text embeddings.",
    add_arguments=add_arguments, run=run, report=report, order=40,
)
