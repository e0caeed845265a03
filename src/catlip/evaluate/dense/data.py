"""Dense evaluation data: images with semantic masks (segmentation) or boxes (detection), read lazily by index.

**Sources** (``open_segmentation`` / ``open_detection``; the spec is what ``--train`` / ``--test`` take; its kind
is decided by ``catlip.data.specs``, which also words the refusal of any other kind):

- webdataset shards (a ``.tar``, a brace pattern): members ``<key>.jpg`` (or png/webp) with ``<key>.seg.png``
  (8-bit mask of class ids, 0 = unlabeled) or ``<key>.json`` (``{"boxes": [[x0, y0, x1, y1], ...] in pixels,
  "labels": [class index, ...]}``) — the format of ``../shared/data/coco128/``. A key without the member the
  task needs is skipped and counted.
- segmentation folders in ADE20k's layout: ``ROOT`` holding ``images/`` and ``annotations/``, or
  ``ROOT/images/<split>`` paired with ``ROOT/annotations/<split>``; ``a/b.jpg`` pairs with ``a/b.png``.
- detection: a COCO ``instances_*.json`` with its image folder (``--images DIR``, else the folder named like the
  json's split — ``instances_val2017.json`` -> ``val2017/`` beside the json or beside its ``annotations/``
  folder — or ``images/``). Crowd annotations are skipped and counted; polygon / RLE masks become instance masks.
- ``synthetic[:N[:SIZE]]``: N embedded scenes (default 64 at 64 px; ``catlip.data.synthetic.synthetic_dense``)
  for tests and smoke runs; training and test sets differ by seed.

**Class lists** (``--classes``; default: ``classes.json`` / ``classes.txt`` / ``objectInfo150.csv`` beside the
data or up to two folders above): segmentation maps mask ids to classes — a JSON object ``{id: name}`` (or
such an object under ``"segmentation"``), ``id<TAB>name`` lines, ADE20k's ``objectInfo150.csv`` (``Idx``,
``Name``), or plain names (a JSON list or one per line) numbered from 1. Id 0 is always "unlabeled" and ignored;
ids outside the list are ignored too, and their pixels counted. Detection: class names in label-index order —
a JSON list (or one under ``"detection"``) or one per line; a COCO json brings its own categories. Both are read by
``catlip.evaluate.common.class_files`` (``read_mask_ids``, ``read_class_file``), the one reader of class files.

**Bad input** never stops a run: an unreadable image or mask, a mask whose size differs from its image, a box
outside the image (clipped), a box with no area, without 4 finite coordinates or with an unknown label (dropped)
are counted per sample in the ``notes`` each sample carries; a missing data folder or file, or a class list
matching none of the data, is a one-line :class:`DataError`.
"""

from __future__ import annotations

import io
import json
import math
import numbers
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from catlip.data import formats, specs
from catlip.data.images import Skip, decode_or_skip
from catlip.errors import DataError
from catlip.evaluate.common.class_files import read_class_file, read_mask_ids

IGNORE = 255  # segmentation target of unlabeled pixels and of ids outside the class list
MASK_EXT = "seg.png"
BOX_EXT = "json"
CLASS_FILES = ("classes.json", "classes.txt", "objectInfo150.csv", "objectInfo150.txt")
_CHECK_SAMPLES = 16  # masks / annotations read when a data set is opened, to test the class list against it


@dataclass
class Record:
    """One sample: where its image and its target live (shard member ``(path, offset, size)``, a file path,
    or a synthetic scene ``(seed, index, size)``) and, for COCO jsons, the parsed annotations."""

    key: str
    image: Any
    target: Any = None


@dataclass
class DenseData:
    spec: str
    task: str  # "segment" | "detect"
    records: list[Record]
    names: list[str]
    lut: np.ndarray | None = None  # segmentation: mask id -> class index or IGNORE
    has_masks: bool = False  # detection: instance masks available (COCO polygons / RLE, synthetic)
    skipped: Counter = field(default_factory=Counter)  # samples dropped when the data was opened, by reason

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.records)


