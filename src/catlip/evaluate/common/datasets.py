"""Labelled image datasets for evaluation: image folders, webdataset shards, CSV/TSV/JSONL manifests.

Files are listed and read, and labels found, by the one reader of catlip's data formats
(``catlip.data.formats``), after ``catlip.data.specs`` has said which kind of data the spec is; the transforms
are those of ``catlip.data.transforms`` (``eval_transform`` and ``train_transform`` here are re-exports of its
``eval_transform`` and ``finetune_transform``). Every source yields ``(image tensor | None, target)``: ``None``
marks an image that ``catlip.data.images.decode_or_skip`` skips, which the collate function drops and counts, so
a corrupt file costs one sample, never the run. Targets are class indices (single-label) or multi-hot float
vectors (multi-label). Class names (and WordNet ids when known) travel with the data because Transfer Init and
zero-shot need them; class files are read by ``catlip.evaluate.common.class_files``.

The labels of the data are checked against the class list when a source is opened (shards: one pass over their
label members, no image read), so a metric never covers a silent subset: a label the list does not name is an
error, or with ``allow_partial`` its images are counted in ``LabelledData.unlisted``.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from catlip.data import formats, specs
from catlip.data.images import Skip, decode_or_skip
from catlip.data.transforms import MEAN, STD, eval_transform  # noqa: F401 - re-exported
from catlip.data.transforms import finetune_transform as train_transform  # noqa: F401 - re-exported
from catlip.errors import DataError
from catlip.evaluate.common.class_files import WNID, ClassList, class_file_beside, read_class_file

IMAGE_EXTENSIONS = formats.IMAGE_EXTENSIONS
EVAL_KINDS = (specs.FOLDER, specs.MANIFEST, specs.SHARDS)  # what open_labelled reads (catlip.data.specs)
log = logging.getLogger("catlip.evaluate")


# ---------------------------------------------------------------- class lists

load_classes = read_class_file


def _check_labels(spec: str, classes: ClassList, labels: Iterable[Sequence[str]], allow_partial: bool
                  ) -> dict[str, Any]:
    """``{"images": n, "labels": {label: images}}`` of the labels found in the data (one list per image) that name
    no listed class; ``{}`` when every label is listed.

    Evaluating on the listed classes only would report a number over a silent subset of the data, so an unlisted
    label is an error unless ``allow_partial``; then its images are counted (and single-label ones left out)."""
    unlisted: Counter[str] = Counter()
    images = 0
    for image_labels in labels:
        missing = {x.strip() for x in image_labels if classes.index(x) is None}
        unlisted.update(missing)
        images += bool(missing)
    if unlisted and not allow_partial:
        shown = ", ".join(sorted(unlisted, key=_natural)[:8]) + (", ..." if len(unlisted) > 8 else "")
        raise DataError(f"{spec}: {images} images carry {len(unlisted)} label(s) not in the class list of "
                        f"{len(classes)} names ({shown}); list every class, or pass --allow-partial-classes to "
                        "evaluate the listed classes and count the rest")
    if not unlisted:
        return {}
    log.warning("%s: %d images of %d unlisted class(es) counted, not evaluated", spec, images, len(unlisted))
    return {"images": images, "labels": dict(sorted(unlisted.items(), key=lambda kv: _natural(kv[0])))}


def _natural(label: str) -> tuple:
    return (0, int(label), "") if label.isdigit() else (1, 0, label)


# ---------------------------------------------------------------- images


def decode_image(data: bytes | str | Path) -> Image.Image | None:
    """8-bit RGB PIL image, or None for anything that cannot be read: the one decode-or-skip contract
    (:func:`catlip.data.images.decode_or_skip`, the training loader's), seen as the ``(None, target)`` items that
    :func:`collate_skip` counts. Pre-training and evaluation therefore see the same pixels and skip the same files.
    """
    img = decode_or_skip(data)
    return None if isinstance(img, Skip) else img


# ---------------------------------------------------------------- sources


class _ItemDataset(Dataset):
    """Map-style dataset over ``(path, target)`` items (image folders and manifests)."""

    def __init__(self, items: list[tuple[Path, Any]], transform: Callable | None):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, target = self.items[i]
        img = decode_image(path)
        if img is None:
            return None, target
        return (self.transform(img) if self.transform else img), target


class _ShardDataset(IterableDataset):
    """Webdataset shards with ``.cls`` (index) or ``.json`` (``{"labels": [...]}``) members."""

    def __init__(self, urls: list[str], classes: ClassList, transform: Callable | None, multilabel: bool,
                 shuffle: int = 0, seed: int = 0):
        self.urls, self.classes, self.transform = urls, classes, transform
        self.multilabel, self.shuffle, self.seed = multilabel, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        for image_bytes, target in self._samples():
            if target is _UNLISTED:
                continue  # counted when the shards were opened
            img = decode_image(image_bytes) if image_bytes is not None else None
            if target is None:
                img = None  # unlabelled: counted as skipped like an unreadable image
            if img is not None and self.transform:
                img = self.transform(img)
            yield img, (target if target is not None else _empty_target(len(self.classes), self.multilabel))

    def _samples(self):
        """``(image bytes | None, target | None)`` in shard order (this worker's shards), shuffled in a buffer of
        ``shuffle`` samples when asked."""
        worker = torch.utils.data.get_worker_info()
        urls = self.urls[worker.id::worker.num_workers] if worker is not None else self.urls
        samples = (self._sample(s) for url in urls for s in _scan_shard(url))
        if not self.shuffle:
            yield from samples
            return
        yield from _shuffled(samples, self.shuffle, random.Random(self.seed + self.epoch))

    def _sample(self, sample: formats.TarSample) -> tuple[bytes | None, Any]:
        data = sample.data
        image = next((data[k] for k in formats.SHARD_IMAGE_EXTS if k in data), None)
        return image, self._target(data)

    def _target(self, sample: dict) -> Any:
        labels = _sample_labels(sample, self.multilabel)
        if labels is None:
            return None
        idx = [self.classes.index(x) for x in labels]
        if self.multilabel:
            return _multi_hot(idx, len(self.classes))
        return _UNLISTED if idx[0] is None else idx[0]


_UNLISTED = object()  # the target of a single-label sample whose class the list leaves out


def _sample_labels(sample: dict, multilabel: bool) -> list[str] | None:
    """A shard sample's labels: its ``.json`` labels (multi-label), else its ``.cls``; None when it has none."""
    if multilabel and "json" in sample:
        return formats.json_labels(sample["json"])
    if "cls" in sample:
        return [formats.cls_label(sample["cls"])]
    return None


def _shard_labels(urls: list[str], multilabel: bool) -> list[list[str]]:
    """The labels of every labelled sample, from the label members alone (no image is read)."""
    out = []
    for url in urls:
        path = formats.local_shard(url, formats.default_shard_cache())
        for sample in formats.TarScan(path, read={"cls", "json"}.__contains__):
            labels = _sample_labels(sample.data, multilabel)
            if labels:
                out.append(labels)
    return out


def _shuffled(samples, bufsize: int, rng: random.Random, initial: int = 100):
    """Buffer shuffle of a stream (webdataset's ``shuffle(bufsize, initial)`` algorithm, so orders are as before)."""
    initial = min(initial, bufsize)
    buf: list = []

    def pick():
        k = rng.randint(0, len(buf) - 1)
        sample = buf[k]
        buf[k] = buf[-1]
        buf.pop()
        return sample

    for sample in samples:
        buf.append(sample)
        if len(buf) < bufsize:
            nxt = next(samples, None)
            if nxt is not None:
                buf.append(nxt)
        if len(buf) >= initial:
            yield pick()
    while buf:
        yield pick()


def _scan_shard(url: str):
    """The samples of one shard (remote ones through the local shard cache), with their image and label bytes."""
    path = formats.local_shard(url, formats.default_shard_cache())
    wanted = set(formats.SHARD_IMAGE_EXTS) | {"cls", "json"}
    scan = formats.TarScan(path, read=wanted.__contains__)
    yield from scan
    if scan.damage is not None:
        log.warning("shard %s: %s; samples before the damage were kept", path, scan.damage[1])


def _empty_target(num_classes: int, multilabel: bool):
    return torch.zeros(num_classes) if multilabel else -1


def _multi_hot(indices: list[int | None], num_classes: int) -> torch.Tensor:
    out = torch.zeros(num_classes)
    for i in indices:
        if i is not None:
            out[i] = 1.0
    return out


@dataclass
class LabelledData:
    """A labelled evaluation source: the torch dataset plus what evaluation must know about it."""

    spec: str
    dataset: Dataset
    classes: ClassList
    multilabel: bool = False
    empty_classes: list[str] = field(default_factory=list)
    unlisted: dict[str, Any] = field(default_factory=dict)  # images of classes the list leaves out (_check_labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.dataset) if hasattr(self.dataset, "__len__") else 0


def open_labelled(spec: str | Path, classes: ClassList | str | Path | None = None, transform: Callable | None = None,
                  multilabel: bool = False, shuffle: int = 0, seed: int = 0, allow_partial: bool = False
                  ) -> LabelledData:
    """Open an image folder, a CSV/TSV/JSONL manifest or webdataset shards (``.tar`` paths, brace patterns and
    remote URLs allowed). A label of the data that ``classes`` does not list is an error, or with
    ``allow_partial`` counted in ``unlisted`` (see :func:`_check_labels`)."""
    if isinstance(classes, (str, Path)):
        classes = load_classes(classes)
    found = specs.resolve(spec, "evaluation data", EVAL_KINDS)
    if found.kind == specs.FOLDER:
        return _open_folder(found.path, classes, transform, multilabel, allow_partial)
    if found.kind == specs.MANIFEST:
        return _open_manifest(found.path, classes, transform, multilabel, allow_partial)
    return _open_shards(found, classes, transform, multilabel, shuffle, seed, allow_partial)


def _open_folder(root: Path, classes: ClassList | None, transform, multilabel: bool, allow_partial: bool
                 ) -> LabelledData:
    folders = formats.class_folders(root, IMAGE_EXTENSIONS)
    if not folders:
        raise DataError(f"{root}: an image folder needs one sub-folder per class, found none")
    if classes is None:
        names = [name for name, _ in folders]
        classes = ClassList(names, [n if WNID.match(n) else None for n in names])
    unlisted = _check_labels(f"{root} (folder names)", classes, ([n] for n, files in folders for _ in files),
                             allow_partial)
    items: list[tuple[Path, Any]] = []
    counts = [0] * len(classes)
    for name, files in folders:
        idx = classes.index(name)
        if idx is None:
            continue
        counts[idx] += len(files)
        target = _multi_hot([idx], len(classes)) if multilabel else idx
        items += [(f, target) for f in files]
    return _finish(str(root), _ItemDataset(items, transform), classes, multilabel, counts, unlisted)


def _manifest_rows(path: Path) -> list[tuple[str, list[str]]]:
    """``(image, labels)`` per usable manifest record: CSV/TSV columns ``image`` and ``labels`` | ``label``
    (``|``-separated); JSONL fields ``image`` and ``labels`` | ``label`` (a list, or a ``|``-separated string)."""
    def bad(lineno: int, why: str) -> None:
        log.warning("skipped %s:%d: %s", path, lineno, why)

    try:
        with formats.read_manifest(path, bad) as manifest:
            return _manifest_records(path, manifest, bad)
    except OSError as err:
        raise DataError(f"cannot read manifest {path}: {err.strerror or err}") from None


def _manifest_records(path: Path, manifest: formats.Manifest, bad) -> list[tuple[str, list[str]]]:
    need = f"{path}: a manifest needs a header with an 'image' column and a 'label' or 'labels' column"
    if manifest.kind != "jsonl":
        if manifest.header is None or "image" not in manifest.header:
            raise DataError(need)
        column = formats.label_column(manifest.header)
        if column is None:
            raise DataError(f"{path}: no 'label' or 'labels' column")
        return [(formats.repaired(row["image"]).strip(), formats.split_labels(formats.repaired(row[column])))
                for _, row in manifest.records]
    rows = []
    for lineno, obj in manifest.records:
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str):
            bad(lineno, "not a JSON object with an 'image' field")
            continue
        column = formats.label_column(obj)
        value = obj.get(column) if column else None
        labels = ([str(x) for x in value if str(x).strip()] if isinstance(value, list)
                  else formats.split_labels(str(value)) if value is not None else [])
        rows.append((obj["image"].strip(), labels))
    if not rows:
        raise DataError(need)
    return rows


def _open_manifest(path: Path, classes: ClassList | None, transform, multilabel: bool, allow_partial: bool
                   ) -> LabelledData:
    """A manifest of images (paths relative to the manifest, then the working directory) and their labels."""
    rows = _manifest_rows(path)
    if classes is None:
        classes = ClassList(sorted({x.strip() for _, labels in rows for x in labels}))
    unlisted = _check_labels(str(path), classes, (labels for _, labels in rows), allow_partial)
    items, counts = [], [0] * len(classes)
    for image, labels in rows:
        idx = [i for i in (classes.index(x) for x in labels) if i is not None]
        if not idx:
            continue  # an unlabelled row is no evaluation sample
        for i in idx:
            counts[i] += 1
        target = _multi_hot(idx, len(classes)) if multilabel else idx[0]
        try:
            file = formats.resolve_image(image, path.parent)
        except FileNotFoundError:
            file = path.parent / image  # unreadable: skipped (and counted) when read
        items.append((file, target))
    return _finish(str(path), _ItemDataset(items, transform), classes, multilabel, counts, unlisted)


def _open_shards(found: specs.DataSpec, classes: ClassList | None, transform, multilabel, shuffle, seed,
                 allow_partial) -> LabelledData:
    spec, urls = found.spec, list(found.paths)
    if classes is None:
        guess = class_file_beside(formats.local_shard(urls[0], "").parent)
        if guess is None:
            raise DataError(f"{spec}: shards carry class indices only; give the class names with --classes FILE")
        classes = load_classes(guess)
    labels = _shard_labels(urls, multilabel)
    unlisted = _check_labels(spec, classes, labels, allow_partial)
    counts = Counter(i for image_labels in labels for i in {classes.index(x) for x in image_labels})
    ds = _ShardDataset(urls, classes, transform, multilabel, shuffle, seed)
    return LabelledData(spec, ds, classes, multilabel, _empty(classes, counts), unlisted)


def _finish(spec, dataset, classes, multilabel, counts, unlisted) -> LabelledData:
    if len(dataset) == 0:
        raise DataError(f"{spec}: no images found")
    return LabelledData(spec, dataset, classes, multilabel, _empty(classes, dict(enumerate(counts))), unlisted)


def _empty(classes: ClassList, counts: dict[int | None, int]) -> list[str]:
    return [name for i, name in enumerate(classes.names) if not counts.get(i)]


def collate_skip(batch: list) -> dict[str, Any]:
    """Stack the readable samples; ``skipped`` counts the ones that were not."""
    good = [(img, t) for img, t in batch if img is not None]
    out: dict[str, Any] = {"skipped": len(batch) - len(good)}
    if not good:
        out["image"], out["target"] = None, None
        return out
    out["image"] = torch.stack([img for img, _ in good])
    first = good[0][1]
    out["target"] = torch.stack([t for _, t in good]) if torch.is_tensor(first) else torch.tensor([t for _, t in good])
    return out
