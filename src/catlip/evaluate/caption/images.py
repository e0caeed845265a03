"""The images the caption tasks read (`catlip tag`, `catlip retrieval`), and their encoding in batches.

Inputs are image files, folders (searched recursively), globs and webdataset shards (their image members), told
apart by ``catlip.data.specs``; an image that cannot be decoded (``catlip.data.images.decode_or_skip``) is
reported and skipped, the others are encoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from catlip.data import formats, specs
from catlip.data.images import Skip, decode_or_skip, read_skip
from catlip.errors import DataError


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


def list_images(inputs: Sequence[str]) -> list[ImageRef]:
    """Every image of the inputs, in the order given (folders and shards in their sorted / stored order).

    A path or pattern that matches nothing is a ``DataError``: a typo must not quietly tag nothing.
    """
    refs: list[ImageRef] = []
    for spec in inputs:
        found = _expand(spec)
        if not found:
            raise DataError(f"{spec}: no image found (give image files, folders, globs or .tar shards)")
        refs.extend(found)
    return list(dict.fromkeys(refs))


TAG_KINDS = (specs.IMAGE, specs.FOLDER, specs.GLOB, specs.SHARDS, specs.CAPTIONS, specs.JSON, specs.MANIFEST)


def _expand(spec: str) -> list[ImageRef]:
    """The images of one input (``catlip.data.specs``): any file named is tried as an image."""
    found = specs.resolve(spec, "tag input", TAG_KINDS)
    if found.kind == specs.GLOB:  # a glob's other files (captions, notes) are not images
        return [ref for match in found.paths for ref in _found_images(specs.classify(match), explicit=False)]
    return _found_images(found, explicit=True)


def _found_images(found: specs.DataSpec, explicit: bool) -> list[ImageRef]:
    if found.kind == specs.FOLDER:
        return [ImageRef(str(p), str(p)) for p in sorted(found.path.rglob("*")) if formats.is_image_file(p)]
    if found.kind == specs.SHARDS:
        return [ref for url in found.paths for ref in _shard_images(url)]
    return [ImageRef(found.spec, found.spec)] if explicit or found.kind == specs.IMAGE else []


def _shard_images(url: str) -> list[ImageRef]:
    path = formats.local_shard(url, formats.default_shard_cache())
    if not path.is_file():
        raise specs.not_found(specs.SHARDS, [url])
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
        img = self._image(i)
        return (None if isinstance(img, Skip) else self.transform(img)), i

    def _image(self, i: int):
        """The item's image or why it is skipped (the one decode-or-skip contract of ``catlip.data.images``)."""
        try:
            data = self.load(self.items[i])
        except OSError as err:
            return read_skip(err)
        return decode_or_skip(data)

    def describe(self, i: int) -> str:
        return self.name(self.items[i])

    def error(self, i: int) -> str:
        """Why item ``i`` was skipped (decoded once more, only for the few that failed)."""
        img = self._image(i)
        return img.error if isinstance(img, Skip) else "unreadable in a data-loading worker"


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