# ---------------------------------------------------------------- reading members


class _Reader:
    """Bytes of a record's member, whatever its source; one per process (file handles do not cross fork)."""

    def __init__(self):
        self.members = formats.MemberReader()

    def read(self, where: Any) -> bytes | None:
        try:
            if isinstance(where, tuple):
                return self.members.read(*where)
            return Path(where).read_bytes()
        except OSError:
            return None


def decode_mask(data: bytes | None) -> np.ndarray | None:
    """A single-channel mask (8- or 16-bit PNG, palette allowed) as an integer array; None when unreadable."""
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode not in ("L", "P", "I;16", "I"):
                return None
            return np.asarray(img, dtype=np.int64)
    except Exception:  # noqa: BLE001 - PIL raises many types for corrupt files; all mean "skip this one"
        return None


# ---------------------------------------------------------------- class lists


def _find_class_file(found: specs.DataSpec) -> Path | None:
    start = found.path if found.kind == specs.FOLDER else found.path.parent
    for folder in [start, *list(start.parents)[:2]]:
        for name in CLASS_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def _lut(ids: dict[int, str]) -> np.ndarray:
    lut = np.full(65536, IGNORE, dtype=np.int64)
    for index, mask_id in enumerate(ids):
        lut[mask_id] = index
    return lut


def _class_file(found: specs.DataSpec, classes: str | Path | None) -> Path:
    if classes is not None:
        return Path(classes)
    path = _find_class_file(found)
    if path is None:
        raise DataError(f"{found.spec}: no class list found beside the data ({', '.join(CLASS_FILES)}); "
                        "give one with --classes FILE")
    return path


# ---------------------------------------------------------------- listing samples


SEGMENT_KINDS = (specs.SHARDS, specs.FOLDER, specs.SYNTHETIC)  # what each task reads (catlip.data.specs)
DETECT_KINDS = (specs.SHARDS, specs.JSON, specs.SYNTHETIC)


def _synthetic_records(found: specs.DataSpec, seed: int) -> list[Record]:
    """N scenes of SIZE pixels (default 64 of 64)."""
    n, size = found.count or 64, found.size or 64
    return [Record(f"synthetic-{seed}-{i}", (seed, i, size)) for i in range(n)]


def _shard_records(found: specs.DataSpec, need: str, skipped: Counter) -> list[Record]:
    records = []
    for url in found.paths:
        path = str(formats.local_shard(url, formats.default_shard_cache()))  # a remote shard is read from the cache
        scan = formats.TarScan(path)
        for sample in scan:
            image = next((e for e in formats.SHARD_IMAGE_EXTS if e in sample.members), None)
            if image is None:
                continue  # a key of other members only (not an image sample)
            if need not in sample.members:
                skipped[f"no .{need} member"] += 1
                continue
            member = lambda ext: (path, *sample.members[ext][1:])  # noqa: E731
            records.append(Record(sample.key, member(image), member(need)))
        if scan.damage is not None:
            skipped[f"shard {scan.damage[0]}"] += 1
    return records


def _ade_folders(root: Path) -> tuple[Path, Path]:
    if (root / "images").is_dir():
        images, masks = root / "images", root / "annotations"
    elif root.parent.name == "images":
        images, masks = root, root.parent.parent / "annotations" / root.name
    else:
        images, masks = root, root.parent / "annotations"
    if not masks.is_dir():
        raise DataError(f"{root}: annotation folder {masks} not found (ADE20k layout: images/ beside annotations/)")
    return images, masks


def _folder_records(root: Path, skipped: Counter) -> list[Record]:
    images, masks = _ade_folders(root)
    records = []
    for img in sorted(p for p in images.rglob("*") if formats.is_image_file(p)):
        rel = img.relative_to(images)
        mask = masks / rel.with_suffix(".png")
        if not mask.is_file():
            skipped["no mask file"] += 1
            continue
        records.append(Record(str(rel.with_suffix("")), str(img), str(mask)))
    return records


