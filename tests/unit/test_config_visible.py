"""Visible configuration (issue #20): `catlip config keys`, docs/config.md, `pretrain --print-config`, and the
schedule settings that run without doing what they read as."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from catlip import config as config_module
from catlip import config_keys
from catlip.cli import main
from catlip.config import Config, ConfigError, load_config, schedule_warnings
from catlip.errors import CatlipError

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny_cpu.yaml"
SOURCE = Path(config_module.__file__).read_text()


def _dataclass_keys() -> dict[str, dataclasses.Field]:
    """section.field -> its dataclass field, for every section of Config."""
    return {f"{s.name}.{f.name}": f for s in dataclasses.fields(Config) for f in dataclasses.fields(s.default_factory)}


def test_every_dataclass_field_is_listed_with_type_default_and_meaning():
    found = {k.name: k for s in config_keys.sections() for k in s.keys}
    fields = _dataclass_keys()
    assert list(found) == list(fields) and len(found) > 70
    defaults = Config().to_dict()
    for name, key in found.items():
        section, field = name.split(".")
        assert key.type == str(fields[name].type)
        assert yaml.safe_load(key.default) == defaults[section][field], name  # the default reads back as itself
        assert len(key.meaning) > 10, name
    assert found["optim.warmup_steps"].type == "int" and found["optim.warmup_steps"].default == "100"
    assert found["data.train"].default == "[synthetic]"
    assert config_keys.undocumented(config_keys.sections()) == []


def test_a_field_or_section_without_a_comment_fails_the_check():
    bare = SOURCE.replace("    synthetic_size: int = 2048  # images in the embedded synthetic set "
                          "(data.train=[synthetic])\n", "    synthetic_size: int = 2048\n")
    bare = bare.replace('    """The pre-training method, its label source and loss."""\n\n', "")
    assert bare.count("\n") == SOURCE.count("\n") - 2  # both edits applied
    assert config_keys.undocumented(config_keys.sections(bare)) == ["method", "data.synthetic_size"]
    with pytest.raises(CatlipError, match="data.synthetic_size"):
        config_keys.format_keys(bare)
    with pytest.raises(CatlipError, match="method"):
        config_keys.markdown(bare)


def test_meaning_is_the_comment_block_above_plus_the_trailing_comment():
    source = textwrap.dedent('''
        class C:
            """Doc
            string."""

            # first line
            # second line
            a: int = 1
            b: int = 2  # trailing
            # detached by a blank line

            c: int = 3
            # above
            d: list[int] = field(
                default_factory=list)  # below
            e: str = "# not a comment"
    ''')
    doc, helps = config_keys.field_comments(source, "C")
    assert doc == "Doc string."
    assert helps == {"a": "first line second line", "b": "trailing", "c": "", "d": "above below", "e": ""}


def test_docs_config_md_is_the_generated_text():
    committed = (ROOT / "docs" / "config.md").read_text()
    assert committed == config_keys.markdown(), "regenerate: catlip config keys --markdown > docs/config.md"
    for name in _dataclass_keys():
        assert f"| `{name}` |" in committed


def test_write_markdown_writes_the_generated_text(tmp_path):
    out = config_keys.write_markdown(tmp_path / "config.md")
    assert out.read_text() == config_keys.markdown()
    # a `|` in a meaning is escaped, so every table row keeps its four cells
    row = next(line for line in out.read_text().splitlines() if line.startswith("| `data.augment`"))
    assert "none \\| rrc_flip" in row and row.replace("\\|", "").count("|") == 5


def test_config_keys_command_lists_every_key(capsys):
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    for name, field in _dataclass_keys().items():
        assert f"  {name} ({field.type}) = " in out, name
    assert "  train.ckpt_every (int) = 200\n      write a checkpoint every N optimizer steps" in out
    assert main(["config", "keys", "--markdown"]) == 0
    assert capsys.readouterr().out == config_keys.markdown()


OVERRIDES = ["optim.steps=7", "method.label_options={proper_nouns: true}", "data.train=[a/{000..002}.tar, b.tar]",
             "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}", "train.output_dir=x y"]


def test_print_config_fed_back_as_config_gives_the_same_config(tmp_path, capsys):
    assert main(["pretrain", "--print-config", "--config", str(TINY), *OVERRIDES]) == 0
    printed = capsys.readouterr().out
    resolved = yaml.safe_load(printed)
    assert [f"{s}.{k}" for s in resolved for k in resolved[s]] == list(_dataclass_keys())  # every key, in order
    assert resolved["data"]["train"] == ["a/{000..002}.tar", "b.tar"] and resolved["optim"]["steps"] == 7
    assert resolved["optim"]["warmup_steps"] == 60  # from the recipe
    assert resolved["train"]["keep_checkpoints"] == 2  # a default the recipe does not set
    (tmp_path / "resolved.yaml").write_text(printed)
    again = load_config(tmp_path / "resolved.yaml")
    assert again == load_config(TINY, OVERRIDES)
    assert main(["pretrain", "--print-config", "--config", str(tmp_path / "resolved.yaml")]) == 0
    assert capsys.readouterr().out == printed
    assert not Path("x y").exists()  # nothing trained, no run dir


def test_print_config_warns_on_stderr_and_keeps_stdout_a_recipe(capsys):
    assert main(["pretrain", "--print-config", "optim.steps=6", "optim.warmup_steps=100"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out)["optim"]["warmup_steps"] == 100
    assert err.startswith("catlip: warning: optim.warmup_steps=100 >= optim.steps=6: ")
    assert "never reaches optim.lr=0.001: it peaks at 6e-05 (6%) on the last step" in err


def test_print_config_reports_a_bad_key_in_one_line(capsys):
    assert main(["pretrain", "--print-config", "optim.stpes=3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "unknown key(s) in optim: stpes" in err


def test_print_config_and_config_keys_do_not_import_torch():
    code = ("import sys, io, contextlib; from catlip.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['pretrain', '--print-config', '--config', {str(TINY)!r}, 'method.name=clip']) == 0\n"
            "    assert main(['config', 'keys']) == 0\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _warnings(*overrides: str) -> list[str]:
    return schedule_warnings(load_config(None, list(overrides)))


def test_warmup_longer_than_the_run_is_named_with_its_real_peak():
    (line,) = _warnings("optim.steps=6", "optim.warmup_steps=100", "optim.lr=0.002")
    assert line.startswith("optim.warmup_steps=100 >= optim.steps=6: the learning rate rises for the whole run")
    from catlip.train.optim import lr_at  # the schedule the trainer runs

    cfg = load_config(None, ["optim.steps=6", "optim.warmup_steps=100", "optim.lr=0.002"])
    peak = max(lr_at(step, cfg.optim) for step in range(6))
    assert f"it peaks at {peak:.3g} (6%)" in line and "lower optim.warmup_steps (e.g. to 0)" in line
    (equal,) = _warnings("optim.steps=40", "optim.warmup_steps=40")
    assert "reaches optim.lr=0.001 only on the last step, with no cosine decay" in equal and "e.g. to 4)" in equal


def test_sound_schedules_do_not_warn():
    assert schedule_warnings(load_config(TINY)) == []
    assert _warnings("optim.steps=1", "optim.warmup_steps=1") == []  # one step at the full rate, as it reads
    assert _warnings("optim.steps=40", "optim.warmup_steps=39", "train.stop_after=40", "optim.min_lr_ratio=1") == []


def test_other_misleading_schedules_warn():
    (stop,) = _warnings("optim.steps=10", "optim.warmup_steps=1", "train.stop_after=20")
    assert stop == ("train.stop_after=20 > optim.steps=10 has no effect: the run ends at step 10 (train.stop_after "
                    "only stops a run earlier)")
    (rise,) = _warnings("optim.min_lr_ratio=3")
    assert rise.startswith("optim.min_lr_ratio=3 > 1: after the warmup the learning rate rises from optim.lr to 0.003")


@pytest.mark.parametrize("key", ["train.ckpt_every", "train.log_every"])
def test_a_zero_checkpoint_or_log_interval_is_a_config_error(key):
    with pytest.raises(ConfigError, match="train.ckpt_every and train.log_every must be positive"):
        load_config(None, [f"{key}=0"])
