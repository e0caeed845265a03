"""`catlip tag`: a classification head read as an image tagger, plus the image reading it shares with retrieval.

The head of a CatLIP checkpoint scores thousands of WordNet noun synsets, that of SuperClass (and SuperCLIP) the
CLIP BPE tokens. For each image this module returns the head's best labels with their probability: a sigmoid per
label for heads trained with an independent-label loss (CatLIP's BCE), a softmax over the vocabulary for heads
trained with a softmax loss (SuperClass), so a SuperClass probability is a share of one distribution and is much
smaller than a CatLIP one. Synset labels carry their WordNet lemma names and gloss, others the vocabulary's name
(the decoded token for BPE). Ids that are never targets (BPE start/end/pad) are never returned.

Inputs are image files, folders (searched recursively), globs and webdataset shards (their image members); an
image that cannot be decoded is reported and skipped, the others are tagged.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from catlip.data import formats
from catlip.data.images import decode_rgb
from catlip.errors import CatlipError, CheckpointError, DataError
from catlip.losses import SOFTMAX_LOSSES  # heads trained with these define one distribution over the vocabulary


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ImageRef:
    """An image to read: a file, or a shard member (``offset``/``size`` of its bytes in the tar ``path``)."""

    name: str
    path: str
    offset: int = -1
    size: int = 0

    def __str__(self) -> str:
        return self.name


_MEMBERS = formats.MemberReader()  # one open file per shard and process (it reopens after a fork)


def read_image(ref: ImageRef) -> bytes | str:
    """What ``decode_rgb`` reads for ``ref``: the member's bytes, or the file's path."""
    return _MEMBERS.read(ref.path, ref.offset, ref.size) if ref.offset >= 0 else ref.path


def list_images(specs: Sequence[str]) -> list[ImageRef]:
    """Every image of the inputs, in the order given (folders and shards in their sorted / stored order).

    A path or pattern that matches nothing is a ``DataError``: a typo must not quietly tag nothing.
    """
    refs: list[ImageRef] = []
    for spec in specs:
        found = _expand(spec)
        if not found:
            raise DataError(f"{spec}: no image found (give image files, folders, globs or .tar shards)")
        refs.extend(found)
    return list(dict.fromkeys(refs))


def _expand(spec: str, explicit: bool = True) -> list[ImageRef]:
    if os.path.isdir(spec):
        return [ImageRef(str(p), str(p)) for p in sorted(Path(spec).rglob("*")) if formats.is_image_file(p)]
    if any(ch in spec for ch in "*?["):
        return [ref for match in sorted(glob.glob(spec, recursive=True)) for ref in _expand(match, explicit=False)]
    if spec.lower().endswith(formats.TAR_SUFFIXES) or (formats.is_shard_spec(spec) and not os.path.isfile(spec)):
        return [ref for url in formats.expand_urls(spec) for ref in _shard_images(url)]
    if not os.path.isfile(spec):
        raise DataError(f"image not found: {spec}")
    # a glob's other files (captions, notes) are not images; a file named on the command line is tried anyway
    return [ImageRef(spec, spec)] if explicit or formats.is_image_file(Path(spec)) else []


def _shard_images(url: str) -> list[ImageRef]:
    path = formats.local_shard(url, formats.default_shard_cache())
    if not path.is_file():
        raise DataError(f"shard not found: {url}")
    if not path.name.lower().endswith(".tar"):
        raise DataError(f"{url}: compressed shards cannot be read by offset; tag a plain .tar")
    refs = []
    for sample in formats.TarScan(path):
        ext = next((e for e in formats.SHARD_IMAGE_EXTS if e in sample.members), None)
        if ext is not None:
            _, offset, size = sample.members[ext]
            refs.append(ImageRef(f"{path}:{sample.key}.{ext}", str(path), offset, size))
    return refs


class IndexedImages(Dataset):
    """``(image tensor | None, index)`` per item; None marks an item that could not be read or decoded."""

    def __init__(self, items: Sequence[Any], load: Callable[[Any], Any], transform: Callable,
                 name: Callable[[Any], str] = str):
        self.items, self.load, self.transform, self.name = items, load, transform, name

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return self.transform(decode_rgb(self.load(self.items[i]))), i
        except Exception:  # noqa: BLE001 - PIL raises many types for bad data: all mean "skip this image"
            return None, i

    def describe(self, i: int) -> str:
        return self.name(self.items[i])

    def error(self, i: int) -> str:
        """Why item ``i`` was skipped (decoded once more, only for the few that failed)."""
        try:
            decode_rgb(self.load(self.items[i]))
        except Exception as err:  # noqa: BLE001
            return f"{type(err).__name__}: {err}"
        return "unreadable in a data-loading worker"


def encode_images(encoder: torch.nn.Module, dataset: IndexedImages, *, desc: str, batch_size: int = 256,
                  num_workers: int = 0, device: str = "auto", progress: bool = True):
    """``Features`` with ``x`` the encoder's output and ``y`` the item index of every decoded image, in order;
    ``skipped`` counts the rest (``catlip.evaluate.common.features.extract_features``: batching, device, progress)."""
    from catlip.evaluate.common.datasets import ClassList, LabelledData
    from catlip.evaluate.common.features import extract_features

    data = LabelledData(desc, dataset, ClassList([]))
    try:
        return extract_features(encoder, data, batch_size=batch_size, num_workers=num_workers, device=device,
                                progress=progress, desc=desc)
    except DataError:
        shown = "; ".join(f"{dataset.describe(i)}: {dataset.error(i)}" for i in range(min(3, len(dataset))))
        raise DataError(f"{desc}: none of the {len(dataset)} images could be decoded ({shown})") from None


# ---------------------------------------------------------------- the head


def head_activation(model) -> str:
    """``softmax`` for a head trained with a softmax loss (SuperClass), else ``sigmoid`` (CatLIP's BCE)."""
    return "softmax" if getattr(model.method, "loss_name", "") in SOFTMAX_LOSSES else "sigmoid"


def require_head(model, purpose: str):
    """(weight, bias) of the model's classification head; a model without one is a one-line ``CheckpointError``
    naming the methods that have one."""
    if model.head is None or model.vocab is None:
        from catlip.methods.registry import titles

        raise CheckpointError(f"{purpose} reads a classification head, which {titles(labels=True)} checkpoints have; "
                              f"{model.source} (method {model.method_name}) has none")
    return model.head_weight(purpose)


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


# ---------------------------------------------------------------- the procedure


def head_probabilities(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       activation: str) -> torch.Tensor:
    """(n, V) label probabilities of the head on its ``features`` (sigmoid or softmax, see ``head_activation``)."""
    from catlip.evaluate.caption.retrieval import head_log_probabilities

    logits = torch.nn.functional.linear(features.float(), weight.float().cpu(),
                                        bias.float().cpu() if bias is not None else None)
    return head_log_probabilities(logits, activation).exp()


def tag_images(model, refs: Sequence[ImageRef], *, top: int = 10, threshold: float = 0.0, batch_size: int = 256,
               num_workers: int = 0, device: str = "auto", progress: bool = True, chunk: int = 1024) -> dict:
    """Tag ``refs`` with ``model``'s head: ``{"images": [{"image", "tags": [...]}], "skipped": [{"image",
    "error"}], "activation", ...}``. Images are read and encoded in batches; the head reads the features ``chunk``
    images at a time (a softmax over 49,408 BPE tokens per image adds up)."""

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
