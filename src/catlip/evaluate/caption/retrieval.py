"""Image–caption retrieval: Recall@K and the two ways a catlip model scores an (image, caption) pair.

* ``recall_at_k``: the Flickr/COCO protocol (as in CLIP_benchmark). Image→text: an image is a hit at K when any
  of its captions is among the K best-scored captions; text→image: a caption is a hit when its image is among the
  K best-scored images. Tied scores count as broken uniformly at random, in expectation (McSherry & Najork,
  ECIR 2008): the result never depends on the order of images or captions, and a constant score earns exactly
  chance-level recall. This matters for head caption scoring, where captions with the same labels tie.
* ``clip_similarity``: the cosine similarity of image and text embeddings (CLIP, SigLIP, SuperCLIP towers).
* ``head_caption_scores``: *head caption scoring* for methods without a text tower (CatLIP, SuperClass): the
  caption's labels (by the vocabulary's own label source) scored by the head's log-probabilities, summed or
  averaged, optionally minus each label's log mean probability over the images (``label_log_marginals``). A
  caption without any in-vocabulary label scores -inf against every image.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum")
DIRECTIONS = ("image_to_text", "text_to_image")


def _hits(scores: torch.Tensor, positive: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """(len(ks),) expected hit counts of the queries (rows), ties broken uniformly at random.

    Only the best-scored positive matters: with ``above`` negatives strictly above it and a group of ``t``
    negatives and ``p`` positives tied with it, the query misses at K only when the ``m = K - above`` places left
    all go to tied negatives, which happens with probability C(t, m) / C(t + p, m) (0 when m > t).
    """
    scores = torch.nan_to_num(scores.float(), nan=float("-inf"))
    best = scores.masked_fill(~positive, float("-inf")).amax(dim=1, keepdim=True)
    above = ((scores > best) & ~positive).sum(dim=1).double()
    tied = scores == best
    t, p = (tied & ~positive).sum(dim=1).double(), (tied & positive).sum(dim=1).double()
    out = []
    for k in ks:
        m = (k - above).clamp(min=0)
        m_in = torch.minimum(m, t)  # m > t: some positive surely lands among the first K (probability of a miss 0)
        log_miss = (torch.lgamma(t + 1) - torch.lgamma(t - m_in + 1)
                    - torch.lgamma(t + p + 1) + torch.lgamma(t + p - m_in + 1))
        miss = torch.where(m > t, torch.zeros_like(m), log_miss.exp())
        out.append((1 - miss).sum())
    return torch.stack(out)


def recall_at_k(similarity: torch.Tensor, caption_to_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10),
                chunk: int = 1024) -> dict:
    """Recall@K both ways from ``similarity`` (n_images, n_captions) and each caption's image index.

    Returns ``{"image_to_text": {"R@1": ...}, "text_to_image": {...}, "mean_recall": ...}`` with values in [0, 1];
    ``mean_recall`` averages all of them. Every image needs at least one caption (``ValueError`` otherwise).
    Queries are processed ``chunk`` at a time so a large test set never needs an (n, n) boolean mask at once.
    """
    n_images, n_captions = similarity.shape
    owner = caption_to_image.long().cpu()
    if owner.shape != (n_captions,) or (n_captions and (owner.min() < 0 or owner.max() >= n_images)):
        raise ValueError(f"caption_to_image must hold {n_captions} image indices in [0, {n_images})")
    if torch.bincount(owner, minlength=n_images).eq(0).any():
        raise ValueError("every image needs at least one caption")
    sim = similarity.cpu()
    i2t, t2i = torch.zeros(len(ks), dtype=torch.double), torch.zeros(len(ks), dtype=torch.double)
    for start in range(0, n_images, chunk):
        rows = torch.arange(start, min(start + chunk, n_images))
        i2t += _hits(sim[rows], owner[None, :] == rows[:, None], ks)
    for start in range(0, n_captions, chunk):
        cols = torch.arange(start, min(start + chunk, n_captions))
        t2i += _hits(sim[:, cols].T, owner[cols][:, None] == torch.arange(n_images)[None, :], ks)
    out = {"image_to_text": {f"R@{k}": i2t[j].item() / n_images for j, k in enumerate(ks)},
           "text_to_image": {f"R@{k}": t2i[j].item() / n_captions for j, k in enumerate(ks)}}
    values = [v for d in DIRECTIONS for v in out[d].values()]
    out["mean_recall"] = sum(values) / len(values)
    return out


# ---------------------------------------------------------------- two towers (CLIP, SigLIP, SuperCLIP)


def clip_similarity(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """(n_images, n_captions) cosine similarities (the logit scale and SigLIP bias do not change any ranking)."""
    return F.normalize(image_embeddings.float(), dim=-1) @ F.normalize(text_embeddings.float(), dim=-1).T


@torch.no_grad()
def encode_captions(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenize: Callable,
                    captions: Sequence[str], *, batch_size: int = 256, device: str | torch.device = "cpu",
                    progress: bool = False) -> torch.Tensor:
    """(n, E) float32 text embeddings on the CPU, ``batch_size`` captions per text-tower call."""
    from catlip.progress import progress_bar

    out = []
    batches = range(0, len(captions), batch_size)
    for start in progress_bar(batches, desc="captions", unit="batch", disable=not progress, leave=False):
        tokens = tokenize(list(captions[start:start + batch_size])).to(device)
        out.append(encode_text(tokens).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


# ---------------------------------------------------------------- head caption scoring (CatLIP, SuperClass)


def caption_label_ids(captions: Sequence[str], vocab) -> list[list[int]]:
    """Each caption's head rows: its labels by the vocabulary's own label source, deduplicated, without the ids
    that are never targets (BPE start/end/pad)."""
    extractor = vocab.extractor()
    never = set(vocab.source.never_targets(len(vocab)))
    return [[i for i in dict.fromkeys(vocab.encode(extractor.extract(c))) if i not in never] for c in captions]


def head_log_probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Log-probabilities of the head's labels: ``sigmoid`` (CatLIP: independent labels) or ``softmax``
    (SuperClass: one distribution over the vocabulary)."""
    if activation == "softmax":
        return F.log_softmax(logits.float(), dim=-1)
    if activation == "sigmoid":
        return F.logsigmoid(logits.float())
    raise ValueError(f"activation must be sigmoid or softmax, not {activation!r}")


