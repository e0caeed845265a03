"""The measured inputs of `catlip plan`: per method, step time (fixed + per sample) and memory on one device.

Without ``--measured`` the plan uses the committed single-H100 measurement (``benchmarks/results/
train_step_cuda.json``: ViT-B/16, batch 256, bf16), copied below so an installed catlip plans without the repo.
``--measured`` reads either that file's format (one batch size: the step is taken as all per-sample time) or the
``--split`` output of ``benchmarks/train_step.py`` (fixed and per-sample terms fitted over several batch sizes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from catlip.errors import CliError, DataError

from .arch import towers

MIB = 2**20
STATIC_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW's two moments
REFERENCE_PEAK_TFLOPS = {"h100": 989.0, "h200": 989.0, "a100": 312.0}  # dense bf16, by device name

# benchmarks/results/train_step_cuda.json, rows "catlip" and "clip" (NVIDIA H100 80GB HBM3, 2026)
H100_REFERENCE = {
    "device": "NVIDIA H100 80GB HBM3", "backbone": "vit_base_patch16_224",
    "train_step": [{"method": "catlip", "batch": 256, "step_s": 0.107, "peak_mem_mb": 18441.7},
                   {"method": "clip", "batch": 256, "step_s": 0.1498, "peak_mem_mb": 22852.2}],
}


@dataclass(frozen=True)
class Calibration:
    """One method measured on one device: time = fixed_s + per_sample_s x batch, memory likewise (MiB)."""

    method: str
    device: str
    peak_tflops: float | None
    backbone: str
    fixed_s: float
    per_sample_s: float
    mem_fixed_mib: float
    mem_per_sample_mib: float
    batch: int  # a batch size it was measured at (the single-device point the plan reproduces)


def _peak(device: str) -> float | None:
    return next((v for k, v in REFERENCE_PEAK_TFLOPS.items() if k in device.lower()), None)


def _peak_mem(row: dict) -> float:
    """Peak MiB of a row: the GPU's max allocated, or on a CPU the process's peak RSS."""
    return row["peak_mem_mb"] if "peak_mem_mb" in row else row["peak_rss_mb"]


MEASURED = ("catlip", "clip")  # the methods whose train_step rows calibrate the planner (one of each family)


def _from_rows(data: dict, backbone: str) -> dict[str, Calibration]:
    out = {}
    for row in data["train_step"]:
        if "error" in row or row.get("backbone", backbone) != backbone or row["method"] not in MEASURED:
            continue
        params = sum(t.params for t in towers(row["method"], backbone).values())
        static = params * STATIC_BYTES_PER_PARAM / MIB
        out[row["method"]] = Calibration(row["method"], data["device"], _peak(data["device"]), backbone, 0.0,
                                         row["step_s"] / row["batch"], static,
                                         (_peak_mem(row) - static) / row["batch"], row["batch"])
    return out


def _from_split(data: dict) -> dict[str, Calibration]:
    out = {}
    for method, fit in data["fit"].items():
        parts = [v for k, v in fit.items() if k != "memory"]
        out[method] = Calibration(method, data["device"], data.get("peak_tflops") or _peak(data["device"]),
                                  data["backbone"], sum(p["fixed_s"] for p in parts),
                                  sum(p["per_sample_s"] for p in parts), fit["memory"]["fixed_mb"],
                                  fit["memory"]["per_sample_mb"], data["held_out_batch"])
    return out


def load(path: str | None = None) -> dict[str, Calibration]:
    """method -> Calibration, from ``path`` (a train_step JSON) or the built-in H100 reference."""
    if path is None:
        return _from_rows(H100_REFERENCE, H100_REFERENCE["backbone"])
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read --measured {path}: {err}") from err
    if "fit" in data:
        return _from_split(data)
    if "train_step" in data:
        backbone = next((r["backbone"] for r in data["train_step"] if r.get("method") == MEASURED[0]),
                        "vit_base_patch16_224")
        return _from_rows(data, backbone)
    raise CliError(f"--measured {path} is neither a train_step_<device>.json nor a --split result")
