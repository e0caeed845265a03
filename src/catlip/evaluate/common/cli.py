"""Arguments and helpers shared by the evaluation tasks (not a task itself: the leading ``_``)."""

from __future__ import annotations

import argparse
import os

from catlip.errors import CliError

CKPT_HELP = ("run dir or checkpoint dir from `catlip pretrain`, or random:<timm name | recipe.yaml> for the "
             "random-init floor")
DATA_HELP = "image folder (one sub-folder per class), .csv/.tsv manifest (image,label) or .tar shards ({000..004})"
CLASSES_HELP = ("class names in label-index order: one per line, TSV index<TAB>wnid<TAB>name, a JSON list or "
                "{index: name} (UTF-8; default: folder names / classes.txt beside the shards)")


def add_common(p: argparse.ArgumentParser) -> None:
    """The checkpoint and the options every evaluation task takes."""
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("--classes", help=CLASSES_HELP)
    p.add_argument("--allow-partial-classes", action="store_true",
                   help="evaluate on the classes --classes lists when the data has others too; their images are "
                   "counted and reported (default: an error)")
    p.add_argument("--output", "-o", help="write the full result as JSON here")
    p.add_argument("--image-size", type=int, help="evaluation resolution (default: the pre-training one)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: 256; finetune: the recipe's)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loading processes (default: min(4, CPU cores))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--cache-dir", help="cache frozen features here, keyed by weights and data (default: the user "
                   "cache, $CATLIP_CACHE or $XDG_CACHE_HOME/catlip/features)")
    p.add_argument("--no-cache", action="store_true", help="compute features afresh and keep none")
    p.add_argument("--alpha", type=float, default=0.5, help="path-similarity threshold of the class mapping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_limit(p: argparse.ArgumentParser, what: str = "images per split") -> None:
    """``--limit N``: try a command on a few images first (the first N in the data's order)."""
    p.add_argument("--limit", type=int, metavar="N", help=f"at most N {what} (the first ones; default: all)")


def check_limit(args: argparse.Namespace) -> int | None:
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise CliError(f"--limit must be >= 1, got {limit}")
    return limit


def feature_cache(args: argparse.Namespace) -> str | None:
    """Features are cached by default (a second command on the same weights and data reads them back)."""
    if getattr(args, "no_cache", False):
        return None
    from catlip.defaults import user_cache

    return args.cache_dir or str(user_cache("features"))


def eval_opts(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size or 256, "num_workers": args.workers, "device": args.device,
            "cache_dir": feature_cache(args), "progress": not args.no_progress, "allow_partial": args.allow_partial_classes,
            "limit": check_limit(args)}


def comma_list(text: str, kind: type, flag: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CliError(f"{flag} expects a comma-separated list of {kind.__name__}s, got {text!r}") from None


def print_coverage(result: dict) -> None:
    """Transfer Init's class-mapping summary, when the result has one (zero-shot words its own: head_coverage)."""
    from catlip.evaluate.classify.transfer_init import ClassMapping, CoverageReport

    cov = result.get("coverage")
    if cov:
        report = CoverageReport(cov["dataset"], cov["vocab_method"], cov["alpha"],
                                [ClassMapping(**c) for c in cov["classes"]], cov.get("labels", ""))
        print(report.summary())


def print_unlisted(result: dict) -> None:
    """Say which images were left out for belonging to no listed class (``--allow-partial-classes``)."""
    for split, info in result.get("unlisted_classes", {}).items():
        labels = ", ".join(list(info["labels"])[:8]) + (", ..." if len(info["labels"]) > 8 else "")
        print(f"{split}: {info['images']} images of {len(info['labels'])} classes not in --classes ({labels}) "
              "were left out")


def print_table(rows: list[dict], columns: list[str]) -> None:
    from catlip.evaluate.run import format_table

    print(format_table(rows, columns))
