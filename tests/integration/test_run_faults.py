"""Faults of training runs (issue #8): damaged checkpoints, unwritable run dirs, leftovers, logs after a resume."""

from __future__ import annotations

import os

import pytest
from tiny import metrics, pretrain_cli, pretrain_run  # tests/tiny.py

from catlip.cli import main
from catlip.train import loop

TINY = [
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}",
    "model.drop_path_rate=0.1",
    "model.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.synthetic_size=12",
    "optim.steps=4", "optim.warmup_steps=2", "optim.lr=0.002",
    "train.ckpt_every=2", "train.log_every=1", "train.progress=false", "train.tensorboard=false",
    # CLIP: no vocabulary to build, so the tests stay quick
    "method.name=clip", "model.embed_dim=32", "model.text_width=32", "model.text_layers=1",
    "model.text_heads=2", "data.context_length=16",
]


def _run(out, *extra):
    return pretrain_run(TINY, out, *extra)


def _cli(out, *extra) -> int:
    return pretrain_cli(TINY, out, *extra)


_metrics = metrics


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("catlip pretrain: error: ")
    return err


def test_resume_auto_with_every_checkpoint_damaged_names_each_file(tmp_path, capsys):
    _run(tmp_path, "train.keep_checkpoints=3")
    ck = tmp_path / "checkpoints"
    model = ck / "step_0000004" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])  # truncated
    (ck / "step_0000002" / "meta.json").unlink()  # incomplete
    capsys.readouterr()
    assert _cli(tmp_path, "optim.steps=6", "train.resume=auto") == 2
    err = _one_line_error(capsys)
    assert "already holds checkpoints" not in err
    assert "train.resume=auto: no valid checkpoint under" in err
    assert f"{model}: truncated or corrupt" in err
    assert f"{ck / 'step_0000002'}: meta.json missing or unreadable" in err


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_unwritable_output_dir_is_one_line_rc_2_before_any_work(tmp_path, capsys, monkeypatch, where):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    out = afile / "run" if where == "under_a_file" else afile

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output dir was checked")

    monkeypatch.setattr(loop, "resolve_vocabulary", no_work)
    monkeypatch.setattr(loop.dd, "init_distributed", no_work)
    # method catlip: without the check, a vocabulary would be built first
    assert main(["pretrain", *TINY, "method.name=catlip", f"train.output_dir={out}"]) == 2
    err = _one_line_error(capsys)
    assert err == (f"catlip pretrain: error: train.output_dir {out} cannot be created or written ({afile} is a file, "
                   "not a folder); choose another train.output_dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_is_one_line_rc_2(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert _cli(ro / "run") == 2 and _cli(ro) == 2
    finally:
        ro.chmod(0o755)
    assert "cannot be created or written" in capsys.readouterr().err


def test_leftovers_of_interrupted_checkpoint_writes_are_removed_at_the_next_start(tmp_path):
    _run(tmp_path, "train.stop_after=2")
    ck = tmp_path / "checkpoints"
    stale = [ck / ".tmp-step_0000004-4242", ck / ".old-step_0000002-4242"]
    for d in stale:
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half written")
    (ck / ".latest.tmp4242").write_text("step_0000004\n")
    keep = [ck / ".tmp-notes", tmp_path / ".tmp-step_0000001-1", ck / "step_notes.txt"]
    keep[0].mkdir()
    keep[1].mkdir()
    keep[2].write_text("mine")
    _run(tmp_path, "train.resume=auto")
    assert not any(p.exists() for p in [*stale, ck / ".latest.tmp4242"])
    assert all(p.exists() for p in keep)
    assert sorted(p.name for p in ck.iterdir() if p.name.startswith("step_0")) == ["step_0000002", "step_0000004"]


def test_metrics_after_a_kill_and_resume_equal_an_uninterrupted_run(tmp_path, monkeypatch):
    straight, split = tmp_path / "straight", tmp_path / "split"
    _run(straight, "train.tensorboard=true")

    real_step, calls = loop.train_step, []

    def killed_at_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process dies during step 4: steps 1-3 logged, checkpoint at step 2
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        _run(split, "train.tensorboard=true")
    monkeypatch.setattr(loop, "train_step", real_step)
    assert [m["step"] for m in _metrics(split)] == [1, 2, 3]
    assert (split / "checkpoints" / "latest").read_text().strip() == "step_0000002"
    with open(split / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "loss": 1.')  # and a record cut short by the kill

    _run(split, "train.tensorboard=true", "train.resume=auto")
    want, got = _metrics(straight), _metrics(split)
    steps = [m["step"] for m in got]
    assert steps == sorted(set(steps)) == [m["step"] for m in want] == [1, 2, 3, 4]
    assert [m["loss"] for m in got] == [m["loss"] for m in want]  # exact resume: the same values again
    assert (split / "loss.png").is_file()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(split / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]  # the rolled-back step 3 is purged


def test_a_fresh_run_replaces_the_logs_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n{"step": 2, "loss": 8.0}\n')
    _run(tmp_path, "optim.steps=1")
    assert [m["step"] for m in _metrics(tmp_path)] == [1] and _metrics(tmp_path)[0]["loss"] != 9.0
