"""Small-scale study: does caption pre-training work, and how do CatLIP, SuperClass, CLIP and SuperCLIP compare?

Run (about an hour on 2 CPU cores):     .venv/bin/python benchmarks/small_study.py
Smoke run (about 2 min, CI):             .venv/bin/python benchmarks/small_study.py --quick
GPU version (larger ViT, <= 10 min):     .venv/bin/python benchmarks/small_study.py --device cuda

Phases, each resumable (a killed study continues where it stopped; finished runs and evaluations are reused
when their settings match exactly, and an unfinished pre-training run resumes from its last checkpoint):

 1. CatLIP vocabulary of the Flickr8k *train* captions; the in-domain tasks' classes are read off it.
 2. Step times of every method, measured first, on the idle machine, with data loading (``timing``).
 3. Pre-training on the 6,000 Flickr8k train photos: every method on the same backbone, data order, schedule
    and learning-rate rule, at several epoch budgets (seed 0) and with extra seeds at the largest budget.
 4. Evaluations of every run and of the random-init backbone (the floor), none of which sees a caption of the
    evaluation images in pre-training:
    - CIFAR-10 linear probe (standardized frozen features, lr/wd grid on a held-out split);
    - Flickr8k multi-label probe: the K most frequent synsets of the train captions, positives = the synsets
      any of an image's five captions names; probe trained on the dev images, mAP on the test images;
    - Flickr8k test caption retrieval (1,000 images, 5,000 captions): CLIP/SuperCLIP through the text tower,
      CatLIP/SuperClass by scoring each caption with the head's log-probabilities of its labels.
 5. Random vs Transfer Init (paper Fig. 5) on an in-domain single-label task (Flickr8k dev/test images whose
    captions name exactly one of K frequent object synsets) and on CIFAR-10, at 1/2/5/10 shots per class and
    1/10/100 %, several probe seeds, with the class-mapping coverage.

Outputs: benchmarks/results/small_study[_quick|_cuda].json (every number, the settings, the environment), a
Markdown table beside it and PNG plots (docs/results/ for the full run). Tables and plots are made by
benchmarks/small_study_report.py, which can also be run alone on a result JSON.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = Path(os.environ.get("CATLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))
STEM = "small_study"
METHODS = ("catlip", "superclass", "clip", "superclip")
HEAD_METHODS = ("catlip", "superclass")  # Transfer Init and head caption scoring

# One learning-rate rule for every method: peak lr = BASE_LR * batch / 256 (linear scaling), AdamW, weight decay
# 0.2, warm-up 10 % of the steps, cosine to 1 % of the peak. The betas follow each paper's recipe.
BASE_LR = 1e-3
METHOD_RECIPES = {
    "catlip": ["method.name=catlip", "optim.betas=[0.9,0.999]"],
    # each head row starts at its token's caption frequency: without it SuperClass's features collapse while its
    # 49k-way head learns the label prior (docs/results.md, "SuperClass over training")
    "superclass": ["method.name=superclass", "optim.betas=[0.9,0.98]", "optim.eps=1e-6", "model.head_bias=prior"],
    "clip": ["method.name=clip", "optim.betas=[0.9,0.98]"],
    "superclip": ["method.name=superclip", "optim.betas=[0.9,0.98]"],
}


@dataclasses.dataclass
class Preset:
    """Everything that differs between the CPU study, --quick and --device cuda."""

    image_size: int
    backbone: str
    backbone_kwargs: str
    text: list[str]
    batch_size: int
    epochs: list[float]  # budgets, largest last; every method at each, seed 0
    seeds: int  # pre-training seeds at the largest budget
    probe_train: int
    probe_test: int
    probe_epochs: int
    transfer_seeds: int
    shots: list[int]
    fractions: list[float]
    multilabel_k: int
    object_k: int
    train_shards: str
    train_images: int
    timing_steps: int
    workers: int
    device: str
    precision: str
    suffix: str
    methods: tuple[str, ...] = METHODS


def cpu_preset() -> Preset:
    return Preset(
        image_size=32, backbone="vit_tiny_patch16_224",
        backbone_kwargs="{patch_size: 8, embed_dim: 128, depth: 4, num_heads: 4}",
        text=["model.embed_dim=128", "model.text_width=128", "model.text_layers=2", "model.text_heads=4",
              "data.context_length=32"],
        batch_size=128, epochs=[10, 20, 30], seeds=3, probe_train=10000, probe_test=5000, probe_epochs=30,
        transfer_seeds=5, shots=[1, 2, 5, 10], fractions=[0.01, 0.1, 1.0], multilabel_k=30, object_k=8,
        train_shards="flickr8k-train-{000..005}.tar", train_images=6000, timing_steps=16, workers=1,
        device="cpu", precision="fp32", suffix="",
        # about an hour on 2 idle cores (3 methods; 10, 20 and 30 epochs, 3 seeds at 30). SuperCLIP's step costs
        # as much as CLIP's (text tower + a 49k-token head): with it the study does not fit 90 minutes on 2 cores;
        # it is in the GPU preset (and --methods adds it here)
        methods=("catlip", "superclass", "clip"))


def quick_preset() -> Preset:
    p = cpu_preset()
    p.backbone_kwargs = "{patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}"
    p.text = ["model.embed_dim=32", "model.text_width=32", "model.text_layers=1", "model.text_heads=2",
              "data.context_length=16"]
    p.batch_size, p.epochs, p.seeds = 32, [0.5, 1.0], 2
    p.probe_train, p.probe_test, p.probe_epochs = 400, 200, 5
    p.transfer_seeds, p.shots, p.fractions = 2, [1, 5], [0.1, 1.0]
    p.multilabel_k, p.object_k = 10, 3
    p.train_shards, p.train_images, p.timing_steps, p.workers = "flickr8k-train-000.tar", 1000, 4, 0
    p.suffix, p.methods = "_quick", METHODS
    return p


def cuda_preset() -> Preset:
    return Preset(
        image_size=112, backbone="vit_small_patch16_224", backbone_kwargs="{}",
        text=["model.embed_dim=384", "model.text_width=384", "model.text_layers=6", "model.text_heads=6",
              "data.context_length=32"],
        batch_size=256, epochs=[25, 50, 100], seeds=3, probe_train=50000, probe_test=10000, probe_epochs=30,
        transfer_seeds=5, shots=[1, 2, 5, 10], fractions=[0.01, 0.1, 1.0], multilabel_k=30, object_k=8,
        train_shards="flickr8k-train-{000..005}.tar", train_images=6000, timing_steps=30, workers=8,
        device="cuda", precision="bf16", suffix="_cuda")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Small-scale study of CatLIP, SuperClass, CLIP and SuperCLIP pre-trained on Flickr8k: CIFAR-10 "
                    "and in-domain probes, caption retrieval, Random vs Transfer Init, several seeds. Resumable; "
                    "writes JSON, Markdown and PNG plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model, fractions of an epoch (smoke run, ~2 min)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: the larger GPU preset (ViT-S/16 at 112 px, up to 100 epochs)")
    p.add_argument("--methods", help="comma list of methods to pre-train (default: the preset's; CPU: catlip, "
                                     "superclass, clip; --device cuda: also superclip)")
    p.add_argument("--epochs", help="comma list of epoch budgets, largest last (overrides the preset)")
    p.add_argument("--seeds", type=int, help="pre-training seeds at the largest budget (overrides the preset)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    p.add_argument("--data", default=str(SHARED), help="shared data folder (flickr8k/, cifar10/)")
    p.add_argument("--work", help="folder for runs, vocabularies and evaluation caches (default runs/small_study*)")
    p.add_argument("--output", help="result JSON (default benchmarks/results/small_study*.json)")
    p.add_argument("--plots", help="folder for the PNG plots (default docs/results/, or beside --output)")
    p.add_argument("--retime", action="store_true", help="measure the step times again (e.g. on a quieter machine)")
    p.add_argument("--fresh", action="store_true", help="delete the work folder first (no reuse)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="[METHOD:]KEY=VALUE",
                   help="extra config override for every method, or one (catlip:optim.lr=0.001); repeatable")
    return p.parse_args(argv)


def resolve(args: argparse.Namespace) -> tuple[Preset, Path, Path, Path]:
    preset = quick_preset() if args.quick else cuda_preset() if args.device == "cuda" else cpu_preset()
    if args.epochs:
        preset.epochs = [float(e) for e in args.epochs.split(",") if e]
    if args.seeds:
        preset.seeds = args.seeds
    name = STEM + preset.suffix
    work = Path(args.work).resolve() if args.work else ROOT / "runs" / name
    out = Path(args.output).resolve() if args.output else ROOT / "benchmarks" / "results" / f"{name}.json"
    default_plots = ROOT / "docs" / "results" if not (args.quick or args.output) else out.with_suffix("")
    plots = Path(args.plots).resolve() if args.plots else default_plots
    return preset, work, out, plots


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def check_data(data: Path) -> None:
    """One line and exit when a folder the study reads is missing."""
    needed = [data / "flickr8k" / f"flickr8k-{s}-000.tar" for s in ("train", "dev", "test")]
    needed += [data / "cifar10" / "cifar10-train-000.tar", data / "cifar10" / "cifar10-test-000.tar"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        sys.exit(f"{STEM}: missing data: {', '.join(missing)} (set --data or CATLIP_SHARED_DATA)")


# ---------------------------------------------------------------- vocabularies and configs


def catlip_vocab(p: Preset, data: Path, work: Path):
    """The CatLIP vocabulary (V_tau = 5) of the train captions, cached in the work folder."""
    from catlip.labels.vocab import Vocabulary, build_vocabulary
    from catlip.data.formats import expand_urls

    path = work / "vocab-catlip.json"
    if path.is_file():
        return Vocabulary.load(path)
    vocab, _ = build_vocabulary([Path(u) for u in expand_urls(str(data / "flickr8k" / p.train_shards))], "catlip", {},
                                min_count=5, workers=1)
    vocab.save(path)
    say(f"CatLIP vocabulary: {len(vocab)} synsets in >= 5 of {vocab.num_captions} train captions")
    return vocab


def bpe_vocab(p: Preset, data: Path, work: Path):
    """The full CLIP BPE table (SuperClass's classes) with each token's caption count in the train captions, so
    ``model.head_bias=prior`` can start every row at its token's frequency; cached in the work folder."""
    from catlip.data.formats import expand_urls
    from catlip.labels.vocab import Vocabulary, count_keys

    path = work / "vocab-bpe.json"
    if path.is_file():
        return Vocabulary.load(path)
    vocab = Vocabulary.full_bpe()
    counts = count_keys(expand_urls(str(data / "flickr8k" / p.train_shards)), "bpe", vocab.options)
    vocab.counts = [counts.doc_freq.get(k, 0) for k in vocab.keys]
    vocab.num_captions = counts.captions
    vocab.save(path)
    return Vocabulary.load(path)


def prior_only_losses(p: Preset, data: Path, vocabs: dict, work: Path) -> dict:
    """The training loss of a head that predicts the same label distribution for every image (the label prior,
    nothing image-specific), per classification loss: the level a run's loss must go below to have learned
    anything from the pixels. CatLIP: BCE summed over classes at each synset's caption frequency; SuperClass:
    cross-entropy of each caption's IDF-weighted token distribution against their average."""
    import math

    path = work / "prior_only.json"
    if path.is_file():
        return json.loads(path.read_text())
    v = vocabs["catlip"]
    freqs = [c / v.num_captions for c in v.counts]
    out = {"catlip": sum(-(f * math.log(f) + (1 - f) * math.log(1 - f)) for f in freqs if 0 < f < 1)}
    out["superclass"] = _idf_prior_loss(p, data, vocabs["bpe"])
    path.write_text(json.dumps(out, indent=1))
    return out


def _idf_prior_loss(p: Preset, data: Path, vocab) -> float:
    import math

    from catlip.data import formats

    ex, never = vocab.extractor(), set(vocab.source.never_targets(len(vocab)))
    n_docs = vocab.num_captions
    idf = {i: math.log((n_docs + 1) / (c + 1)) for i, c in enumerate(vocab.counts) if c and i not in never}
    targets = []
    for shard in formats.expand_urls(str(data / "flickr8k" / p.train_shards)):
        for sample in formats.TarScan(shard, read=lambda ext: ext in ("json", "txt")):
            caps, _ = formats.member_captions(sample.data)
            for cap in caps:
                ids = [i for i in set(vocab.encode(ex.extract(cap))) if i in idf]
                total = sum(idf[i] for i in ids)
                if total > 0:
                    targets.append({i: idf[i] / total for i in ids})
    marginal: dict[int, float] = {}
    for t in targets:
        for i, w in t.items():
            marginal[i] = marginal.get(i, 0.0) + w / len(targets)
    return -sum(w * math.log(marginal[i]) for t in targets for i, w in t.items()) / len(targets)


def method_vocab(method: str, vocabs: dict):
    return vocabs["catlip"] if method == "catlip" else vocabs["bpe"] if method in ("superclass", "superclip") else None


def common_overrides(p: Preset, data: Path) -> list[str]:
    lr = BASE_LR * p.batch_size / 256
    return [
        # quoted: the brace pattern would otherwise read as a YAML mapping
        f"data.train=['{data / 'flickr8k' / p.train_shards}']", f"model.image_size={p.image_size}",
        f"data.batch_size={p.batch_size}", f"data.num_workers={p.workers}", "data.augment=rrc_flip",
        "data.rrc_scale_min=0.35", "data.vocab_min_count=5", f"model.backbone={p.backbone}",
        f"model.backbone_kwargs={p.backbone_kwargs}", *p.text, f"optim.lr={lr:g}", "optim.weight_decay=0.2",
        "optim.min_lr_ratio=0.01", "optim.clip_grad=1.0", f"train.precision={p.precision}",
        f"train.device={p.device}", "train.progress=false", "train.tensorboard=false", "train.keep_checkpoints=1",
        "train.resume=auto",
    ]


def head_bias(vocab) -> list[str]:
    """CatLIP starts every sigmoid at the label prior (mean kept labels per caption / V), see models.heads."""
    if vocab is None or vocab.method != "catlip":
        return []
    from catlip.models.heads import prior_bias

    return [f"model.head_bias_init={prior_bias(len(vocab), sum(vocab.counts) / max(1, vocab.num_captions)):.4f}"]


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


def measure_step_time(method: str, overrides: list[str], vocab, p: Preset, work: Path) -> dict:
    """Steady-state seconds per optimizer step, data loading included: median gap between consecutive steps
    after the first quarter (worker start-up, prefetched batches)."""
    run_dir = work / f"timing-{method}"
    shutil.rmtree(run_dir, ignore_errors=True)
    n = p.timing_steps
    extra = [f"optim.steps={10 * n}", f"optim.warmup_steps={n}", f"train.stop_after={n}", "train.log_every=1",
             f"train.ckpt_every={10 * n}", "train.seed=0"]
    load = os.getloadavg()
    wall = train(overrides + extra, vocab, run_dir)
    times = [r["time"] for r in read_metrics(run_dir) if "loss" in r]
    gaps = [b - a for a, b in zip(times, times[1:])][max(1, n // 4):]
    shutil.rmtree(run_dir, ignore_errors=True)
    step = statistics.median(gaps)
    say(f"timing {method}: {step:.3f} s/step = {p.batch_size / step:.0f} images/s (load before {load[0]:.2f})")
    return {"step_time_s": step, "images_per_s": p.batch_size / step, "gaps_s": [round(g, 4) for g in gaps],
            "wall_s": round(wall, 2), "load_avg_before": load}


def steps_for(epochs: float, p: Preset) -> int:
    return max(4, round(epochs * p.train_images / p.batch_size))


def same_settings(stored: list[str] | None, overrides: list[str]) -> bool:
    """Whether a run recorded with ``stored`` overrides was made with these, reading a key under its deprecated
    name (runs from before model.image_size recorded data.image_size) as the key it moved to."""
    from catlip.config import MOVED_KEYS

    def renamed(item: str) -> str:
        key, sep, value = item.partition("=")
        return f"{MOVED_KEYS.get(key, key)}{sep}{value}"

    return stored is not None and [renamed(x) for x in stored] == overrides


def pretrain_run(name: str, method: str, overrides: list[str], epochs: float, seed: int, vocab, p: Preset,
                 work: Path) -> dict:
    """One pre-training run (cached: record.json when finished; resumed from its checkpoint when interrupted)."""
    run_dir = work / name
    steps = steps_for(epochs, p)
    full = overrides + [f"train.seed={seed}", f"optim.steps={steps}", f"optim.warmup_steps={max(2, steps // 10)}",
                        f"train.ckpt_every={max(10, steps // 5)}", f"train.log_every={max(1, min(10, steps // 20))}"]
    record = run_dir / "record.json"
    if record.is_file():
        rec = json.loads(record.read_text())
        if same_settings(rec.get("overrides"), full):
            return rec
        shutil.rmtree(run_dir)
    started = run_dir / "overrides.json"
    if started.is_file() and not same_settings(json.loads(started.read_text()), full):
        shutil.rmtree(run_dir)  # an unfinished run with other settings cannot be resumed
    run_dir.mkdir(parents=True, exist_ok=True)
    started.write_text(json.dumps(full))
    say(f"{name}: {method}, {steps} steps ({epochs:g} epochs), seed {seed}")
    wall = train(full, vocab, run_dir)
    metrics = [r for r in read_metrics(run_dir) if "loss" in r]
    losses = [r["loss"] for r in metrics]
    diverged = any(l != l or l in (float("inf"), float("-inf")) for l in losses)
    rec = {"name": name, "method": method, "epochs": epochs, "seed": seed, "steps": steps,
           "wall_s_this_process": round(wall, 2), "samples_seen": metrics[-1]["samples"],
           "first_loss": losses[0], "final_loss": losses[-1], "diverged": diverged,
           "loss_curve": [[r["step"], round(r["loss"], 5)] for r in metrics],
           "skipped_samples": metrics[-1].get("skipped", 0), "run_dir": rel(run_dir), "overrides": full}
    record.write_text(json.dumps(rec, indent=1))
    say(f"{name}: done ({wall:.0f}s in this process), loss {rec['first_loss']:.3f} -> {rec['final_loss']:.3f}"
        + (" DIVERGED" if diverged else ""))
    return rec


def plan(p: Preset, methods: list[str]) -> list[tuple[str, str, float, int]]:
    """(name, method, epochs, seed): every budget with seed 0 (cheapest first), then the extra seeds."""
    runs = [(f"{m}-e{e:g}-s0", m, e, 0) for e in p.epochs for m in methods]
    runs += [(f"{m}-e{p.epochs[-1]:g}-s{s}", m, p.epochs[-1], s) for s in range(1, p.seeds) for m in methods]
    return runs


# ---------------------------------------------------------------- main


def environment(p: Preset) -> dict:
    import torch

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    device = torch.cuda.get_device_name(0) if p.device == "cuda" and torch.cuda.is_available() else "cpu"
    return {"device": device, "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": git("rev-parse", "HEAD"), "src_modified": bool(git("status", "--porcelain", "--", "src")),
            "load_avg_at_start": os.getloadavg(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write(result: dict, out: Path, plots: Path) -> None:
    import small_study_report as report

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, out)
    out.with_suffix(".md").write_text(report.markdown(result))
    report.plots(result, plots)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    p, work, out, plots = resolve(args)
    data = Path(args.data)
    check_data(data)
    import torch

    if p.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"{STEM}: --device cuda but no CUDA device is visible")
    torch.set_num_threads(args.threads)
    if args.fresh:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    argv_used = sys.argv[1:] if argv is None else argv
    methods = [m for m in args.methods.split(",") if m] if args.methods else list(p.methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        sys.exit(f"{STEM}: unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    result: dict = {"command": f".venv/bin/python benchmarks/{STEM}.py" + "".join(" " + shlex.quote(a) for a in argv_used),
                    "env": environment(p), "methods": methods, "preset": dataclasses.asdict(p),
                    "lr_rule": f"peak lr = {BASE_LR:g} x batch / 256 = {BASE_LR * p.batch_size / 256:g}"}
    vocab = catlip_vocab(p, data, work)
    vocabs = {"catlip": vocab, "bpe": bpe_vocab(p, data, work)}
    common = common_overrides(p, data)
    overrides = {m: common + METHOD_RECIPES[m] + head_bias(method_vocab(m, vocabs)) + user_overrides(args.overrides, m)
                 for m in methods}
    result["overrides"] = overrides
    result["prior_only_loss"] = prior_only_losses(p, data, vocabs, work)

    import small_study_evals as evals

    # 2: step times first, while the machine is idle
    timing_path = work / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() and not args.retime else {}
    for m in methods:
        if m not in timing:
            timing[m] = measure_step_time(m, overrides[m], method_vocab(m, vocabs), p, work)
            timing_path.write_text(json.dumps(timing, indent=1))
    result["timing"] = {m: timing[m] for m in methods}

    # 3-4: pre-training and evaluation, run by run (each evaluation cached beside its run)
    tasks = evals.Tasks.load(p, data, vocab, work)
    result["tasks"] = tasks.describe()
    floor_spec = f"random:{evals.recipe(overrides[methods[0]], work)}"
    result["random_init"] = evals.evaluate(floor_spec, tasks, p, work)
    result["random_init_mean_token"] = evals.evaluate(floor_spec, tasks, p, work, pool="mean_token")
    result["runs"] = []
    for name, m, epochs, seed in plan(p, methods):
        rec = pretrain_run(name, m, overrides[m], epochs, seed, method_vocab(m, vocabs), p, work)
        rec["wall_s_estimated"] = round(rec["steps"] * timing[m]["step_time_s"], 1)
        rec["eval"] = evals.evaluate(str(ROOT / rec["run_dir"]), tasks, p, work, diverged=rec["diverged"])
        rec["head_stats"] = evals.head_stats(str(ROOT / rec["run_dir"])) if not rec["diverged"] else None
        result["runs"].append(rec)
        write(result, out, plots)

    # 5: Random vs Transfer Init on the largest-budget seed-0 runs of the head methods
    largest = p.epochs[-1]
    result["transfer"] = {}
    for m in HEAD_METHODS:
        run = next((r for r in result["runs"] if r["name"] == f"{m}-e{largest:g}-s0"), None)
        if run is not None and run["diverged"]:
            result["transfer"][m] = {"run": run["name"], "diverged": True}
        elif run is not None:
            result["transfer"][m] = {"run": run["name"], **evals.transfer(str(work / run["name"]), tasks, p, work)}
            write(result, out, plots)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    result["env"]["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(result, out, plots)
    say(f"done in {result['total_s']:.0f}s: {rel(out)}")
    import small_study_report as report

    print(report.markdown(result))
    return result


if __name__ == "__main__":
    main()
