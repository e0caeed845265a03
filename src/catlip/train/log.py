"""Run logging: tqdm bar (img/s), metrics.jsonl, TensorBoard scalars, and a loss-curve PNG at the end.

A run that starts at step S (S = 0 for a fresh run, the checkpoint's step after a resume) replaces whatever the
previous process logged after S: ``metrics.jsonl`` is cut back to its records with ``step <= S`` (atomically) and
TensorBoard is told to purge events from step S + 1 on (``purge_step``), so the steps a killed run logged after
its last checkpoint are not drawn twice.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    except (ImportError, OSError):
        return 0.0


class RunLogger:
    """Only the main process writes; other ranks get a silent logger."""

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, enabled: bool, progress: bool,
                 tensorboard: bool, device: torch.device):
        self.run_dir, self.enabled, self.device = run_dir, enabled, device
        self.bar = self.tb = self.file = None
        self.last_time, self.images = time.perf_counter(), 0
        if not enabled:
            return
        truncate_metrics(run_dir / "metrics.jsonl", start_step)
        self.file = open(run_dir / "metrics.jsonl", "a")  # noqa: SIM115 - kept open for the run
        if progress:
            from catlip.progress import progress_bar

            # a bar on a terminal; in a log, plain periodic lines (no carriage returns between the run's messages)
            self.bar = progress_bar(total=total_steps, initial=start_step, desc="pretrain", unit="step")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # hides events a previous process wrote for steps > start_step (TensorBoard's restart convention)
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start_step + 1)

    def count(self, images: int) -> None:
        self.images += images
        if self.bar is not None:
            self.bar.update(1)

    def log(self, step: int, metrics: dict) -> dict:
        """Write one record (img/s is measured since the previous record)."""
        now = time.perf_counter()
        rate = self.images / max(now - self.last_time, 1e-9)
        self.last_time, self.images = now, 0
        record = {"step": step, **metrics, "img_per_s": round(rate, 2),
                  "peak_mem_mb": round(peak_memory_mb(self.device), 1), "time": time.time()}
        if not self.enabled:
            return record
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self.tb.add_scalar(f"train/{k}", v, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", img_s=f"{rate:.0f}")
        return record

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.file.close()
        plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep only the records of ``path`` with ``step <= last_step`` (atomic replace); returns how many were dropped.

    Unparseable lines (e.g. a record cut short by a kill) are dropped too; records without a step are kept.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    lines = text.splitlines()
    keep = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        step = rec.get("step") if isinstance(rec, dict) else None
        if not isinstance(step, (int, float)) or step <= last_step:
            keep.append(line)
    if len(keep) == len(lines) and text.endswith("\n"):
        return 0
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in keep))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(lines) - len(keep)


def plot_loss(metrics_file: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [], []
    for line in metrics_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if "loss" in rec:
            steps.append(rec["step"])
            losses.append(rec["loss"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker="." if len(steps) < 50 else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title(metrics_file.parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# Recipes whose text tower is sized to configs/tiny_cpu.yaml's image tower; the warning below points at them.
MATCHED_RECIPES = {"siglip": "configs/siglip_tiny_cpu.yaml", "superclip": "configs/superclip_tiny_cpu.yaml",
                   "lit": "configs/lit_tiny_cpu.yaml"}
TEXT_TOWER_RATIO = 4  # a text tower this many times the image tower's size dominates each step


def _count(modules, trainable: bool = False) -> int:
    return sum(p.numel() for m in modules if m is not None for p in m.parameters()
               if p.requires_grad or not trainable)


def tower_parameters(method: torch.nn.Module) -> dict[str, int]:
    """Parameter counts of a method's towers. The image tower is the backbone with its head and/or projection;
    the text tower's token-embedding table is counted apart, since a lookup in it costs almost nothing per step."""
    image = [getattr(method, "backbone", None), getattr(method, "head", None), getattr(method, "image_proj", None)]
    counts = {"backbone": _count(image[:1]), "head": _count(image[1:2]), "projection": _count(image[2:]),
              "image": _count(image), "image_trainable": _count(image, True)}
    text = getattr(method, "text", None)
    if text is not None:
        table = getattr(text, "token_embedding", None)
        counts["token_embedding"] = _count([table])
        counts["text"] = _count([text]) - counts["token_embedding"]
    return counts


def millions(n: int) -> str:
    """``n`` in millions with three significant digits, trailing zeros kept: 0.360 M, 6.32 M, 86.6 M."""
    import math

    x = n / 1e6
    digits = max(0, 2 - math.floor(math.log10(x))) if x > 0 else 0
    return f"{x:.{digits}f} M"


def tower_summary(method: torch.nn.Module) -> str:
    """The parameter counts printed at the start of every run."""
    c = tower_parameters(method)
    parts = [f"{name} {millions(c[name])}" for name in ("backbone", "head", "projection") if c[name]]
    parts = parts if len(parts) > 1 else []
    if c["image_trainable"] != c["image"]:
        parts.append(f"{millions(c['image'] - c['image_trainable'])} locked")
    line = f"image tower {millions(c['image'])} parameters" + (f" ({', '.join(parts)})" if parts else "")
    if "text" in c:
        line += f"; text tower {millions(c['text'])} (+ {millions(c['token_embedding'])} token embedding)"
    return line


def text_tower_warning(method: torch.nn.Module, cfg) -> str | None:
    """A text tower many times the image tower dominates each step: speed and memory would then measure it, not
    the method."""
    c = tower_parameters(method)
    if "text" not in c or c["text"] <= TEXT_TOWER_RATIO * c["image"]:
        return None
    m = cfg.model
    recipe = MATCHED_RECIPES.get(cfg.method.name, "configs/clip_tiny_cpu.yaml")
    return (f"the text tower ({m.text_layers} layers x {m.text_width} wide, {millions(c['text'])} without its token "
            f"embedding) is {c['text'] / c['image']:.0f}x the image tower ({millions(c['image'])}): it dominates "
            f"each step's time and memory, so a speed comparison measures the text tower, not the method; size it "
            f"with model.text_width / model.text_layers, as the matched recipe {recipe} does")
