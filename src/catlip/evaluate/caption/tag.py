"""`catlip tag`: the classification head's best labels for each image (CatLIP synsets, SuperClass BPE tokens).

The head of a CatLIP checkpoint scores thousands of WordNet noun synsets, that of SuperClass (and SuperCLIP) the
CLIP BPE tokens. For each image the task returns the head's best labels with their probability: a sigmoid per
label for heads trained with an independent-label loss (CatLIP's BCE), a softmax over the vocabulary for heads
trained with a softmax loss (SuperClass), so a SuperClass probability is a share of one distribution and is much
smaller than a CatLIP one. Synset labels carry their WordNet lemma names and gloss, others the vocabulary's name
(the decoded token for BPE). Ids that are never targets (BPE start/end/pad) are never returned. An image that
cannot be decoded is reported and skipped, the others are tagged (inputs: ``caption.images``).

:func:`run` loads the checkpoint and lists the images; :func:`tag_images` is the procedure. Torch is imported
inside the functions (``catlip --help`` reads this module).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Sequence

from catlip.errors import CatlipError, CliError
from catlip.evaluate.common.cli import add_limit, add_model_options, check_limit
from catlip.evaluate.tasks import Task

if TYPE_CHECKING:
    import torch

    from catlip.evaluate.caption.images import ImageRef


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, folders (searched recursively), globs ('photos/**/*.jpg') or .tar shards")
    p.add_argument("--top", type=int, default=10, help="labels per image (default 10)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="keep labels with at least this probability (CatLIP: per-label sigmoid; SuperClass: share "
                   "of a softmax over all tokens, so much smaller)")
    add_limit(p, "images")
    p.add_argument("--jsonl", help='write one {"image", "tags"} JSON line per tagged image here')


def run(args: argparse.Namespace) -> dict[str, Any]:
    from catlip.evaluate.caption.head import require_head
    from catlip.evaluate.caption.images import list_images
    from catlip.evaluate.common.model import load_eval_model

    if args.top < 1 or not 0.0 <= args.threshold <= 1.0 or args.batch_size < 1:
        raise CliError("--top and --batch-size must be >= 1 and --threshold lie in [0, 1]")
    model = load_eval_model(args.checkpoint, args.image_size)
    require_head(model, "catlip tag")  # before listing thousands of images for a model that cannot tag
    result = tag_images(model, list_images(args.images)[:check_limit(args)], top=args.top, threshold=args.threshold,
                        batch_size=args.batch_size, num_workers=args.workers, device=args.device,
                        progress=not args.no_progress)
    if args.jsonl:
        _write_jsonl(result["images"], args.jsonl)
    return {**result, **(model.loaded or {})}


def _write_jsonl(images: list[dict], path: str) -> None:
    import json

    from catlip.atomic import write_text
    from catlip.errors import OutputError

    try:
        write_text(path, "".join(json.dumps(image, ensure_ascii=False) + "\n" for image in images))
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def format_tag(tag: dict) -> str:
    """``0.912  n02084071  dog, domestic dog — a member of the genus Canis ...`` (lemmas or name, gloss)."""
    names = ", ".join((tag.get("lemmas") or [tag["name"]])[:3])  # some synsets have a dozen lemmas
    gloss = tag.get("gloss", "")
    gloss = f" — {gloss[:70]}…" if len(gloss) > 70 else (f" — {gloss}" if gloss else "")
    return f"  {tag['probability']:.3f}  {tag['key']:>10}  {names}{gloss}"


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    for image in result["images"]:
        print(image["image"])
        print("\n".join(format_tag(t) for t in image["tags"]) or "  (no label above the threshold)")
    for skip in result["skipped"]:
        print(f"skipped {skip['image']}: {skip['error']}", file=sys.stderr)
    print(f"tagged {result['tagged']:,} image{'' if result['tagged'] == 1 else 's'}, skipped {len(result['skipped']):,} ({result['method']} head, "
          f"{result['labels']} labels, {result['activation']} probabilities)", file=sys.stderr)


# ---------------------------------------------------------------- the procedure


def top_labels(probs: torch.Tensor, never: Sequence[int], top: int, threshold: float) -> list[list[tuple[int, float]]]:
    """Per row: up to ``top`` (label id, probability) pairs, best first, with probability >= ``threshold``."""
    probs = probs.clone()
    probs[:, list(never)] = -1.0
    values, ids = probs.topk(min(top, probs.shape[1]), dim=1)
    return [[(int(i), float(v)) for v, i in zip(vs, is_) if v >= threshold and v >= 0]
            for vs, is_ in zip(values.tolist(), ids.tolist())]


class LabelNames:
    """Names of a vocabulary's labels: WordNet lemma names and gloss for synset keys, the vocabulary's name else."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.wordnet = None
        if vocab.source.synset_keys:
            try:
                from catlip.labels.wordnet import get_wordnet

                self.wordnet = get_wordnet()
            except CatlipError:
                pass  # WordNet not installed: the vocabulary's own names and glosses still say what a label is

    def describe(self, i: int) -> dict:
        key, vocab = self.vocab.keys[i], self.vocab
        out = {"id": i, "key": key, "name": vocab.names[i]}
        if self.wordnet is not None:
            out["lemmas"] = [lemma.replace("_", " ") for lemma in self.wordnet.synset_lemmas(key)]
            out["gloss"] = vocab.glosses[i] or self.wordnet.gloss(key)
        elif vocab.glosses[i]:
            out["gloss"] = vocab.glosses[i]
        return out


