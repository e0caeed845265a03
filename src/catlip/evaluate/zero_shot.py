"""Zero-shot classification.

* From the head (methods with a label source: CatLIP, SuperClass): no text encoder; a class's score is the logit
  of its mapped vocabulary entries (the Transfer Init mapping of the vocabulary's label source, rows averaged). Classes without a mapping cannot be scored: they get
  -inf (so they are never predicted and their images count as errors) and are listed in the report.
* CLIP: class embeddings from the text tower, averaged over prompt templates, against image embeddings.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from catlip.errors import CatlipError
from catlip.evaluate.features import Features
from catlip.evaluate.metrics import topk_accuracy
from catlip.evaluate.transfer_init import CoverageReport, transferred_rows

# A short subset of the CLIP ImageNet prompt ensemble.
TEMPLATES = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "itap of a {}.",
)


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
    out = topk_accuracy(logits, feats.y)
    covered = mask[feats.y]
    out["top1_on_mapped_classes"] = (logits[covered].argmax(1) == feats.y[covered]).float().mean().item() \
        if covered.any() else float("nan")
    out["images_of_unmapped_classes"] = int((~covered).sum())
    return out


@torch.no_grad()
def clip_class_embeddings(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenize: Callable,
                          names: Sequence[str], templates: Sequence[str] = TEMPLATES,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """(C, E) unit vectors: each class's template embeddings normalised, averaged, normalised again."""
    rows = []
    for name in names:
        tokens = tokenize([t.format(name.replace("_", " ")) for t in templates]).to(device)
        emb = F.normalize(encode_text(tokens).float(), dim=-1).mean(0)
        rows.append(F.normalize(emb, dim=-1))
    return torch.stack(rows).cpu()


@torch.no_grad()
def clip_zero_shot(image_feats: Features, class_embeddings: torch.Tensor) -> dict:
    logits = F.normalize(image_feats.x.float(), dim=-1) @ class_embeddings.T
    return topk_accuracy(logits, image_feats.y)
