"""`catlip tag`: the classification head's best labels for each image (CatLIP synsets, SuperClass BPE tokens)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from catlip.errors import CliError
from catlip.evaluate.tasks import Task
from catlip.evaluate.common.cli import add_limit, add_model_options, check_limit


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
    from catlip.evaluate.common.model import load_eval_model
    from catlip.evaluate.caption.images import list_images, require_head, tag_images

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
    print(f"tagged {result['tagged']:,} images, skipped {len(result['skipped']):,} ({result['method']} head, "
          f"{result['labels']} labels, {result['activation']} probabilities)", file=sys.stderr)


TASK = Task(
    name="tag",
    help="tag images with the classification head's labels (CatLIP synsets, SuperClass tokens)",
    description="Run the classification head of a CatLIP, SuperClass or SuperCLIP checkpoint on images and print "
    "each image's best labels with their probability: WordNet lemma names and gloss for synsets, the decoded token "
    "for BPE labels. Images that cannot be decoded are reported and skipped.",
    add_arguments=add_arguments, run=run, report=report, order=60,
)
