"""Small-scale reproduction of CatLIP's Fig. 4 and Fig. 5 shapes on Flickr8k -> CIFAR-10.

1. Pre-train CatLIP, SuperClass and CLIP with the same tiny ViT on the Flickr8k train shards for equal
   wall-clock budgets at several lengths (steps = budget / measured seconds per step of each method; every
   length is its own run with its own cosine schedule, like the paper's independently trained dots).
2. Linear-probe every run on CIFAR-10 (lr/wd grid picked on a validation split), plus the random-init floor.
3. Random Init vs Transfer Init probes at 1 %, 10 % and 100 % of CIFAR-10 for the longest CatLIP and SuperClass runs.

Writes ``<out>/reproduce_small.json`` and two PNGs (``_quick`` names for --quick). Re-running skips finished
stages recorded in the JSON (run dirs live under --work).

    python benchmarks/reproduce_small.py --budgets 60,120,240            # ~40 min on one GPU
    python benchmarks/reproduce_small.py --quick                          # smoke run: tiny budgets, CIFAR subset
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CATLIP_SHARED_DATA", ROOT.parent / "shared" / "data"))
METHODS = ("catlip", "superclass", "clip")

# One architecture for every method; optimiser settings follow each paper's recipe (CatLIP Table 6a,
# SuperClass: AdamW (0.9, 0.98) eps 1e-6; CLIP Table 6a), scaled to a short run.
BASE = [
    "model.backbone=vit_tiny_patch16_224",
    "data.augment=rrc_flip", "data.rrc_scale_min=0.4", "data.vocab_min_count=5",
    "optim.weight_decay=0.2", "optim.min_lr_ratio=0.01", "optim.clip_grad=1.0",
    "train.log_every=5", "train.tensorboard=false", "train.keep_checkpoints=1",
]
PER_METHOD = {
    "catlip": ["method.name=catlip", "optim.lr=0.002", "optim.betas=[0.9, 0.999]", "model.head_bias_init=-5.0"],
    "superclass": ["method.name=superclass", "optim.lr=0.0005", "optim.betas=[0.9, 0.98]", "optim.eps=1e-6"],
    "clip": ["method.name=clip", "optim.lr=0.0005", "optim.betas=[0.9, 0.98]", "model.text_layers=4",
             "data.context_length=32"],
}


def config(method: str, out: Path, args, extra: list[str]):
    from catlip.config import load_config

    shards = str(DATA / "flickr8k" / "flickr8k-train-{000..005}.tar")
    return load_config(None, [*BASE, *PER_METHOD[method], *clip_dims(method, args), f"data.train=[{shards!r}]", f"model.backbone_kwargs={arch(args)}",
                              f"data.image_size={args.image_size}", f"data.batch_size={args.batch_size}",
                              f"data.num_workers={args.workers}", f"train.device={args.device}",
                              f"train.precision={args.precision}", f"train.output_dir={out}",
                              f"train.progress={str(args.progress).lower()}", *extra])


def clip_dims(method: str, args) -> list[str]:
    heads = max(1, args.width // 64)
    return [f"model.embed_dim={args.width}", f"model.text_width={args.width}", f"model.text_heads={heads}"] \
        if method == "clip" else []


def arch(args) -> str:
    return f"{{patch_size: 8, embed_dim: {args.width}, depth: {args.depth}, num_heads: {max(1, args.width // 64)}}}"


def seconds_per_step(run_dir: Path) -> float:
    """Median time between logged steps (startup, vocabulary and first-batch costs excluded)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "time" in r and "step" in r]
    rates = [(b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(rows[1:], rows[2:]) if b["step"] > a["step"]]
    if not rates:
        raise RuntimeError(f"{run_dir}: too few logged steps to time (lower train.log_every)")
    return statistics.median(rates)


def calibrate(method: str, vocab, work: Path, args) -> float:
    from catlip.train.loop import pretrain

    run = pretrain(config(method, work / "calibrate" / method, args,
                          [f"optim.steps={args.calib_steps}", "optim.warmup_steps=5",
                           f"train.ckpt_every={args.calib_steps}"]), vocab=vocab)
    return seconds_per_step(run)


def pretrain_for(method: str, budget: float, sps: float, vocab, work: Path, args) -> dict:
    from catlip.train.loop import pretrain

    steps = max(20, int(budget / sps))
    out = work / f"{method}_{int(budget)}s"
    t0 = time.perf_counter()
    run = pretrain(config(method, out, args, [f"optim.steps={steps}", f"optim.warmup_steps={max(5, steps // 10)}",
                                              f"train.ckpt_every={steps}"]), vocab=vocab)
    wall = time.perf_counter() - t0
    return {"method": method, "budget_s": budget, "steps": steps, "images_seen": steps * args.batch_size,
            "run": str(run), "wall_s": round(wall, 1), "train_s_per_step": _maybe_rate(run)}


def _maybe_rate(run: Path) -> float | None:
    try:
        return round(seconds_per_step(run), 4)
    except RuntimeError:  # a very short run logs too few steps; its wall time is still recorded
        return None


def probe(ckpt: str, args, **kw) -> dict:
    from catlip.evaluate.linear_probe import ProbeConfig
    from catlip.evaluate.run import run_probe

    cifar = DATA / "cifar10"
    train = str(cifar / ("cifar10-train-000.tar" if args.quick else "cifar10-train-{000..004}.tar"))
    return run_probe(ckpt, train, str(cifar / "cifar10-test-000.tar"), image_size=args.image_size,
                     probe=ProbeConfig(epochs=args.probe_epochs), cache_dir=str(args.work / "features"),
                     batch_size=512, num_workers=args.workers, device=args.device, progress=args.progress, **kw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="60,120,240", help="pre-training seconds per run (>= 3 lengths)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--width", type=int, default=192, help="ViT width (patch 8)")
    p.add_argument("--depth", type=int, default=6, help="ViT depth")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--calib-steps", type=int, default=60)
    p.add_argument("--probe-epochs", type=int, default=30)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="where reproduce_small.json and the PNGs go")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "reproduce_small",
                   help="run dirs and cached features (not committed)")
    p.add_argument("--quick", action="store_true", help="smoke run: budgets 5,10,20 s, CIFAR-10 10k train images")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--report", action="store_true", help="only print the tables of an existing result file")
    args = p.parse_args(argv)
    if not (DATA / "flickr8k").is_dir() or not (DATA / "cifar10").is_dir():
        print(f"needs {DATA}/flickr8k and {DATA}/cifar10 (set CATLIP_SHARED_DATA)", file=sys.stderr)
        return 2
    if args.quick:
        args.budgets, args.calib_steps, args.probe_epochs = "5,10,20", 30, 10
    budgets = [float(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work
    result_file = args.out / ("reproduce_small_quick.json" if args.quick else "reproduce_small.json")
    res = json.loads(result_file.read_text()) if result_file.exists() else {}
    if args.report:
        print(markdown(res))
        return 0
    res.update(settings={k: str(v) for k, v in vars(args).items()}, base_config=BASE, per_method=PER_METHOD)

    def save():
        tmp = result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=2))
        os.replace(tmp, result_file)

    from catlip.train.vocab_setup import build_run_vocabulary

    t_start = time.perf_counter()
    vocabs = {m: build_run_vocabulary(config(m, work / "vocab", args, []), progress=args.progress) for m in methods}
    res.setdefault("seconds_per_step", {})
    for m in methods:
        if m not in res["seconds_per_step"]:
            res["seconds_per_step"][m] = calibrate(m, vocabs[m], work, args)
            save()
    runs = {(r["method"], r["budget_s"]): r for r in res.get("runs", [])}
    for budget in budgets:
        for m in methods:
            if (m, budget) not in runs:
                runs[(m, budget)] = pretrain_for(m, budget, res["seconds_per_step"][m], vocabs[m], work, args)
                res["runs"] = list(runs.values())
                save()
    for r in runs.values():
        if "probe_top1" not in r:
            out = probe(r["run"], args, fractions=[1.0], knn=True)
            r["probe_top1"] = out["rows"][0]["top1"]
            r["knn_top1"] = out["rows"][-1]["top1"]
            res["runs"] = list(runs.values())
            save()
    if "random_floor" not in res:
        recipe = args.work / "random_floor.yaml"
        recipe.write_text(f"model:\n  backbone: vit_tiny_patch16_224\n  backbone_kwargs: {arch(args)}\n"
                          f"data:\n  image_size: {args.image_size}\n")
        out = probe(f"random:{recipe}", args, fractions=[1.0], knn=True)
        res["random_floor"] = {"probe_top1": out["rows"][0]["top1"], "knn_top1": out["rows"][-1]["top1"]}
        save()
    longest = max(budgets)
    res.setdefault("transfer", {})
    for m in [m for m in methods if m != "clip"]:
        if m not in res["transfer"]:
            out = probe(runs[(m, longest)]["run"], args, fractions=[0.01, 0.1, 1.0], inits=["random", "transfer"],
                        knn=False)
            res["transfer"][m] = {"rows": out["rows"], "coverage": out["coverage"]["counts"],
                                  "unmapped": out["coverage"]["unmapped"]}
            save()
    res["total_wall_s"] = round(res.get("total_wall_s", 0) + time.perf_counter() - t_start, 1)
    save()
    plot(res, args.out, "reproduce_small_quick" if args.quick else "reproduce_small")
    print(markdown(res))
    return 0


