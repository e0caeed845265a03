"""Labelled image datasets for evaluation: image folders, webdataset shards, CSV manifests.

Every source yields ``(image tensor | None, target)``: ``None`` marks an unreadable image, which the collate
function drops and counts, so a corrupt file costs one sample, never the run. Targets are class indices
(single-label) or multi-hot float vectors (multi-label). Class names (and WordNet ids when known) travel with
the data because Transfer Init and zero-shot need them.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import Dataset, IterableDataset
from torchvision import transforms as T

from catlip.data.images import decode_rgb
from catlip.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
WNID = re.compile(r"^n\d{8}$")
try:  # evaluate with the normalisation pre-training used
    from catlip.data.transforms import MEAN, STD
except ImportError:  # pragma: no cover - data stage absent
    MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


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


# ---------------------------------------------------------------- transforms


def eval_transform(size: int, mean=MEAN, std=STD) -> Callable:
    """Resize the shorter side to ``size`` and center-crop: any input size becomes (3, size, size)."""
    return T.Compose([
        T.Resize(size, antialias=True),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def train_transform(size: int, mean=MEAN, std=STD, scale_min: float = 0.25) -> Callable:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


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
        import webdataset as wds

        ds = wds.WebDataset(self.urls, shardshuffle=False, empty_check=False, handler=wds.warn_and_continue)
        if self.shuffle:
            ds = ds.shuffle(self.shuffle, rng=__import__("random").Random(self.seed + self.epoch))
        for sample in ds:
            target = self._target(sample)
            image_bytes = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
            img = decode_image(image_bytes) if image_bytes is not None else None
            if target is None:
                img = None  # unlabelled: counted as skipped like an unreadable image
            if img is not None and self.transform:
                img = self.transform(img)
            yield img, (target if target is not None else _empty_target(len(self.classes), self.multilabel))

    def _target(self, sample: dict) -> Any:
        if self.multilabel and "json" in sample:
            try:
                labels = json.loads(sample["json"]).get("labels", [])
            except (ValueError, AttributeError):
                return None
            return _multi_hot([self.classes.index(str(x)) for x in labels], len(self.classes))
        if "cls" in sample:
            idx = self.classes.index(sample["cls"].decode("utf-8", "replace"))
            if idx is None:
                return None
            return _multi_hot([idx], len(self.classes)) if self.multilabel else idx
        return None


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
    """Open an image folder, a CSV/TSV manifest or webdataset shards (``.tar`` paths, brace patterns allowed)."""
    if isinstance(classes, (str, Path)):
        classes = load_classes(classes)
    spec = str(spec)
    path = Path(spec)
    if path.is_dir():
        return _open_folder(path, classes, transform, multilabel)
    if path.suffix.lower() in (".csv", ".tsv"):
        return _open_manifest(path, classes, transform, multilabel)
    if ".tar" in spec:
        return _open_shards(spec, classes, transform, multilabel, shuffle, seed)
    raise DataError(f"{spec}: not an image folder, a .csv/.tsv manifest or .tar shards")


def _open_folder(root: Path, classes: ClassList | None, transform, multilabel: bool) -> LabelledData:
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{root}: an image folder needs one sub-folder per class, found none")
    if classes is None:
        names = [p.name for p in folders]
        classes = ClassList(names, [n if WNID.match(n) else None for n in names])
    items: list[tuple[Path, Any]] = []
    unknown = []
    counts = [0] * len(classes)
    for folder in folders:
        idx = classes.index(folder.name)
        if idx is None:
            unknown.append(folder.name)
            continue
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        counts[idx] += len(files)
        target = _multi_hot([idx], len(classes)) if multilabel else idx
        items += [(f, target) for f in files]
    if unknown:
        raise DataError(f"{root}: folder(s) not in the class list: {', '.join(unknown[:10])}")
    return _finish(str(root), _ItemDataset(items, transform), classes, multilabel, counts)


def _open_manifest(path: Path, classes: ClassList | None, transform, multilabel: bool) -> LabelledData:
    """CSV/TSV with columns ``image`` (path, relative to the manifest) and ``label`` (``labels``: ``|``-separated)."""
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter=delim))
    except OSError as err:
        raise DataError(f"cannot read manifest {path}: {err.strerror or err}") from None
    if not rows or "image" not in rows[0]:
        raise DataError(f"{path}: a manifest needs a header with an 'image' column and a 'label' or 'labels' column")
    column = "labels" if "labels" in rows[0] else "label"
    if column not in rows[0]:
        raise DataError(f"{path}: no 'label' or 'labels' column")
    raw = [[x for x in (r[column] or "").split("|") if x.strip()] for r in rows]
    if classes is None:
        classes = ClassList(sorted({x.strip() for labels in raw for x in labels}))
    items, counts, unknown = [], [0] * len(classes), set()
    for row, labels in zip(rows, raw):
        idx = [classes.index(x) for x in labels]
        unknown.update(x for x, i in zip(labels, idx) if i is None)
        idx = [i for i in idx if i is not None]
        if not idx:
            continue  # an unlabelled row is no evaluation sample
        for i in idx:
            counts[i] += 1
        target = _multi_hot(idx, len(classes)) if multilabel else idx[0]
        items.append((path.parent / row["image"], target))
    if unknown:
        raise DataError(f"{path}: label(s) not in the class list: {', '.join(sorted(unknown)[:10])}")
    return _finish(str(path), _ItemDataset(items, transform), classes, multilabel, counts)


def _open_shards(spec: str, classes: ClassList | None, transform, multilabel, shuffle, seed) -> LabelledData:
    from braceexpand import braceexpand

    urls = [u for part in spec.split("::") for u in braceexpand(part)]
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if missing:
        raise DataError(f"shard(s) not found: {', '.join(missing[:5])}")
    if classes is None:
        guess = Path(urls[0]).parent / "classes.txt"
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
