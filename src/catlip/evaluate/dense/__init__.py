"""Dense transfer (CatLIP Sections 5.2-5.3): semantic segmentation (DeepLabv3 on the backbone's last map) and
object detection (Mask R-CNN on ViTDet's simple feature pyramid), with their data, metrics and training loop.

- ``data``: webdataset shards (``<key>.jpg`` + ``<key>.seg.png`` / ``<key>.json`` boxes), ADE20k's folder
  layout, COCO ``instances_*.json`` + image folder, and the embedded synthetic scenes; joint image + mask + box
  augmentation with torchvision's v2 transforms; bad samples are skipped and counted.
- ``segment`` (task): the recipe, confusion-matrix metrics (mIoU, per-class IoU, pixel accuracy) and
  ``run_segment``; the DeepLabv3 model is ``catlip.models.dense.Segmenter``.
- ``detect`` (task): the recipe, the Faster / Mask R-CNN model, COCO AP (pycocotools) and ``run_detect``.
- ``loop``: AdamW with layer-wise lr decay, the schedules, and the resumable epoch loop both tasks share.
- ``cli``: the flags, running and printing both tasks share.
"""

TASKS = ("segment", "detect")  # the modules here that are evaluation tasks (catlip.evaluate.tasks)
