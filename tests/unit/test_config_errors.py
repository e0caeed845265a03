"""Config values and files that cannot work are one line and exit code 2 before any training (issue #19)."""

from __future__ import annotations

import pytest

from catlip.cli import main
from catlip.train import loop


@pytest.fixture
def no_training(monkeypatch):
    def started(*args, **kwargs):
        raise AssertionError("training started with a config that should have been refused")

    monkeypatch.setattr(loop, "pretrain", started)


def _pretrain(tmp_path, capsys, text: str, *overrides) -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    capsys.readouterr()
    assert main(["pretrain", "--config", str(recipe), f"train.output_dir={tmp_path / 'run'}", *overrides]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lr=nan", "optim.lr must be a finite number >= 0, got nan"),
    ("optim.lr=.inf", "optim.lr must be a finite number >= 0, got inf"),
    ("optim.lr=-1", "optim.lr must be a finite number >= 0, got -1.0"),
    ("optim.weight_decay=-0.05", "optim.weight_decay must be a finite number >= 0, got -0.05"),
    ("optim.warmup_steps=-1", "optim.warmup_steps must be a finite number >= 0, got -1"),
    ("optim.eps=0", "optim.eps must be a finite number > 0, got 0.0"),
    ("optim.clip_grad=nan", "optim.clip_grad must be a finite number >= 0, got nan"),
    ("train.nonfinite_patience=0", "train.nonfinite_patience must be a finite number >= 1, got 0"),
    ("train.resume_changes=maybe", "train.resume_changes must be one of refuse | allow, got 'maybe'"),
])
def test_bad_numbers_are_one_line_rc_2(tmp_path, capsys, no_training, override, message):
    assert _pretrain(tmp_path, capsys, "method:\n  name: clip\n", override) == f"catlip pretrain: error: {message}"


@pytest.mark.parametrize(("text", "kind"), [("- method: clip\n- optim: {lr: 0.1}\n", "list"),
                                            ("just a sentence\n", "str"), ("3.5\n", "float")])
def test_a_config_file_that_is_not_a_mapping_is_one_line_rc_2(tmp_path, capsys, no_training, text, kind):
    recipe = tmp_path / "recipe.yaml"
    assert _pretrain(tmp_path, capsys, text) == (
        f"catlip pretrain: error: config file {recipe}: expected a mapping of sections (data, model, method, optim, "
        f"train) at the top level, got a {kind}")


def test_good_numbers_still_load(tmp_path):
    from catlip.config import load_config

    cfg = load_config(None, ["optim.lr=0", "optim.warmup_steps=0", "optim.clip_grad=0", "train.resume_changes=allow"])
    assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.train.nonfinite_patience) == (0.0, 0, 3)


def test_a_task_recipe_given_to_pretrain_says_which_commands_take_it(capsys):
    """configs/finetune_*.yaml has no sections: the error lists its keys and names the commands that read it."""
    from catlip.cli import main

    assert main(["pretrain", "--print-config", "--config", "configs/finetune_coco_vit_b16.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key(s) in config: batch_size" in err
    assert err.endswith("a recipe without sections is one of `catlip finetune`, `segment` or `detect`")
