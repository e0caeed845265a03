"""Safety of training runs (issue #19): divergence, one writer per run dir, resume config changes, pre-emption."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import metrics, pretrain_cli, pretrain_run  # tests/tiny.py
import torch
from safetensors.torch import load_file, save_file

import catlip
from catlip.cli import main
from catlip.errors import CheckpointError
from catlip.train.checkpoint import LOCK_NAME, load_pretrained
from catlip.train.step import NonFiniteWatch

SRC = Path(catlip.__file__).resolve().parents[1]  # subprocesses import the catlip under test
TINY = [
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "model.drop_path_rate=0.1",  # uses the RNG, so a resume must restore it
    "model.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.synthetic_size=12",
    "optim.steps=4", "optim.warmup_steps=2", "optim.lr=0.002",
    "train.ckpt_every=2", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
    # CLIP: no vocabulary to build, so the tests stay quick
    "method.name=clip", "model.embed_dim=32", "model.text_width=32", "model.text_layers=1",
    "model.text_heads=2", "data.context_length=16",
]
# loss and gradient norm finite at step 1, NaN from step 2 on (the update of step 1 blows the weights up)
DIVERGING = ["optim.lr=1e10", "optim.warmup_steps=0", "optim.steps=8"]


def _run(out, *extra):
    return pretrain_run(TINY, out, *extra)


def _cli(out, *extra) -> int:
    return pretrain_cli(TINY, out, *extra)


_metrics = metrics


def _error_line(capsys) -> str:
    """The one line stderr holds: the error's message."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("catlip pretrain: error: "), lines
    return lines[0].removeprefix("catlip pretrain: error: ")


# `catlip pretrain` in another process, each step 0.3 s slower (time to signal it mid-run); numerics unchanged
SLOW_RUN = ("import sys, time, torch; torch.set_num_threads(1); from catlip.train import loop; real = loop.train_step; "
            "loop.train_step = lambda *a, **k: (time.sleep(0.3), real(*a, **k))[1]; from catlip.cli import main; "
            "sys.exit(main(sys.argv[1:]))")


def _slow_run(out, *extra) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SLOW_RUN, "pretrain", *TINY, *extra, f"train.output_dir={out}"],
                            env=env, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(run_dir: Path, proc, n: int) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = run_dir / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run logged fewer than {n} steps (exit code {proc.poll()})")


def _checkpoints(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))


# ---------------------------------------------------------------- A. finite training


def test_a_diverging_run_stops_after_patience_non_finite_steps(tmp_path, capsys):
    assert _cli(tmp_path, *DIVERGING, "train.ckpt_every=100") == 2
    assert _error_line(capsys) == (
        "training diverged: the loss or gradient norm was NaN/inf at steps 2..4 (train.nonfinite_patience=3); "
        "stopped at step 4; the run has no checkpoint yet; lower optim.lr or raise optim.warmup_steps")
    got = _metrics(tmp_path)
    assert [m["step"] for m in got] == [1, 2, 3, 4]  # it does not run on to optim.steps=8
    assert math.isfinite(got[0]["loss"]) and all(math.isnan(m["loss"]) for m in got[1:])
    assert _checkpoints(tmp_path) == []


def test_patience_is_a_setting(tmp_path, capsys):
    assert _cli(tmp_path, *DIVERGING, "train.ckpt_every=100", "train.nonfinite_patience=5") == 2
    assert "NaN/inf at steps 2..6 (train.nonfinite_patience=5); stopped at step 6;" in _error_line(capsys)


def _outputs(values):
    return [{"loss": torch.tensor(loss), "grad_norm": torch.tensor(norm)} for loss, norm in values]


def test_the_watch_counts_consecutive_non_finite_steps_and_ignores_fp16_overflow():
    nan, inf = float("nan"), float("inf")
    steps = _outputs([(1.0, nan), (1.0, 1.0), (nan, 1.0), (inf, inf), (1.0, 1.0), (1.0, inf), (nan, nan), (2.0, nan)])
    watch = NonFiniteWatch(3)
    for i, out in enumerate(steps[:5], 1):
        watch.add(i, out)
    assert watch.read() is None and watch.streak == 0  # steps 3-4 were bad, step 5 ended the streak
    for i, out in enumerate(steps[5:], 6):
        watch.add(i, out)
        assert watch.read() == (None if i < 8 else (6, 8))  # read at every step or once: the same answer
    scaled = NonFiniteWatch(2, scaled=True)  # fp16: an inf gradient norm is the GradScaler's skipped step
    for i, out in enumerate(steps, 1):
        scaled.add(i, out)
    assert scaled.read() == (3, 4)


def test_no_non_finite_checkpoint_is_written_and_the_last_good_one_survives_pruning(tmp_path, capsys):
    assert _cli(tmp_path, *DIVERGING, "train.ckpt_every=1", "train.keep_checkpoints=1") == 2
    good = tmp_path / "checkpoints" / "step_0000001"
    found = re.fullmatch(r"the weights are NaN/inf at step 2 \(model tensor '([\w.]+)'\); not saved; the last "
                         rf"checkpoint, {re.escape(str(good))}, is kept; lower optim.lr or raise optim.warmup_steps",
                         _error_line(capsys))
    assert found, "error does not name step 2, a tensor and the kept checkpoint"
    tensor = found.group(1)
    assert _checkpoints(tmp_path) == ["step_0000001"]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_0000001"
    weights = load_file(str(good / "model.safetensors"))
    assert tensor in weights and all(torch.isfinite(w).all() for w in weights.values())


def _poison(ckpt_dir: Path) -> str:
    """Put a NaN into one tensor of a written checkpoint (what a diverged run used to save)."""
    file = ckpt_dir / "model.safetensors"
    weights = load_file(str(file))
    name = sorted(k for k, v in weights.items() if v.is_floating_point())[3]
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, str(file), metadata={"format": "pt"})
    return name


