"""Small-scale reproduction of CatLIP vs CLIP (paper Fig. 4) and Transfer Init (Fig. 5) on real data, on a CPU.

Run (full, about 35 min on 2 CPU cores):   .venv/bin/python benchmarks/reproduce_small.py
Smoke run (about 2 min):                  .venv/bin/python benchmarks/reproduce_small.py --quick
Re-run with the step counts of an earlier result instead of re-measuring step times (same schedules, same seeds):
                                          .venv/bin/python benchmarks/reproduce_small.py --steps-from FILE.json

What it does:
 1. CatLIP vocabulary from the Flickr8k *train* captions (WordNet synsets in >= V_tau captions); SuperClass uses the
    whole CLIP BPE table; CLIP trains on the captions themselves (one of the 5 captions sampled per epoch).
 2. For each method, a short warm-up measures the steady-state seconds per optimizer step (data loading
    included); each wall-clock budget B becomes steps = B / step_time, so the cosine schedule knows its length.
    Every (method, budget) point is an independent run from the same seed, as in the paper's Fig. 4.
 3. Frozen features on a CIFAR-10 subset (train shard 000, first N images; test shard, first M images; the
    shards are shuffled), a logistic linear probe (lr / weight-decay grid chosen on a held-out split, then refit)
    for every run and for the random-init backbone (the floor).
 4. Random Init vs Transfer Init probes at 1 %, 10 % and 100 % of the probe training set on the longest CatLIP
    and SuperClass runs (3 seeds at 1 % and 10 %), with the class-mapping coverage; zero-shot accuracy of the
    heads (CatLIP, SuperClass) and of CLIP's text tower as the "no labels" point.
 5. Ablation at the shortest budget (step count fixed to CatLIP's there): V_tau, learning rates, gradient clipping.

Outputs: benchmarks/results/reproduce_small[_quick].json (every number, the command, the environment), a
markdown table next to it, PNG plots under docs/results/ (--quick: benchmarks/results/reproduce_small_quick/).
Finished runs are reused from the work folder (runs/reproduce_small*) when their settings match exactly;
--fresh starts over.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CATLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))
METHODS = ("catlip", "superclass", "clip")
COLORS = {"catlip": "tab:red", "superclass": "tab:green", "clip": "tab:blue", "random": "gray"}
STEM = "reproduce_small"

# Table 6(a) of the paper for CatLIP and CLIP; SuperClass follows its own recipe (configs/superclass_vit_b16.yaml).
METHOD_RECIPES = {
    "catlip": ["method.name=catlip", "optim.lr=0.002", "optim.betas=[0.9,0.999]", "optim.weight_decay=0.2"],
    "superclass": ["method.name=superclass", "optim.lr=0.0005", "optim.betas=[0.9,0.98]", "optim.eps=1e-6",
                   "optim.weight_decay=0.2"],
    "clip": ["method.name=clip", "optim.lr=0.0005", "optim.betas=[0.9,0.98]", "optim.weight_decay=0.2"],
}


# ---------------------------------------------------------------- settings


@dataclasses.dataclass
class Scale:
    """Everything that differs between --quick and the full run."""

    image_size: int
    backbone_kwargs: str
    text: list[str]
    batch_size: int
    budgets: list[float]
    warmup_steps: int
    probe_train: int
    probe_test: int
    probe_epochs: int
    transfer_seeds: list[int]
    vocab_min_count: int
    ablation_min_counts: list[int]
    shards: str
    train_images: int
    work: Path
    out_json: Path
    plot_dir: Path


def full_scale() -> Scale:
    return Scale(
        image_size=48, backbone_kwargs="{patch_size: 8, embed_dim: 128, depth: 4, num_heads: 4}",
        text=["model.embed_dim=128", "model.text_width=128", "model.text_layers=4", "model.text_heads=4",
              "data.context_length=32"],
        batch_size=128, budgets=[50.0, 100.0, 200.0], warmup_steps=16, probe_train=10000, probe_test=5000,
        probe_epochs=30, transfer_seeds=[0, 1, 2], vocab_min_count=5, ablation_min_counts=[20, 500, 100, 1],
        shards="flickr8k-train-{000..005}.tar", train_images=6000, work=ROOT / "runs" / STEM,
        out_json=ROOT / "benchmarks" / "results" / f"{STEM}.json", plot_dir=ROOT / "docs" / "results")


def quick_scale() -> Scale:
    return Scale(
        image_size=32, backbone_kwargs="{patch_size: 8, embed_dim: 64, depth: 2, num_heads: 2}",
        text=["model.embed_dim=64", "model.text_width=64", "model.text_layers=2", "model.text_heads=2",
              "data.context_length=32"],
        batch_size=32, budgets=[2.0, 4.0, 8.0], warmup_steps=5, probe_train=600, probe_test=300, probe_epochs=10,
        transfer_seeds=[0], vocab_min_count=5, ablation_min_counts=[20], shards="flickr8k-train-000.tar",
        train_images=1000, work=ROOT / "runs" / f"{STEM}_quick",
        out_json=ROOT / "benchmarks" / "results" / f"{STEM}_quick.json",
        plot_dir=ROOT / "benchmarks" / "results" / f"{STEM}_quick")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Small-scale CatLIP vs SuperClass vs CLIP on Flickr8k at equal wall-clock budgets, linear "
                    "probes on CIFAR-10, Random vs Transfer Init (paper Figs. 4-5). Writes JSON, PNGs, markdown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model, budgets of seconds, small probe sets (smoke run)")
    p.add_argument("--budgets", help="comma list of wall-clock seconds per pre-training run (default: 50,100,200; "
                                     "--quick: 2,4,8)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of methods to pre-train")
    p.add_argument("--probe-train", type=int, help="CIFAR-10 training images for the probes (default 10000)")
    p.add_argument("--probe-test", type=int, help="CIFAR-10 test images (default 5000)")
    p.add_argument("--vocab-min-count", type=int, help="V_tau of the CatLIP vocabulary (default 5)")
    p.add_argument("--steps-from", help="take each run's step count from this earlier result JSON (no warm-up)")
    p.add_argument("--no-ablation", action="store_true", help="skip the V_tau / learning-rate ablation")
    p.add_argument("--no-transfer", action="store_true", help="skip Random vs Transfer Init and zero-shot")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes of the pre-training runs")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--data", default=str(SHARED), help="shared data folder (flickr8k/, cifar10/)")
    p.add_argument("--work", help="folder for runs, vocabularies and cached features")
    p.add_argument("--output", help="result JSON (PNGs go into a folder of the same name unless --plots is given)")
    p.add_argument("--plots", help="folder for the PNG plots")
    p.add_argument("--fresh", action="store_true", help="delete the work folder first (no reuse of finished runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars while extracting features")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="[METHOD:]KEY=VALUE",
                   help="extra config override for every method, or for one (catlip:optim.lr=0.006); repeatable")
    p.add_argument("--deadline", help="UTC HH:MM: skip ablation variants that would not finish by then")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> Scale:
    s = quick_scale() if args.quick else full_scale()
    if args.budgets:
        s.budgets = [float(b) for b in args.budgets.split(",") if b]
    s.probe_train = args.probe_train or s.probe_train
    s.probe_test = args.probe_test or s.probe_test
    s.vocab_min_count = args.vocab_min_count or s.vocab_min_count
    if args.work:
        s.work = Path(args.work).resolve()
    if args.output:
        s.out_json = Path(args.output).resolve()
        s.plot_dir = s.out_json.with_suffix("")
    if args.plots:
        s.plot_dir = Path(args.plots).resolve()
    return s


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# ---------------------------------------------------------------- configs and vocabularies


def common_overrides(s: Scale, args: argparse.Namespace) -> list[str]:
    shards = str(Path(args.data) / "flickr8k" / s.shards)
    return [
        # quoted: the brace pattern would otherwise read as a YAML mapping
        f"data.train=['{shards}']", f"data.image_size={s.image_size}", f"data.batch_size={s.batch_size}",
        f"data.num_workers={args.workers}", "data.augment=rrc_flip", "data.rrc_scale_min=0.5",
        "model.backbone=vit_tiny_patch16_224", f"model.backbone_kwargs={s.backbone_kwargs}", *s.text,
        "optim.min_lr_ratio=0.01", "optim.clip_grad=1.0", "train.precision=fp32", "train.device=cpu",
        "train.seed=0", "train.progress=false", "train.tensorboard=false", "train.keep_checkpoints=1",
    ]


def user_overrides(items: list[str], method: str) -> list[str]:
    out = []
    for item in items:
        head, _, rest = item.partition(":")
        if rest and head in METHODS and "=" not in head:
            if head == method:
                out.append(rest)
        else:
            out.append(item)
    return out


def catlip_vocab(s: Scale, args: argparse.Namespace, min_count: int):
    """The CatLIP vocabulary of the Flickr8k training captions at V_tau = min_count (cached in the work folder)."""
    import webdataset as wds

    from catlip.labels.vocab import Vocabulary, build_vocabulary

    path = s.work / f"vocab-catlip-mc{min_count}.json"
    if path.is_file():
        return Vocabulary.load(path)
    shards = [Path(u) for u in wds.shardlists.expand_urls(str(Path(args.data) / "flickr8k" / s.shards))]
    t = time.perf_counter()
    vocab, _ = build_vocabulary(shards, "catlip", {}, min_count=min_count, workers=2)
    say(f"CatLIP vocabulary V_tau={min_count}: {len(vocab)} synsets from {vocab.num_captions} captions "
        f"({time.perf_counter() - t:.1f}s)")
    path.parent.mkdir(parents=True, exist_ok=True)
    vocab.save(path)
    return vocab


def vocab_for(method: str, s: Scale, args, min_count: int):
    if method == "catlip":
        return catlip_vocab(s, args, min_count)
    if method == "superclass":
        from catlip.labels.vocab import Vocabulary

        return Vocabulary.full_bpe()
    return None


def prior_only_loss(vocab) -> float | None:
    """CatLIP's BCE (summed over classes) of a model that predicts each label's caption frequency for every image:
    the loss reached by learning the label prior alone, with nothing image-specific."""
    import math

    if vocab is None or vocab.method != "catlip":
        return None
    probs = [c / vocab.num_captions for c in vocab.counts]
    return sum(-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in probs if 0 < p < 1)


def head_bias(vocab) -> list[str]:
    """CatLIP starts every sigmoid at the label prior (mean kept labels per caption / V), see models.heads."""
    if vocab is None or vocab.method != "catlip":
        return []
    from catlip.models.heads import prior_bias

    per_caption = sum(vocab.counts) / max(1, vocab.num_captions)
    return [f"model.head_bias_init={prior_bias(len(vocab), per_caption):.4f}"]


# ---------------------------------------------------------------- pre-training


def read_metrics(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def train(overrides: list[str], vocab, run_dir: Path) -> float:
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    cfg = load_config(None, overrides + [f"train.output_dir={run_dir}"])
    t = time.perf_counter()
    pretrain(cfg, vocab)
    return time.perf_counter() - t


def measure_step_time(method: str, overrides: list[str], vocab, s: Scale) -> dict:
    """Seconds per optimizer step in steady state (data loading included): median gap between consecutive steps
    after the first quarter (worker start-up, prefetched batches)."""
    run_dir = s.work / f"warmup-{method}"
    shutil.rmtree(run_dir, ignore_errors=True)
    n = s.warmup_steps
    extra = [f"optim.steps={10 * n}", f"optim.warmup_steps={n}", f"train.stop_after={n}", "train.log_every=1",
             f"train.ckpt_every={10 * n}"]
    wall = train(overrides + extra, vocab, run_dir)
    times = [r["time"] for r in read_metrics(run_dir)]
    gaps = [b - a for a, b in zip(times, times[1:])][max(1, n // 4):]
    step_time = statistics.median(gaps)
    shutil.rmtree(run_dir, ignore_errors=True)
    say(f"warm-up {method}: {step_time:.3f} s/step over {len(gaps)} steps (warm-up wall {wall:.1f}s)")
    return {"step_time_s": step_time, "gaps_s": [round(g, 4) for g in gaps], "warmup_wall_s": round(wall, 2),
            "load_avg": os.getloadavg()}


def run_record(run_dir: Path, overrides: list[str]) -> dict | None:
    """A finished run with exactly these settings, or None."""
    path = run_dir / "record.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    return rec if rec.get("overrides") == overrides else None


def pretrain_point(name: str, method: str, overrides: list[str], steps: int, vocab, s: Scale,
                   budget: float | None) -> dict:
    """One independent pre-training run of ``steps`` steps; its record (wall-clock, epochs, loss) is cached."""
    run_dir = s.work / name
    full = overrides + [f"optim.steps={steps}", f"optim.warmup_steps={max(2, steps // 10)}",
                        f"train.ckpt_every={steps}", f"train.log_every={max(1, min(10, steps // 10))}"]
    rec = run_record(run_dir, full)
    if rec is not None:
        say(f"{name}: reusing finished run ({rec['steps']} steps, {rec['wall_s']:.0f}s)")
        return rec
    shutil.rmtree(run_dir, ignore_errors=True)
    say(f"{name}: {method}, {steps} steps" + (f" for a {budget:.0f}s budget" if budget else ""))
    load_before = os.getloadavg()
    wall = train(full, vocab, run_dir)
    metrics = [r for r in read_metrics(run_dir) if "loss" in r]
    last = metrics[-1]
    loop = (last["time"] - metrics[0]["time"]) / max(1, last["step"] - metrics[0]["step"])
    rec = {"name": name, "method": method, "budget_s": budget, "steps": steps, "wall_s": round(wall, 2),
           "step_time_s_actual": round(loop, 4), "samples_seen": last["samples"],
           "epochs": round(last["samples"] / s.train_images, 3), "first_loss": metrics[0]["loss"],
           "final_loss": last["loss"], "vocab_size": len(vocab) if vocab is not None else None,
           "prior_only_loss": prior_only_loss(vocab),
           "skipped_samples": last.get("skipped", 0), "load_avg_before": load_before,
           "load_avg_after": os.getloadavg(), "run_dir": rel(run_dir), "overrides": full}
    (run_dir / "record.json").write_text(json.dumps(rec, indent=1))
    say(f"{name}: done in {wall:.1f}s wall ({loop:.3f} s/step), {rec['epochs']:.2f} epochs, "
        f"loss {rec['first_loss']:.3f} -> {rec['final_loss']:.3f}")
    return rec


# ---------------------------------------------------------------- CIFAR-10 features and probes


class _InMemory:
    """Decoded, transformed CIFAR-10 images held as one tensor (a map-style dataset for extract_features)."""

    def __init__(self, images, targets):
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])


def load_cifar(path: Path, n: int, size: int, tag: str):
    """The first ``n`` readable images of a shard (the shards are shuffled, so this is a random sample)."""
    import torch

    from catlip.evaluate.datasets import LabelledData, eval_transform, open_labelled

    data = open_labelled(str(path), path.parent / "classes.txt", eval_transform(size))
    images, targets, skipped = [], [], 0
    for img, target in data.dataset:
        if img is None or target < 0:
            skipped += 1
            continue
        images.append(img)
        targets.append(target)
        if len(images) == n:
            break
    x, y = torch.stack(images), torch.tensor(targets)
    say(f"CIFAR-10 {tag}: {len(y)} images from {path.name} ({skipped} skipped), per class {torch.bincount(y).tolist()}")
    return LabelledData(f"{path.name}[:{n}]@{size}", _InMemory(x, y), data.classes)


def features(model, data, cache: Path, progress: bool):
    from catlip.evaluate.features import cached_features

    return cached_features(model.encoder(), data, cache, weights_id=model.weights_id(),
                           transform_id=f"eval{model.image_size}", batch_size=500, num_workers=0, device="cpu",
                           progress=progress, desc=f"features {data.spec}")


def probe(train_f, test_f, num_classes: int, epochs: int, seed: int = 0, init=None) -> dict:
    from catlip.evaluate.linear_probe import ProbeConfig, score, train_probe

    fit = train_probe(train_f, num_classes, ProbeConfig(epochs=epochs, seed=seed), init=init, device="cpu")
    return {**score(fit.linear, test_f), "lr": fit.lr, "weight_decay": fit.weight_decay, "val_top1": fit.val_score}


def standardize(train_f, test_f):
    """z-score every feature with the probe-training statistics (MAE's linear probe does the same with a BatchNorm
    without affine). Without it the probe's fixed epochs and lr grid under-fit features of small scale: in a pilot,
    SuperClass's pooled features (std 0.01-0.06) probed 28.9 % raw and 37.5 % standardized."""
    from catlip.evaluate.features import Features

    mean, std = train_f.x.mean(0), train_f.x.std(0).clamp_min(1e-6)
    return (Features((train_f.x - mean) / std, train_f.y), Features((test_f.x - mean) / std, test_f.y), mean, std)


