"""`catlip retrieval`: image→text and text→image Recall@1/5/10 on image–caption data (Flickr8k/30k, COCO style).

Two-tower checkpoints (CLIP, SigLIP, SuperCLIP) score a pair by the cosine of their embeddings. Checkpoints with
only a classification head (CatLIP, SuperClass) use *head caption scoring*: the caption's labels (by the
vocabulary's own label source) scored by the head's log-probabilities, averaged (``--reduce mean``) or summed.

The command reads the captioned images and computes their features (:func:`run`); the procedures on features are:

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

Torch is imported inside the functions (``catlip --help`` reads this module).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable, Sequence

from catlip.errors import CliError, DataError
from catlip.evaluate.common.cli import add_limit, add_model_options, check_limit, comma_list, print_table
from catlip.evaluate.tasks import Task

if TYPE_CHECKING:
    import torch

REDUCTIONS = ("mean", "sum")
DIRECTIONS = ("image_to_text", "text_to_image")
MODE_NAMES = {"text": "text tower (cosine of image and caption embeddings)",
              "head": "head caption scoring ({reduce} log-probability of the caption's labels{pmi})"}
PMI_NAME = ", each minus its log mean probability over these images"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--data", required=True, help="image–caption data: .tar shards ({000..004}; captions from the "
                   ".json member's `captions` list, else the .txt lines), a .csv/.tsv/.jsonl manifest or a folder "
                   "with sidecar .txt captions")
    p.add_argument("--column", default=None, help="caption field / column (default: captions, caption, text, txt, "
                   "title, the first present)")
    p.add_argument("--mode", default="auto", choices=("auto", "text", "head"),
                   help="auto: the text tower for CLIP/SigLIP/SuperCLIP, head caption scoring for CatLIP/SuperClass")
    p.add_argument("--reduce", default="mean", choices=("mean", "sum"),
                   help="head caption scoring: average (default) or sum the log-probabilities of a caption's labels")
    p.add_argument("--pmi", action="store_true",
                   help="head caption scoring: subtract each label's log mean probability over the evaluated images "
                   "(pointwise mutual information), so captions naming only frequent labels stop winning every image")
    add_limit(p, "images (with their captions)")
    p.add_argument("--ks", default="1,5,10", help="comma list of K for Recall@K (default 1,5,10)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from catlip.evaluate.common.model import load_eval_model

    ks = comma_list(args.ks, int, "--ks")
    if not ks or min(ks) < 1 or args.batch_size < 1:
        raise CliError("--ks takes positive integers and --batch-size must be >= 1")
    model = load_eval_model(args.checkpoint, args.image_size)
    mode = model.zero_shot_mode() if args.mode == "auto" else args.mode
    data = _read(args, model.image_size)
    sim, captions, extra = (_text_similarity if mode == "text" else _head_similarity)(model, data, args)
    owner = torch.repeat_interleave(torch.arange(len(captions)), torch.tensor([len(c) for c in captions]))
    return {"checkpoint": args.checkpoint, "method": model.method_name, "mode": mode,
            "mode_name": MODE_NAMES[mode].format(reduce=args.reduce, pmi=PMI_NAME if args.pmi else ""),
            "data": args.data,
            "images": sim.shape[0], "captions": sim.shape[1], "skipped": data["skipped"], **extra,
            **recall_at_k(sim, owner, ks), **(model.loaded or {})}


def _read(args: argparse.Namespace, image_size: int) -> dict[str, Any]:
    """Image features are computed later; here: the samples with captions, and why the others are left out."""
    from collections import Counter

    from catlip.config import DataConfig
    from catlip.data.sources import open_sources

    cfg = DataConfig(train=[args.data], caption_column=args.column or "caption")
    source = open_sources(cfg, seed=0, stats=Counter(), image_size=image_size, role="--data")
    captions = [_captions(source, i) for i in range(len(source))]
    captioned = [i for i, c in enumerate(captions) if c]
    if not captioned:
        raise DataError(f"{args.data}: none of its {len(source):,} images has a caption; looked for: "
                        f"{source.looked_for()}")
    keep = captioned[:check_limit(args)]  # --limit: the first N captioned images; the rest are not skipped data
    skipped = Counter(source.index_skips)
    if len(source) > len(captioned):
        skipped["no_caption"] += len(source) - len(captioned)
    return {"source": source, "keep": keep, "captions": [captions[i] for i in keep], "skipped": dict(skipped)}


def _captions(source, i: int) -> list[str]:
    try:
        return source.captions(i)
    except OSError:  # a member cut short: no caption can be read, the sample is counted as skipped
        return []


def _image_features(model, data: dict, encoder, args: argparse.Namespace):
    """(features, captions) of the decodable images with captions; the others are counted in ``data["skipped"]``."""
    from catlip.evaluate.caption.images import IndexedImages, encode_images

    source = data["source"]
    dataset = IndexedImages(data["keep"], _ImageOf(source), model.eval_transform(), source.describe)
    feats = encode_images(encoder, dataset, desc="retrieval images", batch_size=args.batch_size,
                          num_workers=args.workers, device=args.device, progress=not args.no_progress)
    data["skipped"]["undecodable"] = feats.skipped
    return feats.x, [data["captions"][j] for j in feats.y.tolist()]


class _ImageOf:
    """``source.read(i)``'s image (a picklable callable, so data-loading workers can run it)."""

    def __init__(self, source):
        self.source = source

    def __call__(self, i: int):
        return self.source.read(i)[0]