def head_probabilities(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       activation: str) -> torch.Tensor:
    """(n, V) label probabilities of the head on its ``features`` (sigmoid or softmax, see ``head_activation``)."""
    import torch

    from catlip.evaluate.caption.head import head_log_probabilities

    logits = torch.nn.functional.linear(features.float(), weight.float().cpu(),
                                        bias.float().cpu() if bias is not None else None)
    return head_log_probabilities(logits, activation).exp()


def tag_images(model, refs: Sequence[ImageRef], *, top: int = 10, threshold: float = 0.0, batch_size: int = 256,
               num_workers: int = 0, device: str = "auto", progress: bool = True, chunk: int = 1024) -> dict:
    """Tag ``refs`` with ``model``'s head: ``{"images": [{"image", "tags": [...]}], "skipped": [{"image",
    "error"}], "activation", ...}``. Images are read and encoded in batches; the head reads the features ``chunk``
    images at a time (a softmax over 49,408 BPE tokens per image adds up)."""
    from catlip.evaluate.caption.head import head_activation, require_head
    from catlip.evaluate.caption.images import IndexedImages, encode_images, read_image

    weight, bias = require_head(model, "catlip tag")
    dataset = IndexedImages(list(refs), read_image, model.eval_transform())
    feats = encode_images(model.encoder(), dataset, desc="tagging", batch_size=batch_size, num_workers=num_workers,
                          device=device, progress=progress)
    activation = head_activation(model)
    never = model.vocab.source.never_targets(len(model.vocab))
    rows: list[list[tuple[int, float]]] = []
    for start in range(0, len(feats), chunk):
        probs = head_probabilities(feats.x[start:start + chunk], weight, bias, activation)
        rows += top_labels(probs, never, top, threshold)
    names = LabelNames(model.vocab)
    images = [{"image": refs[i].name, "tags": [{**names.describe(k), "probability": p} for k, p in row]}
              for i, row in zip(feats.y.tolist(), rows)]
    done = set(feats.y.tolist())
    skipped = [{"image": refs[i].name, "error": dataset.error(i)} for i in range(len(refs)) if i not in done]
    return {"checkpoint": model.source, "method": model.method_name, "labels": model.vocab.labels,
            "activation": activation, "top": top, "threshold": threshold, "tagged": len(images),
            "images": images, "skipped": skipped}


TASK = Task(
    name="tag",
    help="tag images with the classification head's labels (CatLIP synsets, SuperClass tokens)",
    description="Run the classification head of a CatLIP, SuperClass or SuperCLIP checkpoint on images and print "
    "each image's best labels with their probability: WordNet lemma names and gloss for synsets, the decoded token "
    "for BPE labels. Images that cannot be decoded are reported and skipped.",
    add_arguments=add_arguments, run=run, report=report, order=60,
)