def standardized_init(linear, mean, std, mapped):
    """The same classifier on standardized inputs for the transferred rows: W' = W * std, b' = b + W @ mean
    (identical logits). Unmapped rows keep the seeded random init, exactly as in the Random Init probe."""
    import torch

    with torch.no_grad():
        linear.bias[mapped] += linear.weight[mapped] @ mean
        linear.weight[mapped] *= std
    return linear


def probe_model(spec: str, cifar: tuple, s: Scale, args) -> tuple[dict, object, tuple]:
    from catlip.evaluate.model import load_eval_model

    model = load_eval_model(spec)
    t = time.perf_counter()
    tr = features(model, cifar[0], s.work / "features", not args.no_progress)
    te = features(model, cifar[1], s.work / "features", not args.no_progress)
    t_feat = time.perf_counter() - t
    from catlip.evaluate.linear_probe import knn_accuracy

    n = cifar[0].num_classes
    res = probe(*standardize(tr, te)[:2], n, s.probe_epochs)  # the main number (see standardize)
    res.update(raw=probe(tr, te, n, s.probe_epochs), knn_top1=knn_accuracy(tr, te, n)["top1"],
               feature_dim=int(tr.x.shape[1]), feature_std=[float(tr.x.std(0).min()), float(tr.x.std(0).max())],
               features_s=round(t_feat, 1), probe_s=round(time.perf_counter() - t - t_feat, 1))
    return res, model, (tr, te)


