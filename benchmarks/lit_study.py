"""LiT on classification-pretrained backbones vs CLIP from scratch for the same total wall-clock (issue 12, item 6).

On the Flickr8k train shards, in the small study's CPU regime (``benchmarks/small_study.py``: ViT with patch 8, width
128, depth 4 at 32 px, batch 128, the same augmentation and learning-rate rule), this script

1. pre-trains CatLIP, SuperClass and CLIP for ``--epochs`` (seed 0), timing each in this process;
2. runs LiT (``catlip lit``, recipe ``configs/lit_tiny_cpu.yaml`` with the study's text tower: width 128, 2 layers,
   4 heads, 32 tokens) on the CatLIP and SuperClass runs for ``--lit-epochs`` over the cached locked features,
   timing it (the feature cache build included);
3. trains CLIP from scratch once more for each LiT pipeline, for as many steps as fit in that pipeline's total
   wall-clock (pre-training + LiT) at CLIP's own measured seconds per step from step 1;
4. evaluates every two-tower model the same way: zero-shot on the CIFAR-10 test set (its class names, open_clip's
   80 OpenAI templates) and Flickr8k test retrieval (1,000 images, 5,000 captions, R@1/5/10 both ways).

Runs are kept in ``--work`` (default runs/lit_study) and reused when their settings match; the result is written to
``benchmarks/results/lit_study.json`` and ``.md``. The wall-clock budgets are measured on this machine in one
process, one run after the other, so they are comparable with one another (not with other machines).

    .venv/bin/python benchmarks/lit_study.py            # ~30 min on 2 CPU cores
    .venv/bin/python benchmarks/lit_study.py --quick    # a few minutes: that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import small_study as study  # noqa: E402  (the regime, vocabularies and cached runs of the small study)

ROOT = study.ROOT
RESULTS = ROOT / "benchmarks" / "results"
LIT_RECIPE = ROOT / "configs" / "lit_tiny_cpu.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, one shard, fractions of an epoch")
    p.add_argument("--epochs", type=float, default=None, help="pre-training epochs (default 15; quick 0.5)")
    p.add_argument("--lit-epochs", type=float, default=None, help="LiT epochs (default 15; quick 0.5)")
    p.add_argument("--data", type=Path, default=study.SHARED, help="the shared data folder")
    p.add_argument("--work", type=Path, default=None, help="runs folder (default runs/lit_study[_quick])")
    p.add_argument("--out", type=Path, default=None, help="result JSON (default benchmarks/results/lit_study.json)")
    return p.parse_args(argv)


def lit_overrides(p, data: Path, steps: int) -> list[str]:
    return [f"data.train=['{data / 'flickr8k' / p.train_shards}']", f"data.batch_size={p.batch_size}",
            f"data.num_workers={p.workers}", *p.text, f"optim.steps={steps}",
            f"optim.warmup_steps={max(2, steps // 10)}", f"train.ckpt_every={max(10, steps // 5)}",
            "train.progress=false", "train.tensorboard=false", "train.keep_checkpoints=1", "train.resume=auto"]


def lit_run(name: str, source: Path, overrides: list[str], work: Path) -> dict:
    """`catlip lit` on ``source`` (cached by record.json); its wall time includes building the feature cache."""
    from catlip.train.lit import lit_config
    from catlip.train.loop import pretrain

    run_dir = work / name
    record = run_dir / "record.json"
    if record.is_file() and json.loads(record.read_text()).get("overrides") == overrides:
        return json.loads(record.read_text())
    study.say(f"{name}: LiT on {source.name}")
    t = time.perf_counter()
    pretrain(lit_config(source, str(LIT_RECIPE), [*overrides, f"train.output_dir={run_dir}"]))
    wall = time.perf_counter() - t
    losses = [r["loss"] for r in study.read_metrics(run_dir) if "loss" in r]
    rec = {"name": name, "source": source.name, "wall_s_this_process": round(wall, 2), "first_loss": losses[0],
           "final_loss": losses[-1], "overrides": overrides, "run_dir": study.rel(run_dir)}
    record.write_text(json.dumps(rec, indent=1))
    study.say(f"{name}: done ({wall:.0f}s), loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return rec


def evaluate(run_dir: Path, data: Path, p, work: Path) -> dict:
    """Zero-shot CIFAR-10 (openai templates) and Flickr8k test retrieval of one two-tower run (cached)."""
    from catlip.cli import main

    out = {}
    common = ["--workers", str(p.workers), "--no-progress", "--batch-size", "500"]
    for task, args in (("zeroshot", ["--test", str(data / "cifar10" / "cifar10-test-000.tar"), "--templates",
                                     "openai"]),
                       ("retrieval", ["--data", str(data / "flickr8k" / "flickr8k-test-000.tar")])):
        path = work / "evals" / f"{run_dir.name}-{task}.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            if main([task, str(run_dir), *args, *common, "-o", str(path)]) != 0:
                raise SystemExit(f"{task} on {run_dir} failed")
        out[task] = json.loads(path.read_text())
    zs, rt = out["zeroshot"], out["retrieval"]
    return {"cifar10_zeroshot_top1": zs["top1"], "cifar10_zeroshot_top5": zs["top5"],
            "cifar10_mean_per_class_recall": zs["mean_per_class_recall"], "templates": zs.get("num_templates"),
            "i2t": rt["image_to_text"], "t2i": rt["text_to_image"], "mode": rt["mode"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    p = study.quick_preset() if args.quick else study.cpu_preset()
    epochs = args.epochs or (0.5 if args.quick else 15.0)
    lit_epochs = args.lit_epochs or (0.5 if args.quick else 15.0)
    data = args.data
    study.check_data(data)
    work = args.work or ROOT / "runs" / f"lit_study{p.suffix}"
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS / f"lit_study{p.suffix}.json"
    vocabs = {"catlip": study.catlip_vocab(p, data, work), "bpe": study.bpe_vocab(p, data, work)}
    common = study.common_overrides(p, data)
    result: dict = {"command": "python benchmarks/lit_study.py" + "".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:])),
                    "regime": {"image_size": p.image_size, "backbone": p.backbone, "backbone_kwargs": p.backbone_kwargs,
                               "text": p.text, "batch_size": p.batch_size, "epochs": epochs,
                               "lit_epochs": lit_epochs, "lit_recipe": study.rel(LIT_RECIPE)},
                    "environment": study.environment(p), "load_avg_start": os.getloadavg(), "runs": {}}
    runs = result["runs"]
    for m in ("catlip", "superclass", "clip"):
        vocab = study.method_vocab(m, vocabs)
        over = common + study.METHOD_RECIPES[m] + study.head_bias(vocab)
        runs[m] = study.pretrain_run(f"{m}-e{epochs:g}", m, over, epochs, 0, vocab, p, work)
    clip_step_s = runs["clip"]["wall_s_this_process"] / runs["clip"]["steps"]
    lit_steps = study.steps_for(lit_epochs, p)
    for m in ("catlip", "superclass"):
        lit = lit_run(f"lit-{m}-e{lit_epochs:g}", work / runs[m]["name"], lit_overrides(p, data, lit_steps), work)
        runs[f"lit_{m}"] = lit
        budget = runs[m]["wall_s_this_process"] + lit["wall_s_this_process"]
        clip_epochs = round(budget / clip_step_s) * p.batch_size / p.train_images
        over = common + study.METHOD_RECIPES["clip"]
        rec = study.pretrain_run(f"clip-budget-{m}", "clip", over, clip_epochs, 0, None, p, work)
        rec["budget_s"], rec["budget_of"] = round(budget, 1), f"{m} pre-training + LiT"
        runs[f"clip_budget_{m}"] = rec
    result["clip_step_s"] = round(clip_step_s, 4)
    result["evals"] = {k: evaluate(work / r["name"], data, p, work) for k, r in runs.items()
                       if k.startswith(("lit_", "clip"))}
    result["load_avg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table(result))
    print(table(result))
    return result


def table(result: dict) -> str:
    runs, evals = result["runs"], result["evals"]
    rows = ["| model | wall-clock (s) | CIFAR-10 zero-shot top-1 | mean per-class recall | Flickr8k i2t R@1 / R@5 "
            "| t2i R@1 / R@5 |", "|---|---:|---:|---:|---:|---:|"]

    def wall(key: str) -> float:
        if key.startswith("lit_"):
            return runs[key[4:]]["wall_s_this_process"] + runs[key]["wall_s_this_process"]
        return runs[key]["wall_s_this_process"]

    names = {"lit_catlip": "CatLIP + LiT", "lit_superclass": "SuperClass + LiT", "clip": "CLIP (same epochs)",
             "clip_budget_catlip": "CLIP, CatLIP+LiT's wall-clock", "clip_budget_superclass":
             "CLIP, SuperClass+LiT's wall-clock"}
    for key in ("clip", "lit_catlip", "clip_budget_catlip", "lit_superclass", "clip_budget_superclass"):
        e = evals[key]
        rows.append(f"| {names[key]} | {wall(key):.0f} | {100 * e['cifar10_zeroshot_top1']:.1f} | "
                    f"{100 * e['cifar10_mean_per_class_recall']:.1f} | {100 * e['i2t']['R@1']:.1f} / "
                    f"{100 * e['i2t']['R@5']:.1f} | {100 * e['t2i']['R@1']:.1f} / {100 * e['t2i']['R@5']:.1f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    main()