def open_segmentation(spec: str, classes: str | Path | None = None, *, seed: int = 0) -> DenseData:
    """Images with semantic masks (see the module docstring); ``seed`` picks the synthetic scenes."""
    from catlip.data.synthetic import SEG_CLASSES

    found = specs.resolve(spec, "segmentation data", SEGMENT_KINDS)
    skipped: Counter = Counter()
    if found.kind == specs.SYNTHETIC:
        ids = {i + 1: name for i, name in enumerate(SEG_CLASSES)}
        return DenseData(spec, "segment", _synthetic_records(found, seed), list(ids.values()), _lut(ids))
    class_file = _class_file(found, classes)
    ids = read_mask_ids(class_file, max_classes=IGNORE - 1)
    if found.kind == specs.SHARDS:
        records = _shard_records(found, MASK_EXT, skipped)
    else:
        records = _folder_records(found.path, skipped)
    if not records:
        raise DataError(f"{spec}: no image with a mask found ({dict(skipped) or 'empty'})")
    data = DenseData(spec, "segment", records, list(ids.values()), _lut(ids), skipped=skipped)
    _check_seg_classes(data, class_file)
    return data


def _check_seg_classes(data: DenseData, class_file: Path) -> None:
    """A class list that matches none of the mask ids is a wrong list, not a run of ignored pixels."""
    reader, seen = _Reader(), set()
    for rec in data.records[:_CHECK_SAMPLES]:
        mask = decode_mask(reader.read(rec.target))
        if mask is not None:
            seen.update(int(v) for v in np.unique(mask))
    seen.discard(0)
    if seen and all(data.lut[min(v, 65535)] == IGNORE for v in seen):
        shown = ", ".join(str(v) for v in sorted(seen)[:10])
        raise DataError(f"class list {class_file} matches none of the mask ids of {data.spec} (ids seen: {shown})")


def open_detection(spec: str, classes: str | Path | None = None, *, images: str | Path | None = None,
                   seed: int = 0) -> DenseData:
    """Images with boxes (see the module docstring); ``seed`` picks the synthetic scenes."""
    from catlip.data.synthetic import OBJECTS

    found = specs.resolve(spec, "detection data", DETECT_KINDS)
    if found.kind == specs.SYNTHETIC:
        return DenseData(spec, "detect", _synthetic_records(found, seed), list(OBJECTS), has_masks=True)
    if found.kind == specs.JSON:
        return _open_coco(found.path, images)
    skipped: Counter = Counter()
    class_file = _class_file(found, classes)
    names = read_class_file(class_file).names
    records = _shard_records(found, BOX_EXT, skipped)
    if not records:
        raise DataError(f"{spec}: no image with a .json box member found ({dict(skipped) or 'empty'})")
    data = DenseData(spec, "detect", records, names, skipped=skipped)
    _check_det_classes(data, class_file)
    return data


def _check_det_classes(data: DenseData, class_file: Path) -> None:
    reader, labels = _Reader(), []
    for rec in data.records[:_CHECK_SAMPLES * 4]:
        ann = _parse_box_json(reader.read(rec.target))
        labels += ann[1] if ann else []
    if labels and not any(0 <= label < data.num_classes for label in labels):
        raise DataError(f"class list {class_file} ({data.num_classes} classes) matches none of the labels of "
                        f"{data.spec} (labels seen: {', '.join(str(v) for v in sorted(set(labels))[:10])})")


def _coco_image_folder(path: Path, images: str | Path | None) -> Path:
    if images is not None:
        folder = Path(images)
        if not folder.is_dir():
            raise DataError(f"image folder {folder} not found")
        return folder
    split = path.stem.split("_", 1)[-1]  # instances_val2017 -> val2017
    for folder in (path.parent / split, path.parent.parent / split, path.parent / "images", path.parent.parent / "images"):
        if folder.is_dir():
            return folder
    raise DataError(f"{path}: image folder not found (tried {split}/ and images/ beside it and beside its folder); "
                    "give it with --images DIR")


