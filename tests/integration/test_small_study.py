"""Smoke run of benchmarks/small_study.py --quick on the real Flickr8k / CIFAR-10 shards, and its resume."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("catlip", "superclass", "clip", "superclip")


def _script():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    return importlib.import_module("small_study")


def _args(shared_data, tmp_path) -> list[str]:
    return ["--quick", "--threads", "1", "--data", str(shared_data), "--work", str(tmp_path / "work"),
            "--output", str(tmp_path / "result.json")]


@pytest.fixture(scope="module")
def quick(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small_study")
    result = _script().main(_args(shared_data, tmp))
    return result, tmp


@pytest.mark.slow
def test_quick_study_trains_every_method_and_evaluates_every_run(quick):
    result, tmp = quick
    saved = json.loads((tmp / "result.json").read_text())
    assert saved["command"].startswith(".venv/bin/python benchmarks/small_study.py --quick")
    runs = saved["runs"]
    # every budget once (seed 0), plus the second seed at the largest budget
    assert sorted((r["method"], r["epochs"], r["seed"]) for r in runs) == sorted(
        [(m, e, 0) for m in METHODS for e in (0.5, 1.0)] + [(m, 1.0, 1) for m in METHODS])
    for r in runs:
        assert r["samples_seen"] == r["steps"] * 32 and not r["diverged"]
        assert r["steps"] == round(r["epochs"] * 1000 / 32)
        ev = r["eval"]
        assert 0.0 <= ev["cifar10"]["top1"] <= 1.0 and 0.0 <= ev["flickr_multilabel"]["mAP"] <= 1.0
        expected_mode = "head caption scoring" if r["method"] in ("catlip", "superclass") else "text tower"
        assert ev["retrieval"]["mode"] == expected_mode
        assert 0.0 <= ev["retrieval"]["i2t_R@1"] <= ev["retrieval"]["i2t_R@5"] <= 1.0
    # the two seeds of one budget are different runs
    seeds = {r["seed"]: r["final_loss"] for r in runs if r["method"] == "catlip" and r["epochs"] == 1.0}
    assert seeds[0] != seeds[1]
    catlip = next(r for r in runs if r["method"] == "catlip" and r["epochs"] == 1.0 and r["seed"] == 0)
    losses = [loss for _, loss in catlip["loss_curve"]]
    tail = losses[-max(2, len(losses) // 3):]
    assert len(losses) >= 4 and sum(tail) / len(tail) < losses[0], losses
    floor = saved["random_init"]
    assert floor["retrieval"]["mode"].startswith("chance") and 0.0 < floor["cifar10"]["top1"] < 1.0
    assert all(saved["timing"][m]["step_time_s"] > 0 for m in METHODS)


@pytest.mark.slow
def test_quick_study_transfer_tables_and_outputs(quick):
    _, tmp = quick
    saved = json.loads((tmp / "result.json").read_text())
    tasks = saved["tasks"]
    assert len(tasks["flickr_multilabel"]["classes"]) == 10 and tasks["flickr_multilabel"]["classes"][0] == "dog"
    objects = tasks["flickr_objects"]
    assert len(objects["classes"]) == 3 and min(objects["train_per_class"]) >= 7
    for method in ("catlip", "superclass"):
        for task in ("objects", "cifar10"):
            summary = saved["transfer"][method][task]["summary"]
            cells = {(s["kind"], s["value"], s["init"]) for s in summary}
            assert cells == {(k, v, i) for k, vs in (("shots", (1, 5)), ("fraction", (0.1, 1.0))) for v in vs
                             for i in ("random", "transfer")}
            assert all(math.isfinite(s["top1_mean"]) for s in summary)
        # the object classes are frequent synsets of the train captions: every one maps onto the head
        assert saved["transfer"][method]["objects"]["coverage"]["counts"]["random"] == 0
    for name in ("small_study_fig4.png", "small_study_fig5.png"):
        assert (tmp / "result" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp / "result.md").read_text()
    assert "| CatLIP | 1 | 2 |" in md and "head caption scoring" in md


@pytest.mark.slow
def test_interrupted_study_resumes_from_its_checkpoints(quick, shared_data):
    result, tmp = quick
    work = tmp / "work"
    victim = work / "clip-e1-s1"
    before = json.loads((victim / "record.json").read_text())
    # killed after the last checkpoint, before the run was recorded and evaluated
    (victim / "record.json").unlink()
    (victim / "eval.json").unlink()
    kept = (work / "catlip-e1-s0" / "record.json").stat().st_mtime_ns
    again = _script().main(_args(shared_data, tmp))
    after = next(r for r in again["runs"] if r["name"] == "clip-e1-s1")
    assert after["final_loss"] == before["final_loss"] and after["steps"] == before["steps"]
    assert after["eval"]["cifar10"]["top1"] == before_eval(result, "clip-e1-s1")["cifar10"]["top1"]
    assert (work / "catlip-e1-s0" / "record.json").stat().st_mtime_ns == kept  # finished runs are reused


def before_eval(result: dict, name: str) -> dict:
    return next(r for r in result["runs"] if r["name"] == name)["eval"]


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        _script().main(["--quick", "--data", str(tmp_path / "nowhere"), "--work", str(tmp_path / "w")])
    assert "missing data" in str(err.value) and "\n" not in str(err.value)


def test_a_run_recorded_under_the_deprecated_image_size_key_is_still_reused():
    same = _script().same_settings
    now = ["model.image_size=32", "data.batch_size=128"]
    assert same(["data.image_size=32", "data.batch_size=128"], now)  # recorded before the key moved
    assert same(now, now)
    assert not same(["data.image_size=64", "data.batch_size=128"], now)
    assert not same(None, now) and not same(["data.batch_size=128"], now)
