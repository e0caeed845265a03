"""`catlip zeroshot`: classify without training (head for CatLIP/SuperClass, text tower for CLIP/SigLIP/LiT).

* From the head (methods with a label source: CatLIP, SuperClass): no text encoder; a class's score is the logit
  of its mapped vocabulary entries (the Transfer Init mapping of the vocabulary's label source, rows averaged).
  Classes without a mapping cannot be scored: they get -inf (so they are never predicted and their images count
  as errors) and are listed in the report.
* Text tower (CLIP, SigLIP, LiT): class embeddings averaged over prompt templates (``common.templates``), against
  image embeddings.

Both report CLIP_benchmark's metrics (:func:`classification_metrics`: top-1, top-5, mean per-class recall), so head
and text numbers sit in one table; the mode (and, for text, the template set and its size) is named in the table
and the JSON. :func:`run_zeroshot` loads the checkpoint and computes the (cached) image features;
:func:`head_zero_shot` and :func:`clip_zero_shot` are the procedures on those features. Torch is imported inside
the functions (``catlip --help`` reads this module).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable, Sequence

from catlip.errors import CatlipError
from catlip.evaluate.common.cli import (DATA_HELP, add_common, add_limit, eval_opts, model_features, open_pair,
                                        print_table, print_unlisted, unlisted)
from catlip.evaluate.common.templates import SHORT_TEMPLATES, Template, fill
from catlip.evaluate.tasks import Task
from catlip.labels.mapping import DEFAULT_ALPHA

if TYPE_CHECKING:
    import torch

    from catlip.evaluate.common.features import Features
    from catlip.labels.mapping import CoverageReport

TEMPLATES = SHORT_TEMPLATES  # the old name of the 6-prompt set


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


def run_zeroshot(checkpoint: str, test: str, classes: str | None = None, *, mode: str = "auto",
                 alpha: float = DEFAULT_ALPHA, use_bias: bool = True, image_size: int | None = None,
                 templates: str | None = None, classnames: str | None = None, allow_partial: bool = False,
                 **opts: Any) -> dict[str, Any]:
    """Zero-shot top-1/top-5 and mean per-class recall (CLIP_benchmark's metrics): from the classification head
    (methods with a label source; classes mapped by the vocabulary's label source) or the text tower (CLIP, SigLIP,
    LiT; class embeddings averaged over the ``templates`` set: openai | simple | short | a file). ``classnames``:
    the names to use instead of the dataset's (``imagenet`` or a file); ``mode="auto"``: the method registry's."""
    from pathlib import Path

    from catlip.evaluate.classify.transfer_init import head_mapping
    from catlip.evaluate.common.datasets import ClassList
    from catlip.evaluate.common.model import load_eval_model
    from catlip.evaluate.common.templates import load_templates, name_warnings, resolve_classnames

    model = load_eval_model(checkpoint, image_size)
    if mode == "auto":
        mode = model.zero_shot_mode()
    from catlip.methods.registry import ZERO_SHOT_MODES

    if mode not in ZERO_SHOT_MODES:
        raise CatlipError(f"--mode must be auto, {' or '.join(ZERO_SHOT_MODES)}, not {mode!r}")
    _, test_data = open_pair(None, test, classes, model.eval_transform(), False, allow_partial)
    names = resolve_classnames(classnames, test_data.classes.names)
    result: dict[str, Any] = {"checkpoint": checkpoint, "method": model.method_name, "mode": mode, "test": test,
                              "num_classes": test_data.num_classes, "classnames": names.source,
                              "class_names": list(names.names), **unlisted(test=test_data), **(model.loaded or {})}
    if mode == "head":
        own = test_data.classes.wnids
        target = test_data.classes if classnames is None else ClassList(
            list(names.names), [w or o for w, o in zip(names.wnids, own)])
        weight, bias, report = head_mapping(model, target, alpha, "head zero-shot", Path(test).name)
        feats = model_features(model, test_data, model.encoder(), model.weights_id(), opts)
        result.update(head_zero_shot(feats, weight, bias, report, use_bias), coverage=report.to_dict())
    else:
        method = model.method
        if method is None or not hasattr(method, "encode_text"):
            from catlip.errors import CheckpointError
            from catlip.methods.registry import titles

            raise CheckpointError(f"text zero-shot needs a {titles('text', sep='/')} checkpoint; {checkpoint} (method "
                                  f"{model.method_name}) has no text tower (use --mode head)")
        import open_clip

        from catlip.evaluate.common.features import ImageTower

        prompts = load_templates(templates)  # a bad template file fails before any image is encoded
        result.update(templates=prompts.name, num_templates=len(prompts), warnings=name_warnings(names.names))
        feats = model_features(model, test_data, ImageTower(method), "clip-" + model.weights_id(), opts)
        emb = clip_class_embeddings(method.encode_text, lambda t: open_clip.tokenize(t, model.context_length),
                                    names.names, prompts.templates, device=next(method.parameters()).device)
        result.update(clip_zero_shot(feats, emb))
    result.update(test_images=len(feats), skipped=feats.skipped)
    return result


def head_zero_shot_of_model(model, feats, classes, *, alpha: float | None = None, use_bias: bool = True,
                   dataset: str = "") -> dict[str, Any]:
    """Head zero-shot of an ``EvalModel`` on its frozen ``Features``: classes mapped by the vocabulary's label
    source, scored by their head rows. Returns the metrics plus ``coverage`` (the class-mapping report as a dict)."""
    from catlip.evaluate.classify.transfer_init import map_classes

    weight, bias = model.head_weight("head zero-shot")
    report = map_classes(classes, model.vocab, DEFAULT_ALPHA if alpha is None else alpha, dataset)
    return {**head_zero_shot(feats, weight, bias, report, use_bias), "coverage": report.to_dict()}


# ---------------------------------------------------------------- the procedures on features


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """CLIP_benchmark's zero-shot metrics: top-1, top-5 (k capped at the class count) and the mean per-class
    recall (balanced accuracy). Classes without a test image have no recall: they are left out of the mean, which
    would otherwise depend on how many such classes the list holds, and counted."""
    import torch

    from catlip.evaluate.common.metrics import per_class_accuracy, topk_accuracy

    recall = per_class_accuracy(logits, targets, logits.shape[1])
    present = [r for r in recall if r == r]
    counts = {"per_class_images": torch.bincount(targets, minlength=logits.shape[1]).tolist(),
              "predictions_per_class": torch.bincount(logits.argmax(1), minlength=logits.shape[1]).tolist()}
    return {**topk_accuracy(logits, targets), "mean_per_class_recall": sum(present) / len(present) if present
            else float("nan"), "per_class_recall": [r if r == r else None for r in recall],
            "classes_without_images": len(recall) - len(present), **counts}


def dominant_class(predictions: Sequence[int], images: Sequence[int]) -> int | None:
    """The class that more than half of the predictions fall in while it holds at most half of the images (a
    classifier collapsed onto one class, e.g. by a strong label prior), else None. A class that truly holds most
    of the images may take most of the predictions."""
    total = sum(predictions)
    if not total:
        return None
    top = max(range(len(predictions)), key=lambda c: predictions[c])
    return top if 2 * predictions[top] > total and 2 * images[top] <= sum(images) else None


def head_classifier(weight: torch.Tensor, bias: torch.Tensor | None, report: CoverageReport,
                    use_bias: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W (C, D), b (C,), mapped mask): the zero-shot classifier read off the pre-trained head."""
    import torch

    from catlip.evaluate.classify.transfer_init import transferred_rows

    w, b, mask = transferred_rows(weight, bias, report)
    if not mask.any():
        raise CatlipError("no target class maps to the vocabulary: head zero-shot cannot score any class")
    return w.float(), (b.float() if use_bias else torch.zeros_like(b, dtype=torch.float32)), mask


def head_zero_shot(feats: Features, weight: torch.Tensor, bias: torch.Tensor | None, report: CoverageReport,
                   use_bias: bool = True) -> dict:
    """The head's zero-shot metrics on frozen ``feats`` (what the head's Linear layer reads), classes mapped by
    ``report``; also the top-1 over the images of mapped classes and the count of the others."""
    import torch

    with torch.no_grad():
        w, b, mask = head_classifier(weight, bias, report, use_bias)
        logits = feats.x.float() @ w.T + b
        logits[:, ~mask] = float("-inf")
        out = classification_metrics(logits, feats.y)
        covered = mask[feats.y]
        out["top1_on_mapped_classes"] = (logits[covered].argmax(1) == feats.y[covered]).float().mean().item() \
            if covered.any() else float("nan")
        out["images_of_unmapped_classes"] = int((~covered).sum())
    return out


def clip_class_embeddings(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenize: Callable,
                          names: Sequence[str], templates: Sequence[Template] = TEMPLATES,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """(C, E) unit vectors: each class's template embeddings normalised, averaged, normalised again (the per-prompt
    normalisation keeps a prompt with a long embedding from outweighing the others). Names are used as given;
    templates are format strings with ``{}`` / ``{c}`` or callables (open_clip's)."""
    import torch
    import torch.nn.functional as F

    if not len(templates) or not len(names):
        raise CatlipError(f"text zero-shot needs templates and class names ({len(templates)} templates, "
                          f"{len(names)} names)")
    rows = []
    with torch.no_grad():
        for name in names:
            tokens = tokenize([fill(t, name) for t in templates]).to(device)
            emb = F.normalize(encode_text(tokens).float(), dim=-1).mean(0)
            rows.append(F.normalize(emb, dim=-1))
        return torch.stack(rows).cpu()


def clip_zero_shot(image_feats: Features, class_embeddings: torch.Tensor) -> dict:
    """The text tower's zero-shot metrics: cosine of frozen image embeddings and (C, E) unit class embeddings."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        logits = F.normalize(image_feats.x.float(), dim=-1) @ class_embeddings.T
        return classification_metrics(logits, image_feats.y)


TASK = Task(
    name="zeroshot",
    help="zero-shot classification (head for CatLIP/SuperClass, text tower for CLIP/LiT)",
    description="Classify without training: CatLIP/SuperClass score each class by the head rows its name maps to "
    "(by the vocabulary's label source: WordNet synsets, BPE tokens or words; unmapped classes are listed), "
    "two-tower runs (CLIP, SigLIP, SuperCLIP, LiT from `catlip lit`) by prompt-template text embeddings "
    "(--templates, default: the 80-prompt OpenAI ensemble). Reports top-1, top-5 and mean per-class recall.",
    add_arguments=add_arguments, run=run, report=report, order=40,
)
