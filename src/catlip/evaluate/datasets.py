"""Labelled image datasets for evaluation: image folders, webdataset shards, CSV/TSV/JSONL manifests.

Files are listed and read, and labels found, by the one reader of catlip's data formats
(``catlip.data.formats``); the transforms are those of ``catlip.data.transforms`` (``eval_transform`` and
``train_transform`` here are re-exports of its ``eval_transform`` and ``finetune_transform``). Every source yields ``(image tensor | None, target)``: ``None`` marks an unreadable image, which the collate
function drops and counts, so a corrupt file costs one sample, never the run. Targets are class indices
(single-label) or multi-hot float vectors (multi-label). Class names (and WordNet ids when known) travel with
the data because Transfer Init and zero-shot need them.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset

from catlip.data import formats
from catlip.data.images import decode_rgb
from catlip.data.transforms import MEAN, STD, eval_transform  # noqa: F401 - re-exported
from catlip.data.transforms import finetune_transform as train_transform  # noqa: F401 - re-exported
from catlip.errors import DataError

IMAGE_EXTENSIONS = formats.IMAGE_EXTENSIONS
WNID = re.compile(r"^n\d{8}$")
log = logging.getLogger("catlip.evaluate")


# ---------------------------------------------------------------- class lists


@dataclass
class ClassList:
    """Target classes in index order, with the WordNet id of each where the list provides one."""

    names: list[str]
    wnids: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.wnids:
            self.wnids = [None] * len(self.names)
        if len(self.wnids) != len(self.names):
            raise DataError("class list: names and wnids differ in length")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, label: str) -> int | None:
        """Index of a class given by name, wnid or decimal index; None when unknown."""
        label = label.strip()
        if label.isdigit():
            i = int(label)
            return i if i < len(self.names) else None
        if not hasattr(self, "_lookup"):
            lookup: dict[str, int] = {}
            for i, (name, wnid) in enumerate(zip(self.names, self.wnids)):
                lookup.setdefault(_norm(name), i)
                if wnid:
                    lookup.setdefault(wnid, i)
            self._lookup = lookup
        return self._lookup.get(_norm(label), self._lookup.get(label))


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def load_classes(path: str | Path) -> ClassList:
    """Read a class-names file: one name per line, or TSV ``index<TAB>wnid<TAB>name`` / ``wnid<TAB>name``.

    A header line (``index wnid name``) is recognised and skipped; blank lines are ignored.
    """
    path = Path(path)
    try:
        lines = [ln.rstrip("\n") for ln in path.read_text(encoding="utf-8").splitlines()]
    except OSError as err:
        raise DataError(f"cannot read class list {path}: {err.strerror or err}") from None
    names: list[str] = []
    wnids: list[str | None] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split("\t")]
        if n == 1 and len(cols) > 1 and {c.lower() for c in cols} & {"name", "wnid", "index"}:
            continue
        wnid = next((c for c in cols if WNID.match(c)), None)
        rest = [c for c in cols if c != wnid and not c.isdigit()]
        if not rest and wnid is None:
            raise DataError(f"{path}:{n}: no class name in {line!r}")
        names.append(rest[-1] if rest else wnid)
        wnids.append(wnid)
    if not names:
        raise DataError(f"class list {path} is empty")
    return ClassList(names, wnids)


# ---------------------------------------------------------------- images


def decode_image(data: bytes | str | Path) -> Image.Image | None:
    """8-bit RGB PIL image, or None for anything that cannot be read (truncated, not an image, missing file,
    a decompression bomb over Pillow's ``Image.MAX_IMAGE_PIXELS``).

    The training loader's decoder (:func:`catlip.data.images.decode_rgb`): 16/32-bit and float images are scaled
    by their bit depth, transparency is composited on white, so evaluation sees the pixels pre-training saw.
    """
    try:
        return decode_rgb(data)
    except Exception:  # noqa: BLE001 - PIL raises many types for corrupt files; all mean "skip this one"
        return None


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
        if self.multilabel and "json" in sample:
            labels = formats.json_labels(sample["json"])
            if labels is None:
                return None
            return _multi_hot([self.classes.index(x) for x in labels], len(self.classes))
        if "cls" in sample:
            idx = self.classes.index(formats.cls_label(sample["cls"]))
            if idx is None:
                return None
            return _multi_hot([idx], len(self.classes)) if self.multilabel else idx
        return None


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.dataset) if hasattr(self.dataset, "__len__") else 0


def open_labelled(spec: str | Path, classes: ClassList | str | Path | None = None, transform: Callable | None = None,
                  multilabel: bool = False, shuffle: int = 0, seed: int = 0) -> LabelledData:
    """Open an image folder, a CSV/TSV/JSONL manifest or webdataset shards (``.tar`` paths, brace patterns and
    remote URLs allowed)."""
    if isinstance(classes, (str, Path)):
        classes = load_classes(classes)
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        return _open_folder(path, classes, transform, multilabel)
    if formats.is_manifest(spec):
        return _open_manifest(path, classes, transform, multilabel)
    if formats.is_shard_spec(spec):
        return _open_shards(spec, classes, transform, multilabel, shuffle, seed)
    raise DataError(f"{spec}: not an image folder, a .csv/.tsv/.jsonl manifest or .tar shards")


def _open_folder(root: Path, classes: ClassList | None, transform, multilabel: bool) -> LabelledData:
    folders = formats.class_folders(root, IMAGE_EXTENSIONS)
    if not folders:
        raise DataError(f"{root}: an image folder needs one sub-folder per class, found none")
    if classes is None:
        names = [name for name, _ in folders]
        classes = ClassList(names, [n if WNID.match(n) else None for n in names])
    items: list[tuple[Path, Any]] = []
    unknown = []
    counts = [0] * len(classes)
    for name, files in folders:
        idx = classes.index(name)
        if idx is None:
            unknown.append(name)
            continue
        counts[idx] += len(files)
        target = _multi_hot([idx], len(classes)) if multilabel else idx
        items += [(f, target) for f in files]
    if unknown:
        raise DataError(f"{root}: folder(s) not in the class list: {', '.join(unknown[:10])}")
    return _finish(str(root), _ItemDataset(items, transform), classes, multilabel, counts)


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


def _open_manifest(path: Path, classes: ClassList | None, transform, multilabel: bool) -> LabelledData:
    """A manifest of images (paths relative to the manifest, then the working directory) and their labels."""
    rows = _manifest_rows(path)
    if classes is None:
        classes = ClassList(sorted({x.strip() for _, labels in rows for x in labels}))
    items, counts, unknown = [], [0] * len(classes), set()
    for image, labels in rows:
        idx = [classes.index(x) for x in labels]
        unknown.update(x for x, i in zip(labels, idx) if i is None)
        idx = [i for i in idx if i is not None]
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
    if unknown:
        raise DataError(f"{path}: label(s) not in the class list: {', '.join(sorted(unknown)[:10])}")
    return _finish(str(path), _ItemDataset(items, transform), classes, multilabel, counts)


def _open_shards(spec: str, classes: ClassList | None, transform, multilabel, shuffle, seed) -> LabelledData:
    urls = formats.expand_urls(spec)
    missing = [u for u in urls if not formats.is_remote(u) and not formats.local_shard(u, "").is_file()]
    if missing:
        raise DataError(f"shard(s) not found: {', '.join(missing[:5])}")
    if classes is None:
        guess = formats.local_shard(urls[0], "").parent / "classes.txt"
        if not guess.is_file():
            raise DataError(f"{spec}: shards carry class indices only; give the class names with --classes FILE")
        classes = load_classes(guess)
    ds = _ShardDataset(urls, classes, transform, multilabel, shuffle, seed)
    return LabelledData(spec, ds, classes, multilabel)


def _finish(spec, dataset, classes, multilabel, counts) -> LabelledData:
    if len(dataset) == 0:
        raise DataError(f"{spec}: no images found")
    empty = [name for name, c in zip(classes.names, counts) if c == 0]
    return LabelledData(spec, dataset, classes, multilabel, empty)


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
