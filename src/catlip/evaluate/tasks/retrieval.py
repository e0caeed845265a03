"""`catlip retrieval`: image→text and text→image Recall@1/5/10 on image–caption data (Flickr8k/30k, COCO style).

Two-tower checkpoints (CLIP, SigLIP, SuperCLIP) score a pair by the cosine of their embeddings. Checkpoints with
only a classification head (CatLIP, SuperClass) use *head caption scoring*: the caption's labels (by the
vocabulary's own label source) scored by the head's log-probabilities, averaged (``--reduce mean``) or summed.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from catlip.errors import CliError, DataError
from catlip.evaluate.tasks import Task
from catlip.evaluate.tasks._common import add_limit, check_limit

MODE_NAMES = {"text": "text tower (cosine of image and caption embeddings)",
              "head": "head caption scoring ({reduce} log-probability of the caption's labels{pmi})"}
PMI_NAME = ", each minus its log mean probability over these images"


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The checkpoint and the inference options (shared with `catlip tag`)."""
    from catlip.evaluate.tasks._common import CKPT_HELP

    p.add_argument("checkpoint", help=CKPT_HELP)
    p.add_argument("--output", "-o", help="write the full result as JSON here")
    p.add_argument("--image-size", type=int, help="evaluation resolution (default: the pre-training one)")
    p.add_argument("--batch-size", type=int, default=256, help="images per batch (default: 256)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="data-loading processes (default: min(4, CPU cores))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


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

    from catlip.evaluate.model import load_eval_model
    from catlip.evaluate.retrieval import recall_at_k
    from catlip.evaluate.tasks._common import comma_list

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
    source = open_sources(cfg, seed=0, stats=Counter(), image_size=image_size)
    captions = [_captions(source, i) for i in range(len(source))]
    keep = [i for i, c in enumerate(captions) if c][:check_limit(args)]  # --limit: the first N captioned images
    if not keep:
        raise DataError(f"{args.data}: none of its {len(source):,} images has a caption; looked for: "
                        f"{source.looked_for()}")
    skipped = Counter(source.index_skips)
    skipped["no_caption"] += len(source) - len(keep)
    return {"source": source, "keep": keep, "captions": [captions[i] for i in keep], "skipped": dict(skipped)}


def _captions(source, i: int) -> list[str]:
    try:
        return source.captions(i)
    except OSError:  # a member cut short: no caption can be read, the sample is counted as skipped
        return []


def _image_features(model, data: dict, encoder, args: argparse.Namespace):
    """(features, captions) of the decodable images with captions; the others are counted in ``data["skipped"]``."""
    from catlip.evaluate.tagging import IndexedImages, encode_images

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
    from catlip.evaluate.retrieval import ImageTower, clip_similarity, encode_captions

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
    from catlip.evaluate.retrieval import caption_label_ids, head_caption_scores, label_log_marginals
    from catlip.evaluate.tagging import head_activation, require_head

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
    from catlip.evaluate.tasks._common import print_table

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