def _text_similarity(model, data: dict, args: argparse.Namespace):
    import open_clip

    from catlip.errors import CheckpointError
    from catlip.evaluate.common.features import ImageTower

    method = model.method
    if method is None or not hasattr(method, "encode_text"):
        from catlip.methods.registry import titles

        raise CheckpointError(f"--mode text needs a {titles('text', sep='/')} checkpoint; {args.checkpoint} (method "
                              f"{model.method_name}) has no text tower (use --mode head)")
    images, captions = _image_features(model, data, ImageTower(method), args)
    texts = encode_captions(method.encode_text, lambda t: open_clip.tokenize(t, model.context_length),
                            [c for caps in captions for c in caps], batch_size=args.batch_size,
                            device=next(method.parameters()).device, progress=not args.no_progress)
    return clip_similarity(images, texts), captions, {}


def _head_similarity(model, data: dict, args: argparse.Namespace):
    from catlip.evaluate.caption.head import head_activation, require_head

    weight, bias = require_head(model, "head caption scoring")
    feats, captions = _image_features(model, data, model.encoder(), args)
    labels = caption_label_ids([c for caps in captions for c in caps], model.vocab)
    activation = head_activation(model)
    prior = label_log_marginals(feats, weight, bias, activation=activation) if args.pmi else None
    sim = head_caption_scores(feats, weight, bias, labels, activation=activation, reduce=args.reduce,
                              log_prior=prior)
    return sim, captions, {"reduce": args.reduce, "pmi": args.pmi, "activation": activation,
                           "labels": model.vocab.labels, "captions_without_labels": sum(1 for ids in labels if not ids)}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["skipped"].items() if v) or "none"
    print(f"{result['method']}: {result['mode_name']}; {result['images']:,} images, {result['captions']:,} "
          f"captions (skipped images: {skipped})")
    if "captions_without_labels" in result:
        print(f"captions without an in-vocabulary {result['labels']} label (scored -inf): "
              f"{result['captions_without_labels']:,}")
    rows = [{"direction": d.replace("_to_", "→"), **{k: f"{100 * v:.2f}" for k, v in result[d].items()}}
            for d in ("image_to_text", "text_to_image")]
    print_table(rows, ["direction", *result["image_to_text"]])
    print(f"mean recall {100 * result['mean_recall']:.2f}")


# ---------------------------------------------------------------- the procedures on features


def _hits(scores: torch.Tensor, positive: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """(len(ks),) expected hit counts of the queries (rows), ties broken uniformly at random.

    Only the best-scored positive matters: with ``above`` negatives strictly above it and a group of ``t``
    negatives and ``p`` positives tied with it, the query misses at K only when the ``m = K - above`` places left
    all go to tied negatives, which happens with probability C(t, m) / C(t + p, m) (0 when m > t).
    """
    import torch

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
    import torch

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
    import torch.nn.functional as F

    return F.normalize(image_embeddings.float(), dim=-1) @ F.normalize(text_embeddings.float(), dim=-1).T


def encode_captions(encode_text: Callable[[torch.Tensor], torch.Tensor], tokenize: Callable,
                    captions: Sequence[str], *, batch_size: int = 256, device: str | torch.device = "cpu",
                    progress: bool = False) -> torch.Tensor:
    """(n, E) float32 text embeddings on the CPU, ``batch_size`` captions per text-tower call."""
    import torch

    from catlip.progress import progress_bar

    out = []
    batches = range(0, len(captions), batch_size)
    with torch.no_grad():
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


def _head_log_probs(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str,
                    chunk: int):
    """(start, (n, V) log-probabilities) for successive chunks of images."""
    import torch.nn.functional as F

    from catlip.evaluate.caption.head import head_log_probabilities

    w, b = weight.float().cpu(), (bias.float().cpu() if bias is not None else None)
    for start in range(0, features.shape[0], chunk):
        yield start, head_log_probabilities(F.linear(features[start:start + chunk].float().cpu(), w, b), activation)


def label_log_marginals(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
                        activation: str, chunk: int = 256) -> torch.Tensor:
    """(V,) log of each label's mean probability over the images of ``features``: log (1/N) sum_i p(l | x_i)."""
    import torch

    with torch.no_grad():
        total = torch.full((weight.shape[0],), float("-inf"))
        for _, log_probs in _head_log_probs(features, weight, bias, activation, chunk):
            total = torch.logaddexp(total, torch.logsumexp(log_probs, dim=0))
        return total - torch.log(torch.tensor(float(max(features.shape[0], 1))))


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
    import torch

    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, not {reduce!r}")
    with torch.no_grad():
        counts = torch.tensor([len(ids) for ids in caption_labels], dtype=torch.float32)
        flat = torch.tensor([i for ids in caption_labels for i in ids], dtype=torch.long)
        owner = torch.repeat_interleave(torch.arange(len(caption_labels)), counts.long())
        shift = log_prior.float().cpu()[flat] if log_prior is not None else 0.0
        out = torch.empty(features.shape[0], len(caption_labels))
        for start, log_probs in _head_log_probs(features, weight, bias, activation, chunk):
            picked = log_probs[:, flat] - shift
            out[start:start + len(picked)] = torch.zeros(len(picked), len(caption_labels)).index_add_(1, owner,
                                                                                                      picked)
        if reduce == "mean":
            out /= counts.clamp_min(1)
        out[:, counts == 0] = float("-inf")
    return out


TASK = Task(
    name="retrieval",
    help="image→text and text→image Recall@K on image–caption data (Flickr/COCO protocol)",
    description="Rank every caption for every image and every image for every caption; report Recall@K both ways "
    "(an image is a hit when any of its captions is in the top K). CLIP/SigLIP/SuperCLIP use the text tower; "
    "CatLIP/SuperClass use head caption scoring: the mean (or --reduce sum) of the head's log-probabilities of the "
    "caption's labels (--pmi: each minus the label's log mean probability over the images). Images without "
    "captions or that fail to decode are counted and skipped.",
    add_arguments=add_arguments, run=run, report=report, order=50,
)
