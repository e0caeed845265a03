"""Training-step cost of CatLIP vs SuperClass vs CLIP vs SuperCLIP on one backbone, batch and machine, in one run.

Each (backbone, method) runs in its own subprocess, so peak memory is that method's alone: CPU reports the
subprocess's peak RSS (ru_maxrss) and its growth over the post-import baseline, GPU torch.cuda.max_memory_allocated.
Steady state = the mean over ``--steps`` timed optimizer steps after ``--warmup`` untimed ones. A step is the
trainer's own ``train_step`` (forward, loss, backward, clip, AdamW). Heads are sized as in the papers: CatLIP
24,320 synsets, SuperClass the 49,408-token BPE table, CLIP a 12-layer 512-wide text tower with 77 tokens,
SuperCLIP both (CLIP's towers + a Linear head over the BPE table).
On GPU (``--device cuda``: bf16 autocast) the FLOPs of one step are counted with torch.utils.flop_counter and MFU
is reported against the device's dense bf16 peak. The data loader alone (decode + augment + label extraction,
one process = one worker) is measured on Flickr8k shards when ../shared/data is present.
``--patch-drop 0,0.5,0.75`` (the default) repeats every (backbone, method) with that fraction of the ViT's patch
tokens dropped (``model.patch_drop``, FLIP); rows with 0 go to ``train_step``, the others to
``train_step_patch_drop`` (FLOPs and MFU then count the work actually done on the kept tokens).

    .venv/bin/python benchmarks/train_step.py                  # CPU: ViT-Tiny and ViT-B/16 (small batch), ~5 min
    .venv/bin/python benchmarks/train_step.py --device cuda    # GPU: ViT-B/16, bf16, MFU
    .venv/bin/python benchmarks/train_step.py --device cuda --methods catlip,clip --patch-drop 0 \
        --variants compile,grad_ckpt                              # + torch.compile and checkpointing rows
    .venv/bin/python benchmarks/train_step.py --backbones vit_tiny_patch16_224 --methods catlip --patch-drop 0.5 \
        --steps 1 --warmup 0 --no-loader --out /tmp/check.json    # a quick check that it runs
    .venv/bin/python benchmarks/train_step.py --split --threads 1   # parts + fit for `catlip plan` (below)

``--split`` (the measured input of ``catlip plan``, docs/scaling.md): per method (default catlip,clip) and batch
size (``--batches``, the last one held out of the fit), the forward + backward time of the image tower, the text
tower and the loss (with the classifier head) measured apart, the whole optimizer step, and the peak memory; then
``catlip.plan.fit`` fits fixed + per-sample terms on the other batch sizes and the JSON
(``train_step_split_<device>.json``) records them with the held-out batch's measured and predicted step time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("catlip", "superclass", "clip", "superclip")
NUM_CLASSES = {"catlip": 24320, "superclass": 49408, "clip": 0, "superclip": 49408}
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets.
PEAK_TFLOPS = {"H100 80GB HBM3": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0}


VARIANTS = ("compile", "grad_ckpt")  # --variants: torch.compile'd step, gradient checkpointing (both towers)


def _cfg(method: str, backbone: str, image_size: int, batch: int, patch_drop: float = 0.0, variant: str = ""):
    from catlip.config import load_config

    return load_config(None, [f"method.name={method}", f"model.backbone={backbone}", f"model.image_size={image_size}",
                              f"data.batch_size={batch}", "data.context_length=77", f"model.patch_drop={patch_drop}",
                              f"model.grad_checkpointing={variant == 'grad_ckpt'}"])


def _batch(method: str, batch: int, image_size: int, device):
    import torch

    from catlip.methods.registry import get

    spec = get(method)
    g = torch.Generator().manual_seed(0)
    out = {"image": torch.randn(batch, 3, image_size, image_size, generator=g)}
    if spec.uses_text:
        out["text"] = torch.randint(1, 49406, (batch, 77), generator=g)
    if spec.uses_labels:  # about 6 labels per caption, padded with -1 to 10
        ids = torch.randint(0, NUM_CLASSES[method], (batch, 10), generator=g)
        ids[:, 6:] = -1
        out["label_ids"] = ids
    return {k: v.to(device) for k, v in out.items()}


def _count_flops(method, batch) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        method(batch)["loss"].backward()
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def worker(args) -> dict:
    """One (backbone, method) measurement; prints a JSON line."""
    import resource

    import torch

    from catlip.methods import build_method
    from catlip.train.optim import build_optimizer
    from catlip.train.step import train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    device = torch.device(args.device)
    cfg = _cfg(args.method, args.backbone, args.image_size, args.batch, args.patch_drop, args.variant)
    torch.manual_seed(0)
    method = build_method(cfg, NUM_CLASSES[args.method]).to(device).train()
    opt = build_optimizer(method, cfg.optim)
    stepped = torch.compile(method) if args.variant == "compile" else method  # compiled during the warm-up steps
    batch = _batch(args.method, args.batch, args.image_size, device)
    if device.type == "cuda":
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
        sync = torch.cuda.synchronize
    else:
        from contextlib import nullcontext as autocast

        sync = lambda: None  # noqa: E731
    flops = None
    if device.type == "cuda":
        with autocast():
            flops = _count_flops(method, batch)
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        train_step(stepped, [batch], opt, autocast=autocast, clip_grad=1.0)
    sync()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        train_step(stepped, [batch], opt, autocast=autocast, clip_grad=1.0)
        sync()
        times.append(time.perf_counter() - t)
    step = sum(times) / len(times)
    res = {"method": args.method, "backbone": args.backbone, "image_size": args.image_size, "batch": args.batch,
           "patch_drop": args.patch_drop, **({"variant": args.variant} if args.variant else {}),
           "params_m": round(sum(p.numel() for p in method.parameters()) / 1e6, 2),
           "step_s": round(step, 4), "step_s_min": round(min(times), 4), "img_per_s": round(args.batch / step, 2)}
    if device.type == "cuda":
        res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        res["tflops_per_step"] = round(flops / 1e12, 3)
        res["achieved_tflops"] = round(flops / step / 1e12, 1)
        peak = args.peak_tflops or _peak_for(torch.cuda.get_device_name(device))
        res["mfu"] = round(flops / step / (peak * 1e12), 4) if peak else None
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["peak_rss_mb"] = round(rss, 1)
        res["rss_growth_mb"] = round(rss - base_rss, 1)
    return res


def _peak_for(name: str) -> float | None:
    return next((v for k, v in PEAK_TFLOPS.items() if k.lower() in name.lower()), None)


def _run_worker(method: str, backbone: str, image_size: int, batch: int, args, patch_drop: float = 0.0,
                variant: str = "", split: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--method", method, "--backbone", backbone, "--image-size",
           str(image_size), "--batch", str(batch), "--steps", str(args.steps_for[backbone]), "--warmup",
           str(max(args.warmup, 2) if variant == "compile" else args.warmup), "--device", args.device,
           "--threads", str(args.threads or 0), "--patch-drop", str(patch_drop), "--variant", variant]
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    if split:
        cmd += ["--split"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"method": method, "backbone": backbone, "batch": batch, "patch_drop": patch_drop,
                "variant": variant, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def loader_benchmark(images: int = 400) -> dict | None:
    """Decoded + augmented (224 px RandomResizedCrop + flip) + CatLIP labels per second in one process."""
    shards = ROOT.parent / "shared" / "data" / "flickr8k"
    if not (shards / "flickr8k-train-000.tar").exists():
        return None
    from catlip.config import load_config
    from catlip.data import build_train_loader
    from catlip.labels.vocab import build_vocabulary

    import torch

    torch.set_num_threads(1)  # what a DataLoader worker process uses
    pattern = str(shards / "flickr8k-train-{000..005}.tar")
    vocab, _ = build_vocabulary([shards / "flickr8k-train-000.tar"], "catlip", min_count=5)
    cfg = load_config(None, [f"data.train=['{pattern}']", "model.image_size=224", "data.batch_size=50",
                             "data.augment=rrc_flip", "data.rrc_scale_min=0.08"])
    t0 = time.perf_counter()
    loader = build_train_loader(cfg, vocab, method_inputs=("image", "label_ids"), num_workers=0)
    index_s = time.perf_counter() - t0
    it = iter(loader)
    next(it)
    t = time.perf_counter()
    n = 0
    while n < images:
        n += len(next(it)["image"])
    rate = n / (time.perf_counter() - t)
    return {"source": "flickr8k-train-{000..005}.tar (6,000 samples)", "index_seconds": round(index_s, 2),
            "img_per_s_per_worker": round(rate, 1), "image_size": 224, "augment": "rrc_flip + CatLIP labels",
            "vocab_size": len(vocab)}


def _plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = list(dict.fromkeys(r["backbone"] for r in rows if "error" not in r))
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.5 * len(backbones), 3.5), squeeze=False)
    for ax, bb in zip(axes[0], backbones):
        sel = [r for r in rows if r["backbone"] == bb and "error" not in r]
        names = [r["method"] + (f"\ndrop {r['patch_drop']:g}" if r.get("patch_drop") else "")
                 + (f"\n{r['variant']}" if r.get("variant") else "") for r in sel]
        colors = [f"C{METHODS.index(r['method']) if r['method'] in METHODS else 9}" for r in sel]
        ax.bar(names, [r["img_per_s"] for r in sel], color=colors)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{bb} (batch {sel[0]['batch']})", fontsize=9)
        ax.set_ylabel("training images / s")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: torch's choice)")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: by device name)")
    p.add_argument("--no-loader", action="store_true", help="skip the data-loader measurement")
    p.add_argument("--only-loader", action="store_true",
                   help="measure only the data loader and add it to an existing train_step_<device>.json")
    p.add_argument("--patch-drop", default="0,0.5,0.75", metavar="F,F,...",
                   help="fractions of patch tokens dropped (model.patch_drop), one row each (default 0,0.5,0.75)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--backbones", default="", help="comma-separated subset of the device's plan (default: all)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/train_step_<device>.json; "
                   "the plot goes beside it)")
    p.add_argument("--variants", default="", metavar="V,V",
                   help="also run each method (no token dropping) with these switches: compile (torch.compile'd "
                        "step, compile time in the warm-up), grad_ckpt (model.grad_checkpointing); rows go to "
                        "train_step_variants")
    p.add_argument("--split", action="store_true",
                   help="time image tower / text tower / loss apart at several --batches and fit the plan's terms")
    p.add_argument("--batches", default="", metavar="B,B,...",
                   help="with --split: batch sizes, the last held out of the fit (default cpu 8,16,32,64,48; "
                        "cuda 32,64,128,256,192)")
    p.add_argument("--variant", default="", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--backbone", help=argparse.SUPPRESS)
    p.add_argument("--image-size", type=int, default=224, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.patch_drop = float(args.patch_drop)
        args.warmup = 1 if args.warmup is None else args.warmup
        args.steps = 3 if args.steps is None else args.steps
        print(json.dumps(split_worker(args) if args.split else worker(args)))
        return
    if args.split:
        return split_main(args)
    out = Path(args.out) if args.out else RESULTS / f"train_step_{args.device}.json"
    if args.only_loader:
        result = json.loads(out.read_text()) if out.exists() else {}
        result["data_loader"] = {**(loader_benchmark() or {"skipped": "../shared/data/flickr8k absent"}),
                                 "device": _device_name("cpu"), "load_average_at_start": os.getloadavg()}
        out.write_text(json.dumps(result, indent=1))
        print(json.dumps(result["data_loader"]))
        return
    if args.device == "cuda":
        plan = [("vit_base_patch16_224", 224, 256)]
        args.warmup = 5 if args.warmup is None else args.warmup
        args.steps_for = {"vit_base_patch16_224": args.steps or 20}
    else:
        plan = [("vit_tiny_patch16_224", 224, 32), ("vit_base_patch16_224", 224, 8)]
        args.warmup = 1 if args.warmup is None else args.warmup
        args.steps_for = {"vit_tiny_patch16_224": args.steps or 5, "vit_base_patch16_224": args.steps or 3}
    plan, methods, drops = _selection(p, args, plan)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := sorted(set(variants) - set(VARIANTS)):
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    t0 = time.perf_counter()
    rows = []
    for backbone, size, batch in plan:
        for drop in drops:
            for method in methods:
                rows.append(_run_worker(method, backbone, size, batch, args, drop))
                print(json.dumps(rows[-1]), flush=True)
        for variant in variants:
            for method in methods:
                rows.append(_run_worker(method, backbone, size, batch, args, 0.0, variant))
                print(json.dumps(rows[-1]), flush=True)
    import torch

    result = {"device": _device_name(args.device), "torch": torch.__version__, "torch_threads": args.threads,
              "machine": platform.platform(), "cpu_count": os.cpu_count(),
              "cpu_affinity": len(os.sched_getaffinity(0)), "load_average_at_start": os.getloadavg(),
              "train_step": [r for r in rows if not r["patch_drop"] and not r.get("variant")],
              "train_step_patch_drop": [r for r in rows if r["patch_drop"]]}
    if variants:
        result["train_step_variants"] = [r for r in rows if r.get("variant")]
    if not args.no_loader:
        result["data_loader"] = loader_benchmark()
        print(json.dumps(result["data_loader"]), flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    _plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _selection(p: argparse.ArgumentParser, args, plan: list) -> tuple[list, list[str], list[float]]:
    """The (backbone, size, batch) plan, methods and patch-drop fractions the options ask for."""
    methods = [m for m in args.methods.split(",") if m]
    backbones = [b for b in args.backbones.split(",") if b]
    try:
        drops = [float(x) for x in args.patch_drop.split(",") if x.strip()]
    except ValueError:
        p.error(f"--patch-drop takes comma-separated fractions, got {args.patch_drop!r}")
    if not drops or any(not 0 <= d < 1 for d in drops):
        p.error("--patch-drop fractions must lie in [0, 1)")
    if unknown := sorted(set(methods) - set(METHODS)):
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if unknown := sorted(set(backbones) - {b for b, _, _ in plan}):
        p.error(f"backbone(s) {', '.join(unknown)} not in the {args.device} plan ({', '.join(b for b, _, _ in plan)})")
    return [row for row in plan if not backbones or row[0] in backbones], methods or list(METHODS), drops


def _parts(method, batch: dict) -> dict:
    """Part name -> a callable running that part's forward + backward alone (the loss on features computed once,
    outside the timing, so no tower is counted twice)."""
    import torch

    from catlip import losses

    images = batch["image"]
    if "text" not in method.inputs:  # classification: backbone, then the Linear head + loss
        with torch.no_grad():
            feats = method.features(images)
        targets = method.targets(batch["label_ids"])
        return {"image": lambda: method.features(images).float().sum().backward(),
                "loss": lambda: method.classification_loss(method.head(feats.requires_grad_()), targets).backward()}
    with torch.no_grad():
        img, txt = method.encode_image(images), method.encode_text(batch["text"])
    return {"image": lambda: method.encode_image(images).float().sum().backward(),
            "text": lambda: method.encode_text(batch["text"]).float().sum().backward(),
            "loss": lambda: losses.clip_loss(img.requires_grad_(), txt.requires_grad_(), method.scale()).backward()}


def _timed_rounds(fns: dict, reps: int, sync) -> dict[str, list[float]]:
    """Sorted seconds of each callable over ``reps`` rounds after an untimed one. Every round runs them all in
    turn, so a change in the machine's load (it is shared) hits every part alike."""
    times = {name: [] for name in fns}
    for i in range(reps + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync()
            if i:
                times[name].append(time.perf_counter() - t)
    return {name: sorted(ts) for name, ts in times.items()}


def _under(autocast, fn) -> None:
    with autocast():
        fn()


def split_worker(args) -> dict:
    """One (method, batch): each part's forward + backward, the whole step and the peak memory."""
    import resource

    import torch

    from catlip.methods import build_method
    from catlip.train.optim import build_optimizer
    from catlip.train.step import train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = _cfg(args.method, args.backbone, args.image_size, args.batch)
    torch.manual_seed(0)
    method = build_method(cfg, NUM_CLASSES[args.method]).to(device).train()
    opt = build_optimizer(method, cfg.optim)
    batch = _batch(args.method, args.batch, args.image_size, device)
    if device.type == "cuda":
        autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
        sync = torch.cuda.synchronize
        torch.cuda.reset_peak_memory_stats(device)
    else:
        from contextlib import nullcontext as autocast

        sync = lambda: None  # noqa: E731
    def step():  # the trainer's step, under its own autocast; the parts' gradients are dropped first
        method.zero_grad(set_to_none=True)
        train_step(method, [batch], opt, autocast=autocast, clip_grad=1.0)

    fns = {"step": step, **{k: (lambda fn=fn: _under(autocast, fn)) for k, fn in _parts(method, batch).items()}}
    timed = _timed_rounds(fns, args.steps, sync)
    steps = timed.pop("step")
    res = {"method": args.method, "backbone": args.backbone, "batch": args.batch,
           "params_m": round(sum(p.numel() for p in method.parameters()) / 1e6, 3),
           # minimum over the rounds: on a shared machine the least disturbed one; the median beside it
           "step_s": round(steps[0], 4), "step_s_median": round(steps[len(steps) // 2], 4),
           "parts_s": {k: round(v[0], 4) for k, v in timed.items()}}
    if device.type == "cuda":
        res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    else:
        res["peak_mem_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return res


def split_main(args) -> None:
    """Run the split workers, fit fixed + per-sample terms, compare the held-out batch, write the JSON."""
    from catlip.plan.fit import fit_split

    import torch

    batches = [int(b) for b in (args.batches or ("32,64,128,256,192" if args.device == "cuda"
                                                  else "8,16,32,64,48")).split(",")]
    backbone = args.backbones or ("vit_base_patch16_224" if args.device == "cuda" else "vit_tiny_patch16_224")
    methods = [m for m in args.methods.split(",") if m] if args.methods != ",".join(METHODS) else ["catlip", "clip"]
    args.steps_for = {backbone: args.steps or (10 if args.device == "cuda" else 3)}
    args.warmup = 1 if args.warmup is None else args.warmup
    load = os.getloadavg()
    rows = []
    for method in methods:
        for b in batches:
            rows.append(_run_worker(method, backbone, 224, b, args, split=True))
            print(json.dumps(rows[-1]), flush=True)
    result = {"device": _device_name(args.device), "torch": torch.__version__, "torch_threads": args.threads,
              "backbone": backbone, "image_size": 224, "fit_batches": batches[:-1], "held_out_batch": batches[-1],
              "load_average_at_start": load, "load_average_at_end": os.getloadavg(), "rows": rows,
              **fit_split(rows, batches[:-1], batches[-1])}
    out = Path(args.out) if args.out else RESULTS / f"train_step_split_{args.device}.json"
    out.write_text(json.dumps(result, indent=1))
    for method, h in result["held_out"].items():
        print(f"{method}: batch {h['batch']} measured {h['measured_s']:.3f} s, predicted {h['predicted_s']:.3f} s "
              f"({h['error']:+.1%})")
    print(f"wrote {out}")


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"CPU: {platform.processor()} x{os.cpu_count()}"


if __name__ == "__main__":
    main()
