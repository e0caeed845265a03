"""Smoke run of benchmarks/lit_study.py --quick on the real Flickr8k / CIFAR-10 shards, and its reuse of runs."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_lit_study_compares_lit_with_clip_at_equal_wall_clock(shared_data, tmp_path):
    if not (shared_data / "flickr8k").is_dir() or not (shared_data / "cifar10").is_dir():
        pytest.skip(f"{shared_data} lacks flickr8k/ or cifar10/")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    script = importlib.import_module("lit_study")
    args = ["--quick", "--data", str(shared_data), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json")]
    result = script.main(args)
    runs, evals = result["runs"], result["evals"]
    for m in ("catlip", "superclass"):
        budget = runs[f"clip_budget_{m}"]
        # CLIP from scratch gets the steps that fit the LiT pipeline's measured wall-clock at CLIP's step time
        spent = runs[m]["wall_s_this_process"] + runs[f"lit_{m}"]["wall_s_this_process"]
        assert budget["budget_s"] == pytest.approx(spent, abs=0.1)
        assert abs(budget["steps"] * result["clip_step_s"] - spent) <= result["clip_step_s"] + 0.1
        assert runs[f"lit_{m}"]["final_loss"] < runs[f"lit_{m}"]["first_loss"]
    assert set(evals) == {"clip", "lit_catlip", "lit_superclass", "clip_budget_catlip", "clip_budget_superclass"}
    for e in evals.values():
        assert e["mode"] == "text" and e["templates"] == 80
        assert 0.0 <= e["cifar10_zeroshot_top1"] <= e["cifar10_zeroshot_top5"] <= 1.0
        assert set(e["i2t"]) == {"R@1", "R@5", "R@10"}
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["evals"] == json.loads(json.dumps(evals))
    assert (tmp_path / "r.md").read_text().count("\n") == 7
    again = script.main(args)  # every run and evaluation is reused, not redone
    assert again["runs"]["lit_catlip"]["wall_s_this_process"] == runs["lit_catlip"]["wall_s_this_process"]