def _head_log_probs(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
                    chunk: int):
    """(start, (n, V) log-probabilities) for successive chunks of images."""
    w, b = weight.float().cpu(), (bias.float().cpu() if bias is not None else None)
    for start in range(0, features.shape[0], chunk):
        yield start, head_log_probabilities(F.linear(features[start:start + chunk].float().cpu(), w, b), activation)


@torch.no_grad()
def label_log_marginals(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
                        activation: str, chunk: int = 256) -> torch.Tensor:
    """(V,) log of each label's mean probability over the images of ``features``: log (1/N) sum_i p(l | x_i)."""
    total = torch.full((weight.shape[0],), float("-inf"))
    for _, log_probs in _head_log_probs(features, weight, bias, activation, chunk):
        total = torch.logaddexp(total, torch.logsumexp(log_probs, dim=0))
    return total - torch.log(torch.tensor(float(max(features.shape[0], 1))))


@torch.no_grad()
def head_caption_scores(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        caption_labels: Sequence[Sequence[int]], *, activation: str, reduce: str = "mean",
                        log_prior: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """(n_images, n_captions): the head's log-probabilities of each caption's labels, summed or averaged.

    ``features`` are what the head's Linear layer reads (``EvalModel.encoder()``); ``weight``/``bias`` its rows.
    Captions without labels get -inf. ``reduce="mean"`` keeps long captions from being penalised for naming more
    things; ``"sum"`` is the joint log-probability of the labels (independent under a sigmoid head).
    ``log_prior`` (V,), e.g. ``label_log_marginals`` of the same images, is subtracted from every label's
    log-probability (pointwise mutual information): without it the captions naming only the most frequent label
    score highest for every image, since no log-probability exceeds that label's own.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, not {reduce!r}")
    counts = torch.tensor([len(ids) for ids in caption_labels], dtype=torch.float32)
    flat = torch.tensor([i for ids in caption_labels for i in ids], dtype=torch.long)
    owner = torch.repeat_interleave(torch.arange(len(caption_labels)), counts.long())
    shift = log_prior.float().cpu()[flat] if log_prior is not None else 0.0
    out = torch.empty(features.shape[0], len(caption_labels))
    for start, log_probs in _head_log_probs(features, weight, bias, activation, chunk):
        picked = log_probs[:, flat] - shift
        out[start:start + len(picked)] = torch.zeros(len(picked), len(caption_labels)).index_add_(1, owner, picked)
    if reduce == "mean":
        out /= counts.clamp_min(1)
    out[:, counts == 0] = float("-inf")
    return out