def test_loading_or_resuming_a_checkpoint_with_nan_weights_is_one_line_naming_the_tensor(tmp_path, capsys):
    _run(tmp_path, "train.stop_after=2")
    ck = tmp_path / "checkpoints" / "step_0000002"
    name = _poison(ck)
    why = f"{ck / 'model.safetensors'}: tensor {name!r} is not finite (NaN or inf): the run had diverged"
    with pytest.raises(CheckpointError) as err:
        load_pretrained(ck)
    assert str(err.value) == why
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--output", str(tmp_path / "exported")]) == 2
    assert capsys.readouterr().err.strip() == f"catlip export: error: no valid checkpoint under {tmp_path}: {why}"
    assert _cli(tmp_path, "train.resume=auto") == 2
    assert why in _error_line(capsys)


# ---------------------------------------------------------------- B. one writer per run dir


def test_a_second_run_on_a_busy_output_dir_is_refused_naming_the_first(tmp_path, capsys):
    first = _slow_run(tmp_path, "optim.steps=40", "train.ckpt_every=100")
    try:
        _wait_for_steps(tmp_path, first, 1)
        assert _cli(tmp_path, "train.resume=auto") == 2  # a re-launched job while the first one still runs
        holder = f"pid {first.pid} on host {socket.gethostname()}"
        assert _error_line(capsys) == (f"{tmp_path} is in use by another run ({holder}, lock {tmp_path / LOCK_NAME}); "
                                       "wait for it to end or choose another train.output_dir")
        assert first.poll() is None
    finally:
        first.kill()  # SIGKILL: no clean release, the lock file still names the dead process
        first.communicate()
    assert _cli(tmp_path) == 0
    assert f"took over the lock of a run that is no longer running ({holder})" in capsys.readouterr().err
    assert _checkpoints(tmp_path) == ["step_0000002", "step_0000004"] and len(_metrics(tmp_path)) == 4
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: the next run starts without a note
    assert _cli(tmp_path, "optim.steps=6", "train.resume=auto") == 0
    assert "took over" not in capsys.readouterr().err


def test_the_lock_is_released_when_a_run_fails(tmp_path, capsys):
    assert _cli(tmp_path, *DIVERGING, "train.ckpt_every=100") == 2
    assert (tmp_path / LOCK_NAME).read_text() == ""
    capsys.readouterr()
    assert _cli(tmp_path, "optim.steps=1") == 0
    assert "took over" not in capsys.readouterr().err


# ---------------------------------------------------------------- C. config changes on resume


def test_resume_lists_changed_settings_and_refuses_inexact_ones_unless_allowed(tmp_path, capsys):
    _run(tmp_path, "train.stop_after=2")
    capsys.readouterr()
    with pytest.raises(CheckpointError) as err:
        _run(tmp_path, "train.resume=auto", "data.batch_size=2", "train.seed=5", "optim.lr=0.001")
    assert str(err.value) == ("resuming with changed data.batch_size, train.seed would not continue the run exactly "
                              "(other samples or crops); set train.resume_changes=allow to accept that, or restore "
                              "the stored values")
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("resume:")]
    assert said == ["resume: data.batch_size changed: 4 -> 2", "resume: optim.lr changed: 0.002 -> 0.001",
                    "resume: train.seed changed: 0 -> 5", "resume: train.stop_after changed: 2 -> 0"]
    assert _checkpoints(tmp_path) == ["step_0000002"]
    _run(tmp_path, "train.resume=auto", "data.batch_size=2", "train.seed=5", "train.resume_changes=allow")
    meta = json.loads((tmp_path / "checkpoints" / "step_0000004" / "meta.json").read_text())
    assert meta["samples_seen"] == 2 * 4 + 2 * 2 and meta["config"]["data"]["batch_size"] == 2


# ---------------------------------------------------------------- D. pre-emption

def _state(run_dir, step):
    ck = run_dir / "checkpoints" / f"step_{step:07d}"
    return load_file(str(ck / "model.safetensors")), torch.load(ck / "train_state.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_checkpoints_at_the_step_boundary_and_resume_is_exact(tmp_path, sig):
    steps = ["optim.steps=8", "train.ckpt_every=100"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    _run(straight, *steps)
    proc = _slow_run(split, *steps)
    _wait_for_steps(split, proc, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    stopped = _metrics(split)[-1]["step"]
    assert 2 <= stopped < 8
    assert _checkpoints(split) == [f"step_{stopped:07d}"]
    assert f"{sig.name} at step {stopped}: checkpoint written; continue with train.resume=auto " \
           f"(exit code {128 + sig})" in err
    _run(split, *steps, "train.resume=auto")
    (wa, sa), (wb, sb) = _state(straight, 8), _state(split, 8)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert all(torch.equal(oa[k]["exp_avg_sq"], ob[k]["exp_avg_sq"]) for k in oa)
    assert sa["samples_seen"] == sb["samples_seen"] == 32
    assert [m["loss"] for m in _metrics(split)] == [m["loss"] for m in _metrics(straight)]


@pytest.mark.slow
def test_a_signal_to_the_whole_process_group_still_checkpoints(tmp_path):
    """Schedulers (SLURM) signal the process group, data-loading workers included: they must not die before the
    main process has written its checkpoint."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, "pretrain", *TINY, "data.num_workers=1",
                             "optim.steps=8", "train.ckpt_every=100", f"train.output_dir={out}"],
                            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_steps(out, proc, 2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    stopped = _metrics(out)[-1]["step"]
    assert _checkpoints(out) == [f"step_{stopped:07d}"] and 2 <= stopped < 8
