"""`catlip zeroshot`: classify without training (head for CatLIP/SuperClass, text tower for CLIP/SigLIP/LiT).

Reported like CLIP_benchmark: top-1, top-5 and mean per-class recall, with the mode (and, for text, the template
set and its size) named in the table and the JSON."""

from __future__ import annotations

import argparse
from typing import Any

from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import DATA_HELP, add_common, add_limit, eval_opts, print_table, print_unlisted


def add_arguments(p: argparse.ArgumentParser) -> None:
    from catlip.methods.registry import ZERO_SHOT_MODES

    add_common(p)
    add_limit(p)
    p.add_argument("--test", required=True, help=DATA_HELP)
    p.add_argument("--mode", default="auto", choices=("auto", *ZERO_SHOT_MODES),
                   help="auto: head for classification checkpoints (CatLIP, SuperClass), text tower for two-tower "
                        "runs (CLIP, SigLIP, SuperCLIP, LiT)")
    p.add_argument("--no-bias", action="store_true", help="head mode: ignore the head's bias (label prior)")
    p.add_argument("--templates", default="openai",
                   help="text mode: prompt templates, openai (CLIP's 80-prompt ImageNet ensemble, the default), "
                   "simple (its 7-prompt subset), short (6 prompts) or a file, one template per line with {} or {c} "
                   "for the class name (# comments and blank lines skipped)")
    p.add_argument("--classnames",
                   help="names to score the classes by instead of the dataset's (--classes / folder names): "
                   "imagenet (open_clip's ImageNet names, in wnid order) or a file, one name per line or "
                   "index<TAB>name; one name per dataset class")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.run import run_zeroshot

    return run_zeroshot(args.checkpoint, args.test, args.classes, mode=args.mode, alpha=args.alpha,
                        use_bias=not args.no_bias, image_size=args.image_size, templates=args.templates,
                        classnames=args.classnames, **eval_opts(args))


COLUMNS = ["method", "mode", "templates", "classnames", "num_classes", "test_images", "top1", "top5",
           "mean_per_class_recall"]


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    print_unlisted(result)
    if result.get("coverage"):
        print(head_coverage(result["coverage"]))
    for warning in result.get("warnings", ()):
        print(f"warning: {warning}")
    absent = result.get("classes_without_images", 0)
    if absent:
        print(f"{absent} of {result['num_classes']} classes have no test image: left out of mean_per_class_recall")
    print_table([table_row(result)], COLUMNS)
    print_per_class(result)
    collapse = collapse_note(result, use_bias=not getattr(args, "no_bias", False))
    if collapse:
        print(collapse)


def head_coverage(cov: dict[str, Any]) -> str:
    """Which classes head zero-shot can score: those mapped to head rows; the others are scored -inf."""
    counts = cov["counts"]
    mapped = cov["num_classes"] - counts["random"]
    kinds = ", ".join(f"{k} {counts[k]}" for k in ("exact", "similar", "averaged"))
    source = f", {cov['labels']} labels" if cov.get("labels") else ""
    line = (f"classes mapped to the head: {mapped} of {cov['num_classes']} ({kinds}; {cov['dataset'] or 'target'}"
            f"{source}, alpha={cov['alpha']})")
    unmapped = cov["unmapped"]
    if unmapped:
        shown = ", ".join(unmapped[:20]) + (f", ... (+{len(unmapped) - 20})" if len(unmapped) > 20 else "")
        line += (f"\nunmapped classes (scored -inf: never predicted, their images count as errors): "
                 f"{len(unmapped)}: {shown}")
    return line


PER_CLASS_SHOWN = 30  # more classes than this: the 10 lowest and 10 highest recalls (the JSON has them all)


def print_per_class(result: dict[str, Any]) -> None:
    """Recall of each class with its image and prediction counts: where the mean per-class recall comes from."""
    names, recall = result.get("class_names"), result.get("per_class_recall")
    if not names or recall is None:
        return
    rows = [{"class": n, "images": i, "predicted": p, "recall": "-" if r is None else f"{100 * r:.2f}"}
            for n, i, p, r in zip(names, result["per_class_images"], result["predictions_per_class"], recall)]
    title = "per-class recall"
    if len(rows) > PER_CLASS_SHOWN:
        ranked = sorted((r for r in rows if r["recall"] != "-"), key=lambda r: float(r["recall"]))
        rows, title = ranked[:10] + ranked[-10:], f"per-class recall (the 10 lowest and 10 highest of {len(rows)})"
    print(f"{title}:")
    print_table(rows, ["class", "images", "predicted", "recall"])


def collapse_note(result: dict[str, Any], use_bias: bool = True) -> str | None:
    """One line when more than half of the predictions fall in one class that does not hold half the images."""
    from catlip.evaluate.classify.zeroshot import dominant_class

    predicted, images = result.get("predictions_per_class"), result.get("per_class_images")
    if not predicted:
        return None
    top = dominant_class(predicted, images)
    if top is None:
        return None
    name = result["class_names"][top] if result.get("class_names") else f"class {top}"
    hint = "; the head's bias is a label prior: try --no-bias" if result.get("mode") == "head" and use_bias else ""
    return (f"note: {predicted[top]} of {sum(predicted)} predictions ({100 * predicted[top] / sum(predicted):.0f}%) "
            f"fall in one class, {name!r}, which has {images[top]} of the {sum(images)} "
            f"images: the classifier has collapsed onto it{hint}")


def table_row(result: dict[str, Any]) -> dict[str, Any]:
    """The result as one printed row: the template set with its size (text mode), the recall as a percentage
    like top1/top5 (the shared table formatter knows only those names)."""
    recall = result.get("mean_per_class_recall", float("nan"))
    templates = f"{result['templates']} ({result['num_templates']})" if "templates" in result else "-"
    return {**result, "templates": templates, "mean_per_class_recall": "nan" if recall != recall
            else f"{100 * recall:.2f}"}


def head_zero_shot(model, feats, classes, *, alpha: float | None = None, use_bias: bool = True,
                   dataset: str = "") -> dict[str, Any]:
    """Head zero-shot of an ``EvalModel`` on its frozen ``Features``: classes mapped by the vocabulary's label
    source, scored by their head rows. Returns the metrics plus ``coverage`` (the class-mapping report as a dict)."""
    from catlip.evaluate.classify.transfer_init import DEFAULT_ALPHA, map_classes
    from catlip.evaluate.classify.zeroshot import head_zero_shot as score_head

    weight, bias = model.head_weight("head zero-shot")
    report = map_classes(classes, model.vocab, DEFAULT_ALPHA if alpha is None else alpha, dataset)
    return {**score_head(feats, weight, bias, report, use_bias), "coverage": report.to_dict()}


TASK = Task(
    name="zeroshot",
    help="zero-shot classification (head for CatLIP/SuperClass, text tower for CLIP/LiT)",
    description="Classify without training: CatLIP/SuperClass score each class by the head rows its name maps to "
    "(by the vocabulary's label source: WordNet synsets, BPE tokens or words; unmapped classes are listed), "
    "two-tower runs (CLIP, SigLIP, SuperCLIP, LiT from `catlip lit`) by prompt-template text embeddings "
    "(--templates, default: the 80-prompt OpenAI ensemble). Reports top-1, top-5 and mean per-class recall.",
    add_arguments=add_arguments, run=run, report=report, order=40,
)
