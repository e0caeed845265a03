"""Arguments, data steps and printing shared by the evaluation tasks (not a task itself).

Imports only the standard library at top level: every task module imports this one, and ``catlip --help`` reads
every task module without importing torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

from catlip.errors import CliError

CKPT_HELP = ("run dir or checkpoint dir from `catlip pretrain`, or random:<timm name | recipe.yaml> for the "
             "random-init floor")
DATA_HELP = ("image folder (one sub-folder per class), .csv/.tsv manifest (image,label) or .tar shards "
             "('x-{000..004}.tar', quoted so the shell leaves the braces alone)")
CLASSES_HELP = ("class names in label-index order: one per line, TSV index<TAB>wnid<TAB>name, a JSON list or "
                "{index: name} (UTF-8; default: folder names / classes.txt or classes.json beside the shards)")


def add_common(p: argparse.ArgumentParser, *, batch_default: str = "256") -> None:
    """The checkpoint and the options every evaluation task takes (``batch_default``: how --help words it)."""
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("--classes", help=CLASSES_HELP)
    p.add_argument("--allow-partial-classes", action="store_true",
                   help="evaluate on the classes --classes lists when the data has others too; their images are "
                   "counted and reported (default: an error)")
    p.add_argument("--output", "-o", help="write the full result as JSON here")
    p.add_argument("--image-size", type=int, help="evaluation resolution (default: the pre-training one)")
    p.add_argument("--batch-size", type=int, help=f"images per batch (default: {batch_default})")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loading processes (default: min(4, CPU cores))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--cache-dir", help="cache frozen features here, keyed by weights and data (default: the user "
                   "cache, $CATLIP_CACHE or $XDG_CACHE_HOME/catlip/features)")
    p.add_argument("--no-cache", action="store_true", help="compute features afresh and keep none")
    p.add_argument("--alpha", type=float, default=0.5, help="path-similarity threshold of the class mapping")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The checkpoint and the inference options (`catlip retrieval`, `catlip tag`)."""
    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("--output", "-o", help="write the full result as JSON here")
    p.add_argument("--image-size", type=int, help="evaluation resolution (default: the pre-training one)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loading processes (default: min(4, CPU cores))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
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
    from catlip.labels.mapping import ClassMapping, CoverageReport

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
    print(format_table(rows, columns))


# ---------------------------------------------------------------- data and features of a labelled task


def open_pair(train: str | None, test: str, classes: str | None, transform, multilabel: bool,
              allow_partial: bool = False):
    """(train | None, test) ``LabelledData``; the test split is read with the training split's class list."""
    from catlip.evaluate.common.datasets import open_labelled

    train_data = open_labelled(train, classes, transform, multilabel, allow_partial=allow_partial) if train else None
    cls = train_data.classes if train_data else classes
    return train_data, open_labelled(test, cls, transform, multilabel, allow_partial=allow_partial)


def unlisted(**splits) -> dict[str, Any]:
    """``{"unlisted_classes": {split: {"images", "labels"}}}`` for the splits with images of unlisted classes
    (``--allow-partial-classes``), so a number over part of the data says so; ``{}`` when none has any."""
    found = {name: data.unlisted for name, data in splits.items() if data is not None and data.unlisted}
    return {"unlisted_classes": found} if found else {}


def model_features(model, data, encoder, wid: str, opts: dict):
    """``Features`` of ``data`` through ``encoder`` (cached by weights id, data and the model's input size)."""
    from catlip.evaluate.common.features import cached_features

    return cached_features(encoder, data, opts.get("cache_dir"), weights_id=wid, transform_id=f"eval{model.image_size}",
                           batch_size=opts.get("batch_size", 256), num_workers=opts.get("num_workers", 0),
                           device=opts.get("device", "auto"), progress=opts.get("progress", True),
                           desc=f"features {Path(data.spec).name}", limit=opts.get("limit"))


# ---------------------------------------------------------------- output


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """Fixed-width text table; floats in [0, 1] named like metrics are shown as percentages."""
    def cell(col: str, value: Any) -> str:
        if isinstance(value, float):
            if col in ("top1", "top5", "mAP", "val_top1") or col.startswith("top1"):
                return "nan" if math.isnan(value) else f"{100 * value:.2f}"
            return f"{value:.3g}"
        return "" if value is None else str(value)

    body = [[cell(c, r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def write_json(result: dict, path: str | None) -> None:
    """The result as JSON at ``path`` (atomically: whole or not at all); a failed write is one line."""
    if not path:
        return
    from catlip.atomic import write_text
    from catlip.errors import OutputError

    text = json.dumps(result, indent=2, default=_jsonable)
    try:
        write_text(path, text)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    import torch  # a value json cannot write: a tensor's result has loaded torch already

    if isinstance(value, torch.Tensor):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
