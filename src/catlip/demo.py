"""`catlip demo`: a few CPU minutes that show classification pre-training learning something.

Default: the embedded synthetic scenes (no download). Build a vocabulary from their captions, pre-train a tiny ViT
with CatLIP, then compare frozen features of the trained backbone with the *same* architecture at random init by
a linear probe on the scenes' main-object class (probe images are a disjoint, differently seeded set). The
CatLIP head itself is also read as a zero-shot classifier: its logits for the ten object synsets.

With ``--data SHARDS`` the same runs on real captioned photos (e.g. Flickr8k). The probe then uses CIFAR-10
shards when they are available (``--probe-train/--probe-test``, or ``../shared/data/cifar10`` next to the repo);
otherwise only the fall of the training loss is reported.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from catlip.atomic import write_json
from catlip.methods.registry import load_config

# Mirrors configs/tiny_cpu.yaml (tests check they agree); defined here so an installed package runs the demo too.
DEMO_OVERRIDES = [
    "method.name=catlip",
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 96, depth: 3, num_heads: 3}",
    "model.head_bias_init=-3.0", "model.image_size=48",
    "data.batch_size=128", "data.synthetic_size=8192", "data.vocab_min_count=5",
    "data.augment=rrc_flip", "data.rrc_scale_min=0.5", "data.num_workers=1",
    "optim.lr=0.002", "optim.weight_decay=0.05", "optim.warmup_steps=60", "optim.steps=1200",
    "optim.min_lr_ratio=0.05", "optim.clip_grad=1.0",
    "train.precision=fp32", "train.ckpt_every=400", "train.log_every=20", "train.seed=0",
]


@dataclass
class ProbeSet:
    name: str
    train: object  # evaluate.common.datasets.LabelledData: items (image tensor | None, class)
    test: object
    num_classes: int
    size: int  # probe training images (the test split uses half as many)


class _SyntheticLabelled(torch.utils.data.Dataset):
    def __init__(self, size: int, seed: int, image_size: int):
        from catlip.data.transforms import eval_transform

        self.size, self.seed, self.image_size = size, seed, image_size
        self.tf = eval_transform(image_size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int):
        from catlip.data.synthetic import synthetic_sample

        s = synthetic_sample(i, self.seed, self.image_size)
        return self.tf(s.image), s.label


def _labelled(dataset, name: str, classes) -> object:
    """The synthetic set as an evaluation ``LabelledData`` (items ``(image tensor, class)``, like every reader's)."""
    from catlip.evaluate.common.datasets import ClassList, LabelledData

    return LabelledData(name, dataset, ClassList(list(classes)))


def _eval_model(method, vocab, image_size: int, source: str):
    """A trained or random-init method as what the evaluation tasks read (backbone, head, vocabulary)."""
    from catlip.evaluate.common.model import EvalModel

    return EvalModel(source, method.name, method.backbone, image_size, getattr(method, "head", None), vocab, method)


def _features(model, data, limit: int):
    """Frozen features of the first ``limit`` images, by the evaluation tasks' extractor (the head's pooling)."""
    from catlip.evaluate.common.features import extract_features

    return extract_features(model.encoder(), data, batch_size=256, device="cpu", progress=False, limit=limit)


def _probe(tr, te, probe: ProbeSet) -> float:
    """Top-1 (%) of the probe task's logistic regression on frozen, standardised features."""
    from catlip.evaluate.classify.linear import ProbeConfig
    from catlip.evaluate.classify.probe import linear_probe

    cfg = ProbeConfig(epochs=30, min_steps=200, lrs=[3e-3, 3e-2], weight_decays=[0.0, 1e-3])
    # standardised: the same scale for both backbones, so one lr grid fits both
    return 100.0 * linear_probe(tr, te, probe.num_classes, cfg, standardize=True)["top1"]


def _head_zero_shot(model, te, probe: ProbeSet) -> float | None:
    """Top-1 (%) of the zero-shot task's head classifier over the ten object classes (no probe training at all);
    None when the head cannot score every object class (no head, or an object missing from the vocabulary)."""
    from catlip.errors import CatlipError
    from catlip.evaluate.classify.zeroshot import head_zero_shot_of_model

    if model.head is None:
        return None
    try:
        out = head_zero_shot_of_model(model, te, probe.test.classes, dataset="synthetic objects")
    except CatlipError:
        return None
    if any(not c["rows"] for c in out["coverage"]["classes"]):
        return None
    return 100.0 * out["top1"]


def _evaluate(model, probe: ProbeSet, zero_shot: bool) -> tuple[float, float | None]:
    model.backbone.eval()
    if model.head is not None:
        model.head.eval()
    tr, te = _features(model, probe.train, probe.size), _features(model, probe.test, probe.size // 2)
    return _probe(tr, te, probe), (_head_zero_shot(model, te, probe) if zero_shot else None)


def _shared_cifar() -> Path | None:
    root = Path(os.environ.get("CATLIP_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
    folder = root / "cifar10"
    return folder if (folder / "classes.txt").exists() else None


def _probe_set(data: str | None, image_size: int, probe_train: str | None, probe_test: str | None,
               size: int) -> ProbeSet | None:
    if data is None:  # synthetic: fresh scenes from other seeds than the training set's
        from catlip.data.synthetic import OBJECTS

        return ProbeSet("synthetic objects (10 classes)",
                        _labelled(_SyntheticLabelled(size, 101, image_size), "synthetic:101", OBJECTS),
                        _labelled(_SyntheticLabelled(size // 2, 202, image_size), "synthetic:202", OBJECTS), 10, size)
    if not (probe_train and probe_test):
        cifar = _shared_cifar()
        if cifar is None:
            return None
        probe_train, probe_test = str(cifar / "cifar10-train-000.tar"), str(cifar / "cifar10-test-000.tar")
        classes = cifar / "classes.txt"
    else:
        classes = None
    from catlip.evaluate.common.datasets import eval_transform, open_labelled

    tf = eval_transform(image_size)
    tr = open_labelled(probe_train, classes, tf)
    te = open_labelled(probe_test, tr.classes, tf)
    return ProbeSet(f"{Path(probe_train).name} ({tr.num_classes} classes)", tr, te, tr.num_classes, size)


def _clear_previous(out: Path) -> None:
    """A demo run starts fresh: replace an earlier demo's folder, refuse to touch anything else."""
    import shutil

    from catlip.train.checkpoint import LOCK_NAME, RunLock

    if not out.exists() or not any(out.iterdir()):
        return
    left = {p.name for p in out.iterdir()}
    if left <= {LOCK_NAME} or (out / "demo_result.json").exists() or (out / "config.yaml").exists():
        lock = RunLock(out)
        lock.acquire()  # a demo still running there holds it: RunInUseError names it, nothing is deleted
        lock.release()
        shutil.rmtree(out)
        return
    from catlip.errors import CatlipError

    raise CatlipError(f"--output {out} exists and is not a catlip demo run; choose another folder")


def run_demo(*, data: str | None = None, steps: int | None = None, output: str = "runs/demo",
             probe_size: int = 2000, probe_train: str | None = None, probe_test: str | None = None,
             threads: int | None = None, extra: list[str] | None = None) -> dict:
    """Pre-train, probe, print the comparison table; returns the numbers (also written to demo_result.json)."""
    from catlip.methods import build_method
    from catlip.train.checkpoint import load_pretrained
    from catlip.train.loop import pretrain

    if threads:
        torch.set_num_threads(threads)
    _clear_previous(Path(output))
    t0 = time.perf_counter()
    overrides = list(DEMO_OVERRIDES) + [f"train.output_dir={output}"]
    if data:
        overrides += [f"data.train=['{data}']", "data.vocab_min_count=20"]
    if steps:  # 60 warmup steps down to 300-step runs (measured best there); a shorter run is not all warmup
        overrides += [f"optim.steps={steps}", f"optim.warmup_steps={min(60, max(1, steps // 5))}"]
    cfg = load_config(None, overrides + list(extra or []))
    probe = _probe_set(data, cfg.model.image_size, probe_train, probe_test, probe_size)
    run_dir = pretrain(cfg)
    t_train = time.perf_counter() - t0
    trained = load_pretrained(run_dir)
    vocab = trained.vocab
    torch.manual_seed(cfg.train.seed)  # the same initial weights the run started from
    random_init = build_method(cfg, len(vocab)).eval()
    losses = [json.loads(l)["loss"] for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    result = {"run_dir": str(run_dir), "vocab_size": len(vocab), "steps": cfg.optim.steps,
              "loss_first": losses[0], "loss_last": losses[-1], "train_seconds": round(t_train, 1)}
    if probe is not None:
        result["probe"] = probe.name
        size = cfg.model.image_size
        for key, model in (("random_init", _eval_model(random_init, vocab, size, "random init")),
                           ("pretrained", _eval_model(trained.method, vocab, size, str(run_dir)))):
            result[f"probe_{key}"], zs = _evaluate(model, probe, zero_shot=data is None)
            if data is None:
                result[f"head_zero_shot_{key}"] = zs
    result["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(Path(run_dir) / "demo_result.json", result, indent=1)
    print(format_result(result, vocab))
    return result


def format_result(r: dict, vocab) -> str:
    names = ", ".join(vocab.names[:12]) if vocab is not None else ""
    lines = [
        "",
        f"CatLIP demo — run dir {r['run_dir']}",
        f"vocabulary: {r['vocab_size']} WordNet synsets from the captions (most frequent: {names}, ...)",
        f"pre-training: {r['steps']} steps, loss {r['loss_first']:.3f} -> {r['loss_last']:.3f} "
        f"({r['train_seconds']:.0f} s incl. vocabulary)",
    ]
    if "probe" in r:
        rows = [("linear probe top-1 (%)", r["probe_random_init"], r["probe_pretrained"])]
        if r.get("head_zero_shot_pretrained") is not None:
            rows.append(("CatLIP head, zero-shot top-1 (%)", r["head_zero_shot_random_init"],
                         r["head_zero_shot_pretrained"]))
        lines += ["", f"evaluation on {r['probe']}, frozen backbone:",
                  f"  {'':34s} {'random init':>12s} {'CatLIP':>10s}"]
        lines += [f"  {name:34s} {a:12.1f} {b:10.1f}" for name, a, b in rows]
    else:
        lines.append("no labelled probe set found (give --probe-train/--probe-test); the loss fall is the result")
    lines.append(f"total time {r['total_seconds']:.0f} s")
    return "\n".join(lines)
