"""`catlip detect`: object detection transfer (CatLIP Section 5.3, Table 8b), Mask R-CNN on ViTDet's simple feature
pyramid.

torchvision's ``MaskRCNN`` (or ``FasterRCNN``, its box branch alone, when the data has no instance masks) with
``catlip.models.dense.SimpleFeaturePyramid`` as the backbone: maps at strides 4-32 plus the stride-64 pool level,
one anchor size per level (``anchor_size`` x 2^level, aspect ratios 0.5/1/2), RoIAlign over the four
pyramid levels. Training uses ViTDet's large-scale jitter (``data.det_train_transform``); the detector's own
transform resizes the longer side to ``image_size``, normalises with the pre-training mean/std and maps
predictions back to the original pixels. COCO-style AP (IoU .50:.05:.95), AP50 and AP75 for boxes, and for masks
when the data has them, come from pycocotools' ``COCOeval``.

:func:`run_detect` loads the checkpoint and the data and trains (``dense.loop``); :func:`evaluate_detector` is the
evaluation of a detector on a data set. Torch is imported inside the functions (``catlip --help`` reads this
module).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catlip.config import ConfigError, from_dict, read_recipe
from catlip.evaluate.dense.cli import (add_dense_arguments, check_args, finish, overrides, print_counts,
                                       report_history)
from catlip.evaluate.dense.loop import DenseTrainConfig
from catlip.evaluate.tasks import Task
from catlip.progress import progress_bar

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from catlip.evaluate.dense.data import DenseData

DATA_HELP = ("webdataset shards with <key>.jpg + <key>.json ({\"boxes\": [[x0,y0,x1,y1]...], \"labels\": [...]}), "
             "a COCO instances_*.json (images: --images), or synthetic[:N[:SIZE]] (embedded scenes, no files)")
CLASSES_HELP = ("class names in label-index order: a JSON list (or one under \"detection\") or one per line "
                "(default: classes.json / classes.txt beside the shards; a COCO json brings its categories)")
PERCENT = ("box_AP", "box_AP50", "box_AP75", "mask_AP", "mask_AP50", "mask_AP75")
PYRAMID_LEVELS = ["0", "1", "2", "3"]  # strides 4, 8, 16, 32: the levels RoIAlign reads


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dense_arguments(p, DATA_HELP, CLASSES_HELP)
    p.add_argument("--images", help="image folder of a COCO --train json (default: found beside the json)")
    p.add_argument("--test-images", help="image folder of a COCO --test json")


def run(args: argparse.Namespace) -> dict[str, Any]:
    check_args(args)
    return finish(run_detect(args.checkpoint, args.train, args.test, args.classes, images=args.images,
                             test_images=args.test_images, config=args.config, overrides=overrides(args),
                             holdout_n=args.holdout, run_dir=args.run_dir, progress=not args.no_progress))


def _fmt(col: str, value: Any) -> Any:
    return f"{100 * value:.2f}" if col in PERCENT and isinstance(value, float) else value


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    head = "Mask R-CNN" if result["masks"] else "Mask R-CNN, box branch (no instance masks in the data)"
    print(f"detect {result['checkpoint']} ({result['method']}), {head}: {result['train_images']} train / "
          f"{result['test_images']} test images, {result['num_classes']} classes")
    report_history(result, list(PERCENT), _fmt)
    print_counts(result)


# ---------------------------------------------------------------- the recipe and the model


@dataclass
class DetectConfig(DenseTrainConfig):
    schedule: str = "multistep"
    fpn_channels: int = 256
    anchor_size: int = 32  # anchors of the stride-4 level; doubled per level up to stride 64
    box_head_dim: int = 1024  # the two-layer MLP box head's width
    scale_min: float = 0.1  # large-scale jitter range
    scale_max: float = 2.0
    masks: str = "auto"  # auto (when the training data has instance masks) | on | off
    score_thresh: float = 0.05
    detections_per_image: int = 100

    def validate(self) -> DetectConfig:
        super().validate()
        # YAML reads a bare on/off as a boolean, which the schema then turns into "True"/"False"
        self.masks = {"true": "on", "false": "off"}.get(str(self.masks).lower(), str(self.masks))
        if self.masks not in ("auto", "on", "off"):
            raise ConfigError(f"masks must be auto, on or off, got {self.masks!r}")
        if min(self.fpn_channels, self.anchor_size, self.box_head_dim, self.detections_per_image) <= 0:
            raise ConfigError("fpn_channels, anchor_size, box_head_dim and detections_per_image must be positive")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError("scale_min and scale_max must satisfy 0 < scale_min <= scale_max")
        return self


def load_detect_config(path: str | Path | None, overrides: list[str] | None = None) -> DetectConfig:
    """A recipe (``configs/detect_*.yaml``) plus ``key=value`` overrides; unknown keys are errors."""
    return from_dict(read_recipe(path, overrides), DetectConfig, "detect").validate()


def build_detector(backbone: nn.Module, num_classes: int, cfg: DetectConfig, masks: bool, mean=None,
                   std=None) -> nn.Module:
    """Faster / Mask R-CNN over the simple feature pyramid of ``backbone`` (``num_classes`` without background);
    ``mean``/``std``: the backbone's pixel normalisation (None: CLIP's)."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    from catlip.data.transforms import MEAN, STD
    from catlip.models.dense import SimpleFeaturePyramid

    pyramid = SimpleFeaturePyramid(backbone, cfg.fpn_channels, extra_pool=True)
    sizes = tuple((cfg.anchor_size * 2 ** i,) for i in range(len(PYRAMID_LEVELS) + 1))
    kwargs = dict(
        min_size=cfg.image_size, max_size=cfg.image_size, image_mean=list(mean or MEAN),
        image_std=list(std or STD),
        rpn_anchor_generator=AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes)),
        box_roi_pool=MultiScaleRoIAlign(PYRAMID_LEVELS, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(cfg.fpn_channels * 7 * 7, cfg.box_head_dim),
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
        box_score_thresh=cfg.score_thresh, box_detections_per_img=cfg.detections_per_image)
    if masks:
        from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

        # torchvision's default mask head (four 256-wide convs) feeds the predictor; num_classes goes there
        return MaskRCNN(pyramid, mask_roi_pool=MultiScaleRoIAlign(PYRAMID_LEVELS, output_size=14, sampling_ratio=2),
                        mask_predictor=MaskRCNNPredictor(256, 256, num_classes + 1), **kwargs)
    return FasterRCNN(pyramid, **kwargs)