def _open_coco(path: Path, images: str | Path | None) -> DenseData:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        cats = sorted(obj["categories"], key=lambda c: c["id"])
        imgs, anns = obj["images"], obj.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a COCO instances file ({type(err).__name__}: {err})") from None
    folder = _coco_image_folder(path, images)
    index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[Any, list] = {}
    skipped: Counter = Counter()
    for a in anns:
        if a.get("iscrowd"):
            skipped["crowd annotations"] += 1
            continue
        by_image.setdefault(a["image_id"], []).append(a)
    records, has_masks = [], bool(anns)
    for im in imgs:
        file = folder / im["file_name"]
        if not file.is_file():
            skipped["missing image files"] += 1
            continue
        mine = by_image.get(im["id"], [])
        has_masks = has_masks and all(a.get("segmentation") for a in mine)
        target = {"boxes": [_coco_xyxy(a.get("bbox")) for a in mine],
                  "labels": [index.get(a["category_id"], -1) for a in mine],
                  "segmentation": [a.get("segmentation") for a in mine]}
        records.append(Record(str(im["id"]), str(file), target))
    if not records:
        raise DataError(f"{path}: none of its images is in {folder}")
    return DenseData(str(path), "detect", records, [c["name"] for c in cats], has_masks=has_masks, skipped=skipped)


def _coco_xyxy(bbox: Any) -> Any:
    """COCO's [x, y, w, h] as [x0, y0, x1, y1]; anything else unchanged, for ``clean_boxes`` to count and drop."""
    if _box_problem(bbox):
        return bbox
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def holdout(data: DenseData, n: int) -> tuple[DenseData, DenseData]:
    """(all but the last ``n`` samples, the last ``n``): a fixed split in the data's own order."""
    if not 0 < n < len(data):
        raise DataError(f"--holdout {n}: must be between 1 and {len(data) - 1} ({data.spec} has {len(data)} samples)")
    return (replace(data, records=data.records[:-n], skipped=Counter(data.skipped)),
            replace(data, spec=f"{data.spec} (last {n})", records=data.records[-n:], skipped=Counter()))


# ---------------------------------------------------------------- loading one sample


def _parse_box_json(raw: bytes | None) -> tuple[list, list] | None:
    if raw is None:
        return None
    try:
        obj = json.loads(raw)
        boxes, labels = obj.get("boxes", []), obj.get("labels", [])
        if len(boxes) != len(labels):
            return None
        # a malformed box stays as it is: clean_boxes counts it by name and keeps the rest of the image
        return [[float(v) for v in b] if isinstance(b, list) else b for b in boxes], [int(v) for v in labels]
    except (ValueError, TypeError, AttributeError):
        return None