def transfer_study(model, feats: tuple, classes, s: Scale) -> dict:
    """Random Init vs Transfer Init linear probes at 1 %, 10 %, 100 % of the probe training set."""
    from catlip.evaluate.linear_probe import _random_linear, balanced_subset
    from catlip.evaluate.transfer_init import map_classes, transfer_init
    from catlip.evaluate.zero_shot import head_zero_shot
    import torch

    weight, bias = model.head_weight("Transfer Init")
    report = map_classes(classes, model.vocab, dataset="cifar10")
    out = {"coverage": report.to_dict(), "coverage_summary": report.summary(),
           "zero_shot_head": head_zero_shot(feats[1], weight, bias, report),
           "zero_shot_head_no_bias": head_zero_shot(feats[1], weight, bias, report, use_bias=False), "rows": []}
    if model.vocab.method == "catlip":  # how often each CIFAR-10 class's synset occurs in the training captions
        out["caption_counts"] = {m.name: [int(model.vocab.counts[i]) for i in m.rows] for m in report.classes}
    tr, te, mean, std = standardize(*feats)
    mapped = torch.tensor([bool(m.rows) for m in report.classes])
    say(report.summary())
    for fraction in (0.01, 0.1, 1.0):
        for seed in (s.transfer_seeds if fraction < 1 else s.transfer_seeds[:1]):
            sub = tr.subset(balanced_subset(tr.y, fraction=fraction, seed=seed))
            for init in ("random", "transfer"):
                lin = (standardized_init(transfer_init(weight, bias, report, seed), mean, std, mapped) if init == "transfer"
                       else _random_linear(tr.x.shape[1], len(classes), seed))
                r = probe(sub, te, len(classes), s.probe_epochs, seed=seed, init=lin)
                out["rows"].append({"fraction": fraction, "seed": seed, "init": init, "n_train": len(sub), **r})
    out["summary"] = summarise_transfer(out["rows"])
    return out