def markdown(res: dict) -> str:
    """The result tables as Markdown (pasted into docs/results.md)."""
    floor = res["random_floor"]
    lines = ["| method | budget (s) | steps | images seen | wall (s) | probe top-1 (%) | 20-NN top-1 (%) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(res["runs"], key=lambda r: (r["method"], r["budget_s"])):
        lines.append(f"| {r['method']} | {r['budget_s']:.0f} | {r['steps']} | {r['images_seen']} | {r['wall_s']} | "
                     f"{100 * r['probe_top1']:.2f} | {100 * r['knn_top1']:.2f} |")
    lines.append(f"| random init | 0 | 0 | 0 | 0 | {100 * floor['probe_top1']:.2f} | {100 * floor['knn_top1']:.2f} |")
    lines += ["", "| method | subset | images | Random Init top-1 (%) | Transfer Init top-1 (%) |",
              "| --- | --- | ---: | ---: | ---: |"]
    for m, t in res.get("transfer", {}).items():
        by = {(r["subset"], r["init"]): r for r in t["rows"]}
        for subset in dict.fromkeys(r["subset"] for r in t["rows"]):
            rnd, tr = by[(subset, "random")], by[(subset, "transfer")]
            lines.append(f"| {m} | {subset} | {rnd['n_train']} | {100 * rnd['top1']:.2f} | {100 * tr['top1']:.2f} |")
        lines.append(f"| {m} | coverage | | {t['coverage']} | unmapped: {', '.join(t['unmapped']) or '-'} |")
    return "\n".join(lines)


def plot(res: dict, out: Path, stem: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in METHODS:
        rows = sorted((r for r in res["runs"] if r["method"] == m), key=lambda r: r["budget_s"])
        if rows:
            ax.plot([r["budget_s"] for r in rows], [100 * r["probe_top1"] for r in rows], "o-", label=m)
    ax.axhline(100 * res["random_floor"]["probe_top1"], color="grey", ls="--", label="random init")
    ax.set(xlabel="pre-training wall-clock budget (s)", ylabel="CIFAR-10 linear probe top-1 (%)",
           title="Flickr8k pre-training, equal time budgets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{stem}_probe_vs_budget.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (m, t), colour in zip(res["transfer"].items(), ("C0", "C1")):
        for init, style in (("random", "--"), ("transfer", "-")):
            rows = [r for r in t["rows"] if r["init"] == init]
            ax.plot([r["n_train"] for r in rows], [100 * r["top1"] for r in rows], "o" + style, color=colour,
                    label=f"{m}, {init} init")
    ax.set(xscale="log", xlabel="CIFAR-10 training images (1 %, 10 %, 100 %)", ylabel="linear probe top-1 (%)",
           title="Random Init vs Transfer Init")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{stem}_transfer_init.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
