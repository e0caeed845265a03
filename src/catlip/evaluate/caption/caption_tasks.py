"""In-domain evaluation tasks built from the captions of held-out image–caption shards.

Caption supervision teaches the concepts that captions name, so a pre-trained backbone is best judged on those
concepts: here the labels of an evaluation image are the label keys (CatLIP synsets) of its own captions, never
seen in pre-training. Two tasks come out of that:

* a **multi-label** task over the K most frequent keys of the *training* vocabulary (an image is positive for a
  key when any of its captions names it), scored by mAP;
* a **single-label** task over K frequent *object* synsets (kinds of animal or of instrumentality: devices,
  vehicles, equipment, toys; not clothing, ground or buildings, which a photo shows around its subject), keeping
  only the images whose captions name exactly one of them: the setting where Transfer Init's precondition (the target
  classes are frequent in the pre-training labels) holds by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from catlip.errors import DataError

# WordNet roots of the things a photo is *of* (the dog, bicycle, ball, horse, car): animal.n.01 and
# instrumentality.n.03. Clothing, streets, walls and grass are named in captions too, but as the setting.
OBJECT_ROOTS = {"n00015388": "animal", "n03575240": "instrumentality"}
_CAPTION_EXTS = ("json", "txt")


@dataclass
class CaptionedImages:
    """Decoded evaluation images (N, 3, S, S) with every caption of each image, in shard order."""

    keys: list[str]
    images: torch.Tensor
    captions: list[list[str]]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def __len__(self) -> int:
        return len(self.keys)


def load_captioned(shards: Sequence[str | Path], transform) -> CaptionedImages:
    """Every sample of ``shards`` with a decodable image and at least one caption; the rest counted by reason."""
    from catlip.data import formats
    from catlip.data.images import Skip, decode_or_skip

    keys, images, captions, skipped = [], [], [], {}
    image_exts = {e.lstrip(".") for e in formats.IMAGE_EXTENSIONS}
    for shard in shards:
        if not Path(shard).is_file():
            raise DataError(f"{shard}: no such shard")
        for sample in formats.TarScan(shard, read=lambda ext: ext in image_exts or ext in _CAPTION_EXTS):
            caps, _ = formats.member_captions({e: sample.data[e] for e in _CAPTION_EXTS if e in sample.data})
            raw = next((sample.data[e] for e in sample.data if e in image_exts), None)
            img = decode_or_skip(raw) if raw is not None else None
            reason = "no image" if raw is None else "undecodable image" if isinstance(img, Skip) else None
            reason = reason or (None if caps else "no caption")
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            keys.append(sample.key)
            images.append(transform(img))
            captions.append(caps)
    if not keys:
        raise DataError(f"no captioned image in {', '.join(map(str, shards))}")
    return CaptionedImages(keys, torch.stack(images), captions, skipped)


def caption_label_sets(captions: Iterable[list[str]], vocab: Any) -> list[set[int]]:
    """For each image, the vocabulary ids named by any of its captions (the vocabulary's own label source)."""
    extractor = vocab.extractor()
    return [{i for c in caps for i in vocab.encode(extractor.extract(c))} for caps in captions]


def frequent_ids(vocab: Any, k: int, roots: Iterable[str] | None = None) -> list[int]:
    """The ``k`` vocabulary ids with the highest caption counts, optionally only synsets under these roots."""
    order = sorted(range(len(vocab)), key=lambda i: (-vocab.counts[i], vocab.keys[i]))
    if roots is not None:
        from catlip.labels.wordnet import get_wordnet

        wn, wanted = get_wordnet(), set(roots)
        order = [i for i in order if any(wanted & set(path) for path in wn.hypernym_paths(vocab.keys[i]))]
    return order[:k]


def multilabel_targets(label_sets: Sequence[set[int]], class_ids: Sequence[int]) -> torch.Tensor:
    """(N, K) 0/1 float targets: image n is positive for class k when its captions name ``class_ids[k]``."""
    column = {c: k for k, c in enumerate(class_ids)}
    y = torch.zeros(len(label_sets), len(class_ids))
    for n, ids in enumerate(label_sets):
        for i in ids & column.keys():
            y[n, column[i]] = 1.0
    return y


def single_label_targets(label_sets: Sequence[set[int]], class_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, targets) of the images whose captions name exactly one of ``class_ids`` (target = its column)."""
    column = {c: k for k, c in enumerate(class_ids)}
    keep, target = [], []
    for n, ids in enumerate(label_sets):
        named = ids & column.keys()
        if len(named) == 1:
            keep.append(n)
            target.append(column[named.pop()])
    return torch.tensor(keep, dtype=torch.long), torch.tensor(target, dtype=torch.long)


def object_classes(vocab: Any, train_sets: Sequence[set[int]], test_sets: Sequence[set[int]], *, k: int,
                   min_train: int, min_test: int, candidates: int = 60) -> list[int]:
    """Up to ``k`` frequent object synsets that leave at least ``min_train`` / ``min_test`` single-label images.

    Classes are added in order of training-caption frequency; a class that would leave another class (or itself)
    short of images is passed over, since adding a class removes the images that also name it.
    """
    chosen: list[int] = []
    for cid in frequent_ids(vocab, candidates, OBJECT_ROOTS):
        trial = chosen + [cid]
        counts_tr = torch.bincount(single_label_targets(train_sets, trial)[1], minlength=len(trial))
        counts_te = torch.bincount(single_label_targets(test_sets, trial)[1], minlength=len(trial))
        if int(counts_tr.min()) >= min_train and int(counts_te.min()) >= min_test:
            chosen = trial
        if len(chosen) == k:
            break
    return chosen