def summarise_transfer(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["fraction"], r["init"]), []).append(r["top1"])
    return [{"fraction": f, "init": i, "top1_mean": statistics.mean(v),
             "top1_std": statistics.stdev(v) if len(v) > 1 else 0.0, "seeds": len(v)}
            for (f, i), v in sorted(groups.items())]


def clip_zero_shot(model, test_data, s: Scale, args) -> dict:
    """CLIP's own zero-shot (text tower, prompt ensemble) on the probe test images."""
    import open_clip
    import torch

    from catlip.evaluate.features import cached_features
    from catlip.evaluate.zero_shot import clip_class_embeddings
    from catlip.evaluate.zero_shot import clip_zero_shot as zero_shot

    method = model.method

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.method = method

        def forward(self, images):
            return self.method.encode_image(images)

    feats = cached_features(Tower(), test_data, s.work / "features", weights_id="clip-" + model.weights_id(),
                            transform_id=f"eval{model.image_size}", batch_size=500, device="cpu",
                            progress=not args.no_progress)
    emb = clip_class_embeddings(method.encode_text, lambda t: open_clip.tokenize(t, model.context_length),
                                test_data.classes.names)
    return zero_shot(feats, emb)


# ---------------------------------------------------------------- plots and tables


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fig4(result: dict, out: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    floor = result["random_init"]["top1"] * 100
    for method in result["methods"]:
        pts = sorted((r for r in result["runs"] if r["method"] == method), key=lambda r: r["steps"])
        acc = [r["probe"]["top1"] * 100 for r in pts]
        for ax, key in zip(axes, ("epochs", "wall_s")):
            ax.plot([r[key] for r in pts], acc, "o-", color=COLORS[method], label=method)
    for ax, label in zip(axes, ("pre-training epochs over the Flickr8k train photos", "pre-training wall-clock (s)")):
        ax.axhline(floor, ls="--", color=COLORS["random"], label="random init (floor)")
        ax.set_xlabel(label)
        ax.set_ylabel("CIFAR-10 linear probe top-1 (%)")
        ax.grid(alpha=0.3)
    axes[0].set_title("(a) accuracy vs epochs")
    axes[1].set_title("(b) accuracy vs pre-training time")
    axes[1].legend()
    fig.suptitle("Small-scale Fig. 4: tiny ViT pre-trained on Flickr8k at equal wall-clock budgets (2 CPU cores)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_fig5(result: dict, out: Path) -> None:
    plt = _pyplot()
    studies = result["transfer"]
    fig, axes = plt.subplots(1, len(studies), figsize=(5.5 * len(studies), 4), squeeze=False)
    for ax, (method, study) in zip(axes[0], studies.items()):
        fracs = sorted({r["fraction"] for r in study["summary"]})
        for k, init in enumerate(("random", "transfer")):
            rows = {r["fraction"]: r for r in study["summary"] if r["init"] == init}
            xs = [i + (k - 0.5) * 0.38 for i in range(len(fracs))]
            ax.bar(xs, [rows[f]["top1_mean"] * 100 for f in fracs], 0.38,
                   yerr=[rows[f]["top1_std"] * 100 for f in fracs], capsize=3,
                   color="lightgray" if init == "random" else COLORS[method], label=f"{init} init")
        zs = study["zero_shot_head"]["top1"] * 100
        ax.axhline(zs, ls=":", color="black", label=f"head zero-shot {zs:.1f}%")
        ax.set_xticks(range(len(fracs)), [f"{f * 100:g}%" for f in fracs])
        c = study["coverage"]["counts"]
        ax.set_title(f"{method} ({study['run']}): classes mapped exact {c['exact']}, similar {c['similar']}, "
                     f"averaged {c['averaged']}, unmapped {c['random']}", fontsize=8)
        ax.set_xlabel("share of the CIFAR-10 probe training set")
        ax.set_ylabel("linear probe top-1 (%)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Small-scale Fig. 5: Random Init vs Transfer Init linear probes (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_ablation(result: dict, out: Path) -> None:
    plt = _pyplot()
    rows = result["ablation"]["rows"]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    ax.barh([r["label"] for r in rows], [r["probe"]["top1"] * 100 for r in rows],
            color=[COLORS.get(r["method"], "gray") for r in rows])
    ax.axvline(result["random_init"]["top1"] * 100, ls="--", color="gray", label="random init")
    ax.set_xlabel("CIFAR-10 linear probe top-1 (%)")
    steps = ", ".join(f"{m} {n}" for m, n in result["ablation"]["steps"].items())
    ax.set_title(f"Ablation at the shortest budget ({result['ablation']['budget_s']:.0f}s; steps: {steps})", fontsize=9)
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(result: dict) -> str:
    lines = [f"Command: `{result['command']}`", "",
             f"Random-init backbone (floor): **{pct(result['random_init']['top1'])}%** top-1 (raw "
             f"{pct(result['random_init']['raw']['top1'])}, k-NN {pct(result['random_init']['knn_top1'])})", "",
             "Probe = logistic probe on standardized features (main number); raw = same probe on raw features; "
             "k-NN = 20-NN cosine vote on raw features.", "",
             "| method | budget (s) | steps | s/step | wall (s) | epochs | loss first → last (prior-only) | "
             "probe top-1 (%) | raw | k-NN |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(result["runs"], key=lambda r: (result["methods"].index(r["method"]), r["steps"])):
        prior = f" ({r['prior_only_loss']:.3f})" if r.get("prior_only_loss") else ""
        lines.append(f"| {r['method']} | {r['budget_s']:.0f} | {r['steps']} | {r['step_time_s_actual']:.3f} | "
                     f"{r['wall_s']:.0f} | {r['epochs']:.2f} | {r['first_loss']:.3f} → {r['final_loss']:.3f}{prior} | "
                     f"**{pct(r['probe']['top1'])}** | {pct(r['probe']['raw']['top1'])} | "
                     f"{pct(r['probe']['knn_top1'])} |")
    for method, study in result.get("transfer", {}).items():
        lines += ["", f"Transfer Init ({method}, run {study['run']}); head zero-shot "
                      f"{pct(study['zero_shot_head']['top1'])}% (without the head bias "
                      f"{pct(study['zero_shot_head_no_bias']['top1'])}%). {study['coverage_summary']}", "",
                  "| share | n_train | random init | transfer init |", "|---|---|---|---|"]
        by = {(r["fraction"], r["init"]): r for r in study["summary"]}
        n = {r["fraction"]: r["n_train"] for r in study["rows"]}
        for f in sorted({r["fraction"] for r in study["summary"]}):
            cells = [f"{pct(by[f, i]['top1_mean'])} ± {pct(by[f, i]['top1_std'])} ({by[f, i]['seeds']} seeds)"
                     for i in ("random", "transfer")]
            lines.append(f"| {f * 100:g}% | {n[f]} | {cells[0]} | {cells[1]} |")
    if "clip_zero_shot" in result:
        lines += ["", f"CLIP text-tower zero-shot ({result['clip_zero_shot']['run']}): "
                      f"{pct(result['clip_zero_shot']['top1'])}%"]
    if result.get("ablation"):
        ab = result["ablation"]
        steps = ", ".join(f"{m} {n}" for m, n in ab["steps"].items())
        lines += ["", f"Ablation at the shortest budget ({ab['budget_s']:.0f}s; steps: {steps}):", "",
                  "| variant | vocab | steps | wall (s) | loss last (prior-only) | probe top-1 (%) | raw | k-NN |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in ab["rows"]:
            prior = f" ({r['prior_only_loss']:.3f})" if r.get("prior_only_loss") else ""
            lines.append(f"| {r['label']} | {r.get('vocab_size') or '-'} | {r['steps']} | {r['wall_s']:.0f} | "
                         f"{r['final_loss']:.3f}{prior} | {pct(r['probe']['top1'])} | "
                         f"{pct(r['probe']['raw']['top1'])} | {pct(r['probe']['knn_top1'])} |")
        if ab.get("skipped"):
            lines.append(f"\nSkipped for time: {', '.join(ab['skipped'])}")
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import torch

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"device": "cpu", "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": git("rev-parse", "HEAD"), "src_modified": bool(git("status", "--porcelain", "--", "src")),
            "load_avg_at_start": os.getloadavg(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write(result: dict, s: Scale) -> None:
    s.out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = s.out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, s.out_json)
    s.out_json.with_suffix(".md").write_text(markdown(result))


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    s = resolve(args)
    import torch

    torch.set_num_threads(args.threads)
    if not (Path(args.data) / "flickr8k").is_dir() or not (Path(args.data) / "cifar10").is_dir():
        sys.exit(f"{STEM}: {args.data} lacks flickr8k/ or cifar10/ (set --data or CATLIP_SHARED_DATA)")
    if args.fresh:
        shutil.rmtree(s.work, ignore_errors=True)
    s.work.mkdir(parents=True, exist_ok=True)
    s.plot_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    argv_used = sys.argv[1:] if argv is None else argv
    command = f".venv/bin/python benchmarks/{STEM}.py" + "".join(" " + shlex.quote(a) for a in argv_used)
    methods = [m for m in args.methods.split(",") if m]
    result: dict = {"command": command, "env": environment(), "methods": methods,
                    "settings": {k: str(v) for k, v in dataclasses.asdict(s).items()}, "runs": []}
    common = common_overrides(s, args)
    result["settings"]["common_overrides"] = common
    result["settings"]["method_recipes"] = {m: METHOD_RECIPES[m] for m in methods}
    previous = json.loads(Path(args.steps_from).read_text()) if args.steps_from else None

    cifar_dir = Path(args.data) / "cifar10"
    cifar = (load_cifar(cifar_dir / "cifar10-train-000.tar", s.probe_train, s.image_size, "probe train"),
             load_cifar(cifar_dir / "cifar10-test-000.tar", s.probe_test, s.image_size, "probe test"))
    classes = cifar[0].classes

    # 1-2: vocabularies, step times, pre-training at equal wall-clock budgets
    vocabs = {m: vocab_for(m, s, args, s.vocab_min_count) for m in methods}
    overrides = {m: common + METHOD_RECIPES[m] + [f"data.vocab_min_count={s.vocab_min_count}"] + head_bias(vocabs[m])
                 + user_overrides(args.overrides, m) for m in methods}
    timing = {m: previous["timing"][m] if previous else measure_step_time(m, overrides[m], vocabs[m], s)
              for m in methods}
    result["timing"] = timing
    for budget in s.budgets:
        for m in methods:
            if previous:
                steps = next(r["steps"] for r in previous["runs"] if r["method"] == m and r["budget_s"] == budget)
            else:
                steps = max(2, round(budget / timing[m]["step_time_s"]))
            result["runs"].append(pretrain_point(f"{m}-b{budget:g}", m, overrides[m], steps, vocabs[m], s, budget))
    result["pretrain_total_s"] = round(time.perf_counter() - t_start, 1)

    # 3: linear probes on frozen features, random-init floor first
    from catlip.config import load_config, save_config

    recipe = s.work / "recipe.yaml"
    save_config(load_config(None, overrides[methods[0]]), recipe)
    result["random_init"], _, _ = probe_model(f"random:{recipe}", cifar, s, args)
    say(f"random-init floor: top-1 {pct(result['random_init']['top1'])}%")
    models = {}
    for r in result["runs"]:
        r["probe"], model, feats = probe_model(str(ROOT / r["run_dir"]), cifar, s, args)
        models[r["name"]] = (model, feats)
        say(f"{r['name']}: probe top-1 {pct(r['probe']['top1'])}% ({r['epochs']:.2f} epochs, {r['wall_s']:.0f}s)")
    write(result, s)
    plot_fig4(result, s.plot_dir / f"{STEM}_fig4.png")

    # 4: Random vs Transfer Init on the longest runs; zero-shot
    longest = max(s.budgets)
    if not args.no_transfer:
        result["transfer"] = {}
        for m in ("catlip", "superclass"):
            if m in methods:
                name = f"{m}-b{longest:g}"
                result["transfer"][m] = {"run": name, **transfer_study(*models[name], classes, s)}
        if "clip" in methods:
            name = f"clip-b{longest:g}"
            result["clip_zero_shot"] = {"run": name, **clip_zero_shot(models[name][0], cifar[1], s, args)}
        write(result, s)
        if result["transfer"]:
            plot_fig5(result, s.plot_dir / f"{STEM}_fig5.png")
    models.clear()

    # 5: ablation at the shortest budget, all at CatLIP's step count there
    if not args.no_ablation and "catlip" in methods:
        short = min((r for r in result["runs"] if r["method"] == "catlip"), key=lambda r: r["steps"])
        result["ablation_budget_est_s"] = short["wall_s"] + short["probe"]["features_s"] + short["probe"]["probe_s"]
        result["ablation"] = ablation(result, s, args, common, cifar)
        write(result, s)
        plot_ablation(result, s.plot_dir / f"{STEM}_ablation.png")
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    result["env"]["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(result, s)
    say(f"done in {result['total_s']:.0f}s: {rel(s.out_json)}")
    print(markdown(result))
    return result


def ablation(result: dict, s: Scale, args, common: list[str], cifar) -> dict:
    """Does the CatLIP/CLIP gap come from V_tau (vocabulary size), the learning rates, or the loss scale (which
    AdamW ignores except through gradient clipping)? Every variant runs for its method's step count at the
    shortest budget; the list is in priority order and --deadline drops the tail."""
    shortest = min(s.budgets)
    keep = ("method", "steps", "wall_s", "final_loss", "vocab_size", "epochs", "prior_only_loss")
    base = next(r for r in result["runs"] if r["method"] == "catlip" and r["budget_s"] == shortest)
    # every variant gets its method's step count at the shortest budget, i.e. the same wall-clock
    steps = {r["method"]: r["steps"] for r in result["runs"] if r["budget_s"] == shortest}
    variants = [(f"catlip V_tau={mc}", "catlip", mc, []) for mc in s.ablation_min_counts]
    variants.insert(2, ("catlip lr 5e-4 (CLIP's)", "catlip", s.vocab_min_count, ["optim.lr=0.0005"]))
    if "clip" in result["methods"]:
        variants.insert(3, ("clip lr 2e-3 (CatLIP's)", "clip", s.vocab_min_count, ["optim.lr=0.002"]))
    variants.insert(4, ("catlip no grad clipping", "catlip", s.vocab_min_count, ["optim.clip_grad=0"]))
    variants.append(("catlip lr 6e-3", "catlip", s.vocab_min_count, ["optim.lr=0.006"]))
    rows = [{"label": f"catlip V_tau={s.vocab_min_count} (main run)", **{k: base[k] for k in keep},
             "probe": base["probe"]}]
    clip_short = next((r for r in result["runs"] if r["method"] == "clip" and r["budget_s"] == shortest), None)
    if clip_short is not None:
        rows.append({"label": f"clip (main run, {clip_short['steps']} steps)", **{k: clip_short[k] for k in keep},
                     "probe": clip_short["probe"]})
    skipped = []
    for label, method, mc, extra in variants:
        if args.deadline and time.time() + 1.2 * result["ablation_budget_est_s"] > deadline_epoch(args.deadline):
            skipped.append(label)
            say(f"ablation {label}: skipped, it would not finish before {args.deadline} UTC")
            continue
        vocab = vocab_for(method, s, args, mc)
        ov = common + METHOD_RECIPES[method] + [f"data.vocab_min_count={mc}"] + head_bias(vocab) + extra
        slug = label.split(" (")[0].replace(" ", "_").replace("=", "")
        rec = pretrain_point(f"ablation-{slug}", method, ov, steps[method], vocab, s, None)
        probe_res, _, _ = probe_model(str(ROOT / rec["run_dir"]), cifar, s, args)
        rows.append({"label": label, **{k: rec[k] for k in keep}, "probe": probe_res, "overrides": extra})
        say(f"ablation {label}: probe top-1 {pct(probe_res['top1'])}%")
    return {"steps": steps, "budget_s": shortest, "rows": rows, "skipped": skipped}


def deadline_epoch(hhmm: str) -> float:
    """Seconds since the epoch of the next HH:MM UTC (today, or tomorrow if already past by more than 12 h)."""
    import calendar

    h, m = (int(x) for x in hhmm.split(":"))
    now = time.gmtime()
    t = calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, h, m, 0))
    return t + 86400 if t < time.time() - 12 * 3600 else t


if __name__ == "__main__":
    main()
