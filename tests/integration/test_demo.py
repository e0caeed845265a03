"""`catlip demo` end to end with small settings (the full demo is timed in the report, not here)."""

from __future__ import annotations

import json

import pytest

from catlip.cli import main


@pytest.mark.slow
def test_demo_runs_and_prints_the_comparison(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--steps", "40", "--probe-size", "200", "--output", str(out), "data.synthetic_size=512",
                 "data.batch_size=32", "data.num_workers=0", "model.image_size=32", "train.progress=false",
                 "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}"]) == 0
    text, err = capsys.readouterr()
    assert "warmup" not in err  # --steps 40 shortens the warmup with the run (8 steps), so no schedule warning
    assert "linear probe top-1 (%)" in text and "random init" in text and "CatLIP head, zero-shot" in text
    result = json.loads((out / "demo_result.json").read_text())
    assert result["steps"] == 40 and result["vocab_size"] >= 10
    assert result["loss_last"] < result["loss_first"]
    for key in ("probe_random_init", "probe_pretrained", "head_zero_shot_pretrained"):
        assert 0.0 <= result[key] <= 100.0
    assert (out / "loss.png").is_file()


def test_demo_help_is_clear(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "random init" in capsys.readouterr().out


def test_demo_output_is_cleared_only_when_no_run_holds_it(tmp_path):
    """A folder left with only a run lock (a demo killed at start) is cleared; one a live run holds is not."""
    from catlip.demo import _clear_previous
    from catlip.errors import RunInUseError
    from catlip.train.checkpoint import LOCK_NAME, RunLock

    out = tmp_path / "demo"
    out.mkdir()
    (out / LOCK_NAME).write_text("")
    _clear_previous(out)
    assert not out.exists()
    out.mkdir()
    (out / "config.yaml").write_text("data: {}\n")
    held = RunLock(out)
    assert held.acquire() is None
    try:
        with pytest.raises(RunInUseError, match="in use by another run"):
            _clear_previous(out)
        assert (out / "config.yaml").exists()
    finally:
        held.release()
    _clear_previous(out)
    assert not out.exists()