class DenseDataset(torch.utils.data.Dataset):
    """``data[i]`` -> (image, target, notes) after ``transform``; (None, None, notes) for a sample that is skipped.

    Segmentation targets are (H, W) int64 class maps (IGNORE where unlabeled); detection targets are dicts of
    ``boxes`` (N, 4) xyxy float, ``labels`` (N,) int64 (class index + 1: torchvision's 0 is background) and
    ``masks`` (N, H, W) uint8 when the data has instance masks. ``notes`` counts what was dropped or changed.
    """

    def __init__(self, data: DenseData, transform: Callable | None = None):
        self.data = data
        self.transform = transform
        self.reader = _Reader()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        notes: Counter = Counter()
        rec = self.data.records[i]
        if isinstance(rec.image, tuple) and len(rec.image) == 3 and isinstance(rec.image[0], int):
            image, target = self._synthetic(rec)
        else:
            image = decode_or_skip(self.reader.read(rec.image) or b"")
            if isinstance(image, Skip):
                notes["unreadable images"] += 1
                return None, None, notes
            target = self._seg_target(rec, image, notes) if self.data.task == "segment" else \
                self._det_target(rec, image, notes)
        if target is None:
            return None, None, notes
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target, notes

    def _synthetic(self, rec: Record):
        from catlip.data.synthetic import synthetic_dense

        seed, index, size = rec.image
        scene = synthetic_dense(index, seed, size)
        if self.data.task == "segment":
            return scene.image, torch.from_numpy(self.data.lut[np.asarray(scene.mask, dtype=np.int64)])
        masks = torch.from_numpy(np.stack([np.asarray(m, dtype=np.uint8) for m in scene.instance_masks]))
        return scene.image, {"boxes": torch.tensor(scene.boxes, dtype=torch.float32).reshape(-1, 4),
                             "labels": torch.tensor(scene.labels, dtype=torch.int64) + 1, "masks": masks}

    def _seg_target(self, rec: Record, image: Image.Image, notes: Counter) -> torch.Tensor | None:
        mask = decode_mask(self.reader.read(rec.target))
        if mask is None:
            notes["unreadable masks"] += 1
            return None
        if mask.shape != (image.height, image.width):
            notes["masks of another size than their image"] += 1
            return None
        target = self.data.lut[np.minimum(mask, 65535)]
        outside = int(((target == IGNORE) & (mask != 0)).sum())
        if outside:
            notes["pixels with ids outside the class list"] += outside
            notes["masks with ids outside the class list"] += 1
        return torch.from_numpy(target)

    def _det_target(self, rec: Record, image: Image.Image, notes: Counter) -> dict | None:
        if isinstance(rec.target, dict):
            boxes, labels, segs = rec.target["boxes"], rec.target["labels"], rec.target["segmentation"]
        else:
            parsed = _parse_box_json(self.reader.read(rec.target))
            if parsed is None:
                notes["unreadable box files"] += 1
                return None
            (boxes, labels), segs = parsed, None
        return clean_boxes(boxes, labels, image.width, image.height, self.data.num_classes, notes, segs,
                           self.data.has_masks)


def clean_boxes(boxes: list, labels: list, width: int, height: int, num_classes: int, notes: Counter,
                segs: list | None = None, with_masks: bool = False) -> dict:
    """Clip boxes to the image, drop those with no area or an unknown label (counted); torchvision's target."""
    kept_boxes, kept_labels, kept_segs = [], [], []
    for i, (box, label) in enumerate(zip(boxes, labels)):
        if not 0 <= label < num_classes:
            notes["boxes with labels outside the class list"] += 1
            continue
        problem = _box_problem(box)
        if problem:
            notes[problem] += 1
            continue
        x0, y0, x1, y1 = box
        clipped = [min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width),
                   min(max(y1, 0.0), height)]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            notes["boxes with no area"] += 1
            continue
        if clipped != [x0, y0, x1, y1]:
            notes["boxes clipped to the image"] += 1
        kept_boxes.append(clipped)
        kept_labels.append(label + 1)
        kept_segs.append(segs[i] if segs else None)
    if not kept_boxes:
        notes["images without boxes (kept as background)"] += 1
    target = {"boxes": torch.tensor(kept_boxes, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor(kept_labels, dtype=torch.int64)}
    if with_masks:
        target["masks"] = _coco_masks(kept_segs, height, width)
    return target


def _box_problem(box: Any) -> str | None:
    """Why ``box`` is no box at all (a note's name), or None: clipping cannot repair a NaN or a missing corner."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return "boxes without 4 coordinates"
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in box):
        return "boxes with coordinates that are not numbers"
    if not all(math.isfinite(v) for v in box):
        return "boxes with non-finite coordinates"  # NaN passes every comparison test below unchanged
    return None


def _coco_masks(segs: list, height: int, width: int) -> torch.Tensor:
    """COCO polygons / RLE -> (N, H, W) uint8 (pycocotools)."""
    from pycocotools import mask as mask_utils

    out = np.zeros((len(segs), height, width), dtype=np.uint8)
    for i, seg in enumerate(segs):
        if not seg:
            continue
        if isinstance(seg, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = seg
        out[i] = mask_utils.decode(rle)
    return torch.from_numpy(out)


# ---------------------------------------------------------------- transforms (torchvision v2, joint)


def seg_train_transform(size: int, scale: tuple[float, float] = (0.5, 2.0), mean=None, std=None) -> Callable:
    """Random short-side resize (scale x size), random size x size crop (padded with IGNORE), horizontal flip,
    normalisation (``mean``/``std``: the run's, default CLIP's): image and mask move together
    (``tv_tensors.Mask`` is resized with nearest neighbours)."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from catlip.data.transforms import MEAN, STD

    low, high = max(1, round(size * scale[0])), max(1, round(size * scale[1]))
    joint = v2.Compose([
        v2.RandomResize(low, high + 1),  # the shorter side, uniform in [low, high] (the upper bound is exclusive)
        v2.RandomCrop(size, pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}),
        v2.RandomHorizontalFlip(),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(mean or MEAN, std or STD),
    ])

    def apply(image: Image.Image, mask: torch.Tensor):
        img, m = joint(tv_tensors.Image(v2.functional.pil_to_tensor(image)), tv_tensors.Mask(mask))
        return img.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor).long()

    return apply


