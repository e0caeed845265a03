"""Pre-training losses as pure functions.

Every function computes in float32 with autocast switched off, whatever the input dtype: autocast hands over
bf16 logits and would run the similarity matmuls and pairwise sums in bf16, which loses precision over tens of
thousands of classes or B^2 pairs. Each docstring states its reduction. Per-sample losses are
summed and divided by the *local* batch size, never by a data-dependent count, so that averaging gradients over
data-parallel ranks (DDP) gives exactly the gradient of the loss over the global batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# A finite "minus infinity": logsumexp over an all-masked row stays finite and its gradient stays zero.
_MASKED = -1e9


def _float32(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next(a.device.type for a in args if isinstance(a, Tensor))
        with torch.autocast(device_type=device, enabled=False):
            cast = [a.float() if isinstance(a, Tensor) and (a.is_floating_point() or a.dtype == torch.bool) else a
                    for a in args]
            return fn(*cast, **kwargs)

    return wrapper


@_float32
def bce(logits: Tensor, targets: Tensor) -> Tensor:
    """CatLIP binary cross-entropy with logits.

    Reduction: summed over classes, averaged over the batch (sum / B), as in the CatLIP reference code.
    At zero logits this equals V * log 2 whatever the targets.
    """
    total = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    return total / logits.shape[0]


@_float32
def idf_softmax(logits: Tensor, target_weights: Tensor) -> Tensor:
    """SuperClass softmax cross-entropy against soft targets.

    ``target_weights`` (B, V) are non-negative class weights of each sample (IDF-weighted multi-hot); they are
    L1-normalised per sample here, so the target of a sample is a probability distribution.
    Reduction: summed over samples, divided by the batch size B. A sample whose weights are all zero (no labels,
    or only zero-weighted special tokens) contributes 0 but still counts in B: dividing by B rather than by the
    number of labelled samples keeps the loss a plain per-sample mean, which is what makes the DDP gradient
    average exact. At zero logits the loss of a labelled sample equals log V.
    """
    targets = target_weights / target_weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(logits.dtype).tiny)
    per_sample = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)
    return per_sample.sum() / logits.shape[0]


@_float32
def asl(
    logits: Tensor,
    targets: Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 0.0,
    clip: float = 0.05,
    eps: float = 1e-8,
) -> Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021) for multi-label classification.

    With p = sigmoid(x) and the shifted negative probability p_m = max(p - clip, 0):
    positives cost -(1 - p)^gamma_pos * log p, negatives cost -p_m^gamma_neg * log(1 - p_m).
    Reduction: summed over classes, averaged over the batch (sum / B), like :func:`bce`.
    The focusing factors keep their gradient (the paper's plain formulation).
    """
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    if clip > 0:
        # 1 - p_m = min(1 - p + clip, 1): bounded below by `clip`, so the log is finite.
        log_not_pm = torch.log((torch.sigmoid(-logits) + clip).clamp(max=1.0))
        p_m = (p - clip).clamp(min=0.0)
    else:
        log_not_pm = F.logsigmoid(-logits)
        p_m = p
    pos = (1 - p).pow(gamma_pos) * log_p.clamp(min=math.log(eps))
    neg = p_m.pow(gamma_neg) * log_not_pm.clamp(min=math.log(eps))
    total = -(targets * pos + (1 - targets) * neg).sum()
    return total / logits.shape[0]


@_float32
def soft_margin(logits: Tensor, targets: Tensor) -> Tensor:
    """Multi-label soft-margin loss (torch.nn.MultiLabelSoftMarginLoss).

    Per sample: -(1/V) * sum_c [y_c log sigmoid(x_c) + (1 - y_c) log sigmoid(-x_c)].
    Reduction: averaged over classes and over the batch, i.e. :func:`bce` / V.
    """
    return F.multilabel_soft_margin_loss(logits, targets, reduction="mean")


@_float32
def two_way(logits: Tensor, targets: Tensor, t_pos: float = 4.0, t_neg: float = 1.0) -> Tensor:
    """Two-way multi-label loss (Kobayashi, CVPR 2023).

    For a set of logits with positives P and negatives N, the relative term is
        r = softplus( t_neg * logsumexp_{n in N}(x_n / t_neg) + t_pos * logsumexp_{p in P}(-x_p / t_pos) ),
    a smooth version of "the hardest negative should score below the hardest positive" (pairs (n, p) with
    x_n - x_p large dominate). It is applied both sample-wise (over the classes of each sample) and class-wise
    (over the samples of each class in the batch), and the two are added.
    Reduction: sample-wise term averaged over samples with at least one positive, class-wise term averaged over
    classes with at least one positive in the batch (the paper's definition; being normalised by data-dependent
    counts, its DDP gradient average is not exactly the global-batch gradient).
    """
    positive = targets > 0

    def relative(dim: int) -> Tensor:
        hard_pos = t_pos * torch.logsumexp(torch.where(positive, -logits / t_pos, _MASKED), dim=dim)
        hard_neg = t_neg * torch.logsumexp(torch.where(positive, _MASKED, logits / t_neg), dim=dim)
        keep = positive.any(dim=dim)
        terms = F.softplus(hard_pos + hard_neg) * keep
        return terms.sum() / keep.sum().clamp_min(1)

    return relative(dim=1) + relative(dim=0)


@_float32
def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE (CLIP) over matching rows of ``image_features`` and ``text_features``.

    Features are L2-normalised here; ``logit_scale`` is the multiplicative temperature (already exponentiated).
    Reduction: cross-entropy averaged over the B rows of the image->text and of the text->image logits, then the
    two directions averaged. With features that carry no information (all equal) it equals log B.
    """
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    logits = logit_scale * image @ text.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


@_float32
def siglip_loss(
    image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float, logit_bias: Tensor | float
) -> Tensor:
    """Sigmoid pairwise loss (SigLIP, Zhai et al. 2023).

    logits = logit_scale * <img_i, txt_j> + logit_bias on L2-normalised features; the B matching pairs are
    positives, the B^2 - B others negatives; each pair costs -log sigmoid(z_ij * logit_ij) with z = +1 / -1.
    Reduction: summed over all B^2 pairs, divided by B.
    """
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    logits = logit_scale * image @ text.t() + logit_bias
    signs = 2 * torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


CLASSIFICATION_LOSSES = {
    "bce": bce,
    "idf_softmax": idf_softmax,
    "asl": asl,
    "soft_margin": soft_margin,
    "two_way": two_way,
}
# Losses whose head defines one distribution over the vocabulary (softmax over classes): its prior bias is a
# log-share, its scores are read as softmax probabilities (tagging). The others score each class on its own.
SOFTMAX_LOSSES = ("idf_softmax",)
