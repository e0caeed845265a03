"""Zero-shot classification.

* From the head (methods with a label source: CatLIP, SuperClass): no text encoder; a class's score is the logit
  of its mapped vocabulary entries (the Transfer Init mapping of the vocabulary's label source, rows averaged). Classes without a mapping cannot be scored: they get
  -inf (so they are never predicted and their images count as errors) and are listed in the report.
* Text tower (CLIP, SigLIP, LiT): class embeddings averaged over prompt templates (``templates.py``), against image
  embeddings.

Both report CLIP_benchmark's metrics (:func:`classification_metrics`), so head and text numbers sit in one table.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from catlip.errors import CatlipError
from catlip.evaluate.common.features import Features
from catlip.evaluate.common.metrics import per_class_accuracy, topk_accuracy
from catlip.evaluate.common.templates import SHORT_TEMPLATES, Template, fill
from catlip.evaluate.classify.transfer_init import CoverageReport, transferred_rows

TEMPLATES = SHORT_TEMPLATES  # the old name of the 6-prompt set


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """CLIP_benchmark's zero-shot metrics: top-1, top-5 (k capped at the class count) and the mean per-class
    recall (balanced accuracy). Classes without a test image have no recall: they are left out of the mean, which
    would otherwise depend on how many such classes the list holds, and counted."""
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
    w, b, mask = transferred_rows(weight, bias, report)
    if not mask.any():
        raise CatlipError("no target class maps to the vocabulary: head zero-shot cannot score any class")
    return w.float(), (b.float() if use_bias else torch.zeros_like(b, dtype=torch.float32)), mask


@torch.no_grad()
def head_zero_shot(feats: Features, weight: torch.Tensor, bias: torch.Tensor | None, report: CoverageReport,
                   use_bias: bool = True) -> dict:
    w, b, mask = head_classifier(weight, bias, report, use_bias)
    logits = feats.x.float() @ w.T + b
    logits[:, ~mask] = float("-inf")
    out = classification_metrics(logits, feats.y)
    covered = mask[feats.y]
    out["top1_on_mapped_classes"] = (logits[covered].argmax(1) == feats.y[covered]).float().mean().item() \
        if covered.any() else float("nan")
    out["images_of_unmapped_classes"] = int((~covered).sum())
    return out


@torch.no_grad()
def clip_class_embeddings(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenize: Callable,
                          names: Sequence[str], templates: Sequence[Template] = TEMPLATES,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """(C, E) unit vectors: each class's template embeddings normalised, averaged, normalised again (the per-prompt
    normalisation keeps a prompt with a long embedding from outweighing the others). Names are used as given;
    templates are format strings with ``{}`` / ``{c}`` or callables (open_clip's)."""
    if not len(templates) or not len(names):
        raise CatlipError(f"text zero-shot needs templates and class names ({len(templates)} templates, "
                          f"{len(names)} names)")
    rows = []
    for name in names:
        tokens = tokenize([fill(t, name) for t in templates]).to(device)
        emb = F.normalize(encode_text(tokens).float(), dim=-1).mean(0)
        rows.append(F.normalize(emb, dim=-1))
    return torch.stack(rows).cpu()


@torch.no_grad()
def clip_zero_shot(image_feats: Features, class_embeddings: torch.Tensor) -> dict:
    logits = F.normalize(image_feats.x.float(), dim=-1) @ class_embeddings.T
    return classification_metrics(logits, image_feats.y)
