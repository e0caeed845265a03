"""catlip's zero-shot and retrieval numbers agree with CLIP_benchmark's own metric functions.

A tiny CLIP run is pre-trained here and exported for open_clip. ``catlip zeroshot`` and ``catlip retrieval`` read
the run. CLIP_benchmark's ``zeroshot_classification.evaluate`` and ``zeroshot_retrieval.evaluate`` read the
export, through open_clip's own loader, preprocessing and tokenizer. Both see the same images from the same local
shards: CIFAR-10 test images, and Flickr8k test photos with their five captions. Nothing is downloaded.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from catlip.cli import main

cb_classification = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification",
                                        reason="clip-benchmark is installed by scripts/setup.sh (dev)")
cb_retrieval = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
TOL = 0.001  # 0.1 point
COMMON = ["--workers", "0", "--no-progress", "--batch-size", "16"]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A CLIP run of configs/clip_tiny_cpu.yaml, a few steps, and its open_clip export."""
    root = tmp_path_factory.mktemp("cb")
    run, export = root / "run", root / "open_clip"
    assert main(["pretrain", "--config", str(ROOT / "configs" / "clip_tiny_cpu.yaml"), "optim.steps=4",
                 "optim.warmup_steps=1", "data.synthetic_size=64", "data.batch_size=16", "data.num_workers=0",
                 "train.progress=false", "train.tensorboard=false", f"train.output_dir={run}"]) == 0
    assert main(["export", str(run), "--format", "open_clip", "-o", str(export)]) == 0
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{export}")
    return {"run": str(run), "model": model.eval(), "preprocess": preprocess,
            "tokenizer": open_clip.get_tokenizer(f"local-dir:{export}")}


def _first_samples(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` samples of a shard, every member kept, as a new shard."""
    with tarfile.open(src) as tf, tarfile.open(dst, "w") as out:
        keys: list[str] = []
        for m in tf:
            if not m.isfile():
                continue
            key = m.name.split(".", 1)[0]
            if key not in keys:
                if len(keys) == n:
                    break
                keys.append(key)
            data = tf.extractfile(m).read()
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dst


class _Images(torch.utils.data.Dataset):
    """(image tensor, target) of a shard's samples in stored order, decoded as PIL and preprocessed by open_clip."""

    def __init__(self, shard: Path, preprocess, target, classes=None):
        from PIL import Image

        with tarfile.open(shard) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
        keys = list(dict.fromkeys(name.split(".", 1)[0] for name in members))
        self.items = [(Image.open(io.BytesIO(members[f"{k}.jpg"])).convert("RGB"), target(members, k)) for k in keys]
        self.preprocess, self.classes = preprocess, classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image, target = self.items[i]
        return self.preprocess(image), target


def _accuracy_numpy2(output, target, topk=(1,)):
    """CLIP_benchmark 1.6.2's ``accuracy`` with its one line that numpy 2 refuses (``float()`` of a 1-element
    array) written with ``.item()``: the same counts over the same top-k."""
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def test_zero_shot_classification_agrees(clip_run, shared_data, tmp_path, monkeypatch):
    from catlip.evaluate.common.templates import load_templates

    shard = _first_samples(shared_data / "cifar10" / "cifar10-test-000.tar", tmp_path / "c.tar", 60)
    classes = (shared_data / "cifar10" / "classes.txt").read_text().split()
    out = tmp_path / "zs.json"
    assert main(["zeroshot", clip_run["run"], "--test", str(shard), "--classes",
                 str(shared_data / "cifar10" / "classes.txt"), "--templates", "simple", "-o", str(out),
                 *COMMON]) == 0
    ours = json.loads(out.read_text())
    data = _Images(shard, clip_run["preprocess"], lambda m, k: int(m[f"{k}.cls"]), classes)
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    monkeypatch.setattr(cb_classification, "accuracy", _accuracy_numpy2)
    prompts = load_templates("simple")  # open_clip's 7 "simple" prompts, given to both as the same texts
    names = [c.replace("_", " ") for c in classes]
    theirs = cb_classification.evaluate(clip_run["model"], loader, clip_run["tokenizer"], names,
                                        {n: prompts.prompts(n) for n in names}, "cpu", amp=False)
    assert ours["test_images"] == len(data) == 60
    assert abs(ours["top1"] - theirs["acc1"]) <= TOL, (ours["top1"], theirs)
    assert abs(ours["top5"] - theirs["acc5"]) <= TOL, (ours["top5"], theirs)
    assert abs(ours["mean_per_class_recall"] - theirs["mean_per_class_recall"]) <= TOL


def _captions(members: dict, key: str) -> list[str]:
    from catlip.data.formats import member_captions

    captions, _ = member_captions({ext: members[f"{key}.{ext}"] for ext in ("txt", "json")
                                   if f"{key}.{ext}" in members})
    return captions


def test_retrieval_agrees(clip_run, shared_data, tmp_path):
    shard = _first_samples(shared_data / "flickr8k" / "flickr8k-test-000.tar", tmp_path / "f.tar", 40)
    out = tmp_path / "ret.json"
    assert main(["retrieval", clip_run["run"], "--data", str(shard), "--ks", "1,5", "-o", str(out), *COMMON]) == 0
    ours = json.loads(out.read_text())
    data = _Images(shard, clip_run["preprocess"], _captions)
    loader = torch.utils.data.DataLoader(data, batch_size=16, collate_fn=lambda b: (torch.stack([x for x, _ in b]),
                                                                                     [t for _, t in b]))
    theirs = cb_retrieval.evaluate(clip_run["model"], loader, clip_run["tokenizer"], "cpu", amp=False,
                                   recall_k_list=[1, 5])
    assert ours["images"] == len(data) == 40 and ours["captions"] == sum(len(t) for _, t in data.items)
    for k in (1, 5):
        assert abs(ours["image_to_text"][f"R@{k}"] - theirs[f"text_retrieval_recall@{k}"]) <= TOL, (ours, theirs)
        assert abs(ours["text_to_image"][f"R@{k}"] - theirs[f"image_retrieval_recall@{k}"]) <= TOL, (ours, theirs)