def seg_eval_transform(size: int, mean=None, std=None) -> Callable:
    """Shorter side to ``size`` (aspect kept) and normalised; the mask stays at full resolution (metrics are
    computed on the original pixels)."""
    from torchvision.transforms import v2

    from catlip.data.transforms import MEAN, STD

    prep = v2.Compose([v2.PILToTensor(), v2.Resize(size, antialias=True),
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean or MEAN, std or STD)])
    return lambda image, mask: (prep(image), mask)


def det_train_transform(size: int, scale: tuple[float, float] = (0.1, 2.0)) -> Callable:
    """ViTDet's large-scale jitter: resize into size x size times a random scale, random size x size crop
    (padded), horizontal flip; boxes and instance masks follow, boxes cut to nothing are dropped."""
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    joint = v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.ScaleJitter((size, size), scale_range=scale),
        v2.RandomCrop(size, pad_if_needed=True),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
    ])

    def apply(image: Image.Image, target: dict):
        h, w = image.height, image.width
        sample = {"image": tv_tensors.Image(v2.functional.pil_to_tensor(image)),
                  "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(h, w)),
                  "labels": target["labels"]}
        if "masks" in target:
            sample["masks"] = tv_tensors.Mask(target["masks"])
        out = joint(sample)
        img = out.pop("image").as_subclass(torch.Tensor)
        return img, {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in out.items()}

    return apply


def det_eval_transform() -> Callable:
    """The image as float in [0, 1]; the detector resizes it and maps its boxes back to these pixels."""
    from torchvision.transforms import v2

    prep = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
    return lambda image, target: (prep(image), target)


# ---------------------------------------------------------------- batching


def collate_seg(batch: list, divisor: int = 32) -> dict[str, Any]:
    """Pad images (0) and same-size masks (IGNORE) to a common size, a multiple of ``divisor``; masks of
    different sizes (evaluation: full resolution) stay a list. ``sizes`` are the unpadded image sizes."""
    notes = sum((n for _, _, n in batch), Counter())
    good = [(img, m) for img, m, _ in batch if img is not None]
    out: dict[str, Any] = {"notes": notes, "skipped": len(batch) - len(good), "image": None, "mask": None}
    if not good:
        return out
    h = max(img.shape[-2] for img, _ in good)
    w = max(img.shape[-1] for img, _ in good)
    H, W = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    images = torch.zeros(len(good), 3, H, W)
    for i, (img, _) in enumerate(good):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
    out["image"], out["sizes"] = images, [tuple(img.shape[-2:]) for img, _ in good]
    if all(m.shape == img.shape[-2:] for img, m in good):
        masks = torch.full((len(good), H, W), IGNORE, dtype=torch.int64)
        for i, (_, m) in enumerate(good):
            masks[i, : m.shape[0], : m.shape[1]] = m
        out["mask"] = masks
    else:
        out["mask"] = [m for _, m in good]
    return out


def collate_det(batch: list) -> dict[str, Any]:
    """Lists of images and targets (torchvision detection models take lists)."""
    notes = sum((n for _, _, n in batch), Counter())
    good = [(img, t) for img, t, _ in batch if img is not None]
    return {"notes": notes, "skipped": len(batch) - len(good), "image": [img for img, _ in good] or None,
            "target": [t for _, t in good]}
