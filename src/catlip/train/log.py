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
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="pretrain", unit="step", dynamic_ncols=True)
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