# ---------------------------------------------------------------- COCO AP


def _rle(mask: np.ndarray) -> dict:
    import numpy as np
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def coco_ap(gts: list[dict], dets: list[dict], num_classes: int, iou_type: str = "bbox") -> dict[str, Any]:
    """COCO AP / AP50 / AP75 (pycocotools ``COCOeval``) of detections against ground truth, per image dicts:
    ``gts[i]``: ``boxes`` (N, 4) xyxy, ``labels`` (N,) 1-based, ``size`` (H, W) [, ``masks`` (N, H, W)];
    ``dets[i]``: ``boxes``, ``scores``, ``labels`` [, ``masks`` (M, H, W) binary]. None where there is no
    ground truth; 0 where there are no detections."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    segm = iou_type == "segm"
    images, anns, results = [], [], []
    for image_id, (gt, det) in enumerate(zip(gts, dets), 1):
        h, w = gt["size"]
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        for j, (box, label) in enumerate(zip(gt["boxes"].tolist(), gt["labels"].tolist())):
            x0, y0, x1, y1 = box
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(label), "iscrowd": 0,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
            if segm:
                ann["segmentation"] = _rle(gt["masks"][j].numpy())
                ann["area"] = float(gt["masks"][j].sum())
            anns.append(ann)
        for j, (box, score, label) in enumerate(zip(det["boxes"].tolist(), det["scores"].tolist(),
                                                     det["labels"].tolist())):
            x0, y0, x1, y1 = box
            res = {"image_id": image_id, "category_id": int(label), "bbox": [x0, y0, x1 - x0, y1 - y0],
                   "score": float(score)}
            if segm:
                res["segmentation"] = _rle(det["masks"][j].numpy())
            results.append(res)
    names = ("AP", "AP50", "AP75")
    if not anns:
        return dict.fromkeys(names)
    if not results:
        return dict.fromkeys(names, 0.0)
    quiet = contextlib.redirect_stdout(io.StringIO())  # pycocotools prints its progress and summary table
    with quiet:
        truth = COCO()
        truth.dataset = {"images": images, "annotations": anns,
                         "categories": [{"id": k} for k in range(1, num_classes + 1)]}
        truth.createIndex()
        found = truth.loadRes(results)
        ev = COCOeval(truth, found, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(max(v, 0.0)) for name, v in zip(names, ev.stats[:3])}


def evaluate_detector(model: nn.Module, data: DenseData, cfg: DetectConfig, device: torch.device,
                      masks: bool, progress: bool = False) -> dict[str, Any]:
    """Detections on ``data`` at the original resolution; box AP (and mask AP when ``masks``)."""
    import torch
    from torch.utils.data import DataLoader

    from catlip.evaluate.dense.data import DenseDataset, collate_det, det_eval_transform

    ds = DenseDataset(data, det_eval_transform())
    loader = DataLoader(ds, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers, collate_fn=collate_det)
    gts, dets, notes, skipped = [], [], Counter(), 0
    with torch.no_grad():
        for batch in progress_bar(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
            notes.update(batch["notes"])
            skipped += batch["skipped"]
            if batch["image"] is None:
                continue
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                outs = model([img.to(device) for img in batch["image"]])
            for img, target, out in zip(batch["image"], batch["target"], outs):
                gts.append({**target, "size": tuple(img.shape[-2:])})
                det = {k: v.float().cpu() for k, v in out.items()}
                if masks and "masks" in det:
                    det["masks"] = det["masks"][:, 0] > 0.5
                dets.append(det)
    result = {f"box_{k}": v for k, v in coco_ap(gts, dets, data.num_classes).items()}
    if masks and all("masks" in g for g in gts):
        result.update({f"mask_{k}": v for k, v in coco_ap(gts, dets, data.num_classes, "segm").items()})
    return {**result, "test_images": len(gts), "test_skipped": skipped, "test_notes": dict(notes),
            "test_boxes": int(sum(len(g["boxes"]) for g in gts))}


# ---------------------------------------------------------------- training


def _loss(model: nn.Module, batch: dict, device: torch.device, masks: bool):
    if batch["image"] is None:
        return None
    images = [img.to(device, non_blocking=True) for img in batch["image"]]
    keys = ("boxes", "labels", "masks") if masks else ("boxes", "labels")
    targets = [{k: t[k].to(device) for k in keys} for t in batch["target"]]
    losses = model(images, targets)
    return sum(losses.values()), {k: v.detach().item() for k, v in losses.items()}


def open_pair(train: str, test: str | None, classes: str | None, holdout_n: int = 0, images: str | None = None,
              test_images: str | None = None) -> tuple[DenseData, DenseData | None]:
    from catlip.evaluate.dense.data import holdout, open_detection

    train_data = open_detection(train, classes, images=images, seed=0)
    if holdout_n:
        if test:
            from catlip.errors import CliError

            raise CliError("give --test or --holdout, not both")
        return holdout(train_data, holdout_n)
    return train_data, (open_detection(test, classes, images=test_images, seed=1) if test else None)


def _use_masks(cfg: DetectConfig, train_data: DenseData) -> bool:
    if cfg.masks == "on" and not train_data.has_masks:
        from catlip.errors import DataError

        raise DataError(f"masks=on, but {train_data.spec} has no instance masks (boxes only)")
    return cfg.masks == "on" or (cfg.masks == "auto" and train_data.has_masks)


def run_detect(checkpoint: str, train_spec: str, test_spec: str | None = None, classes: str | None = None, *,
               images: str | None = None, test_images: str | None = None, config: str | None = None,
               overrides: list[str] | None = None, holdout_n: int = 0, run_dir: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Load ``checkpoint`` (or ``random:...``), train Faster / Mask R-CNN on ``train_spec``, evaluate on test."""
    import torch

    from catlip.evaluate.common.model import check_source, load_eval_model
    from catlip.evaluate.dense.data import DenseDataset, collate_det, det_train_transform
    from catlip.evaluate.dense.loop import Job, job_meta, set_drop_path, task_result, train

    check_source(checkpoint)  # before opening the data
    cfg = load_detect_config(config, overrides)
    train_data, test_data = open_pair(train_spec, test_spec, classes, holdout_n, images, test_images)
    masks = _use_masks(cfg, train_data)
    if masks and test_data is not None and not test_data.has_masks:
        test_masks = False
    else:
        test_masks = masks
    torch.manual_seed(cfg.seed)  # the pyramid's and heads' initial weights
    loaded = load_eval_model(checkpoint)
    set_drop_path(loaded.backbone, cfg.drop_path)
    model = build_detector(loaded.backbone, train_data.num_classes, cfg, masks, loaded.preprocess.mean,
                           loaded.preprocess.std)
    evaluate = None if test_data is None else partial(_evaluate, data=test_data, cfg=cfg, masks=test_masks,
                                                      progress=progress)
    meta = job_meta("detect", checkpoint, train_data, test_data, cfg, masks=masks)
    train_set = DenseDataset(train_data, det_train_transform(cfg.image_size, (cfg.scale_min, cfg.scale_max)))
    job = Job(model, loaded.backbone, train_set, collate_det, partial(_loss, masks=masks), evaluate, meta,
              desc="detect")
    out = train(job, cfg, run_dir=run_dir, progress=progress)
    return task_result(checkpoint, loaded, train_data, test_data, out, model, masks=masks)


def _evaluate(model: nn.Module, device: torch.device, *, data: DenseData, cfg: DetectConfig, masks: bool,
              progress: bool):
    return evaluate_detector(model, data, cfg, device, masks, progress)


TASK = Task(
    name="detect",
    help="object detection transfer (Mask R-CNN on a ViTDet feature pyramid, COCO AP)",
    description="Train Mask R-CNN (boxes; masks when the data has them) on ViTDet's simple feature pyramid over the "
    "backbone and report COCO box AP / AP50 / AP75 (CatLIP Section 5.3; recipe "
    "configs/detect_coco_maskrcnn_vit_b16.yaml). --set key=value overrides recipe fields.",
    add_arguments=add_arguments, run=run, report=report, order=61,
)
