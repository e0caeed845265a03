"""One error family: every user-fixable error is a CatlipError from catlip.errors, and `catlip` prints any of them
as one line on stderr and exits 2, wherever it is raised (the config, building the method or the backbone,
`finetune --set`)."""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import catlip
from catlip import errors
from catlip.cli import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = Path(catlip.__file__).resolve().parent
ERROR_CLASSES = [c for _, c in inspect.getmembers(errors, inspect.isclass)
                 if issubclass(c, BaseException) and c.__module__ == errors.__name__]
# The smallest real model: a 1-block ViT on 32 px images, no dataloader workers, no logging side files.
TINY = ["model.backbone=vit_tiny_patch16_224",
        "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
        "model.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.synthetic_size=8",
        "optim.steps=1", "optim.warmup_steps=0", "train.progress=false", "train.tensorboard=false"]
CLIP = ["method.name=clip", "model.embed_dim=32", "model.text_width=32", "model.text_layers=1", "model.text_heads=2",
        "data.context_length=16"]


def _one_line(err: str, command: str) -> str:
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"catlip {command}: error: "), err
    return lines[0]


# ---------------------------------------------------------------- the family


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_class_is_a_catlip_error(cls):
    assert issubclass(cls, errors.CatlipError)


def test_the_family_is_complete_and_old_import_locations_still_work():
    from catlip.cli import CliError
    from catlip.config import ConfigError
    from catlip.models.backbone import BackboneError
    from catlip.train.checkpoint import RunDirError

    names = {c.__name__ for c in ERROR_CLASSES}
    assert {"CatlipError", "ConfigError", "CliError", "ResourceMissingError", "VocabularyError", "CheckpointError",
            "DataError", "RunDirError", "BackboneError"} <= names
    assert (ConfigError, CliError, RunDirError, BackboneError) == (
        errors.ConfigError, errors.CliError, errors.RunDirError, errors.BackboneError)
    assert issubclass(ConfigError, ValueError)  # as before the move


def _error_classes_defined(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    bases = lambda node: [ast.unparse(b) for b in node.bases]  # noqa: E731
    return [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any(re.search(r"(Error|Exception)$", b) for b in bases(node))]


def test_error_classes_are_defined_in_errors_py_only():
    elsewhere = {str(p.relative_to(PACKAGE)): names for p in sorted(PACKAGE.rglob("*.py"))
                 if p.name != "errors.py" or p.parent != PACKAGE
                 if (names := _error_classes_defined(p))}
    assert not elsewhere, f"define user-facing errors in catlip/errors.py (subclass CatlipError): {elsewhere}"


def test_one_line_joins_a_multi_line_message():
    assert errors.one_line(errors.ConfigError("config file x.yaml is not valid YAML: while parsing\n  in line 3\n")) \
        == "config file x.yaml is not valid YAML: while parsing; in line 3"
    assert errors.one_line(errors.DataError("")) == "DataError"


# ---------------------------------------------------------------- pretrain: errors raised while building the method


def test_bad_method_loss_is_one_line_and_exit_2(tmp_path):
    """The real command in a fresh process: stderr holds the error line and nothing else."""
    proc = subprocess.run(
        [sys.executable, "-m", "catlip.cli", "pretrain", "--config", str(ROOT / "configs" / "tiny_cpu.yaml"),
         "method.loss=nonsense", f"train.output_dir={tmp_path / 'run'}", "data.synthetic_size=256",
         "data.num_workers=0", "train.progress=false", "train.tensorboard=false"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert _one_line(proc.stderr, "pretrain") == (
        "catlip pretrain: error: method.loss='nonsense' is not a classification loss; choose from asl, bce, "
        "idf_softmax, soft_margin, two_way")
    # stdout may hold the run's opening summary (the vocabulary it built) before the method is built
    assert "Traceback" not in proc.stderr + proc.stdout and "error" not in proc.stdout


@pytest.mark.parametrize("overrides, message", [
    (["method.loss=bce"], "method clip trains with its own loss; method.loss='bce' is unsupported"),
    (["model.backbone=no_such_net"], "unknown timm model 'no_such_net' (see timm.list_models())"),
    (["model.backbone_kwargs={no_such_arg: 1}"], "timm cannot build 'vit_tiny_patch16_224' with"),
    (["optim.steps=2.5"], "optim.steps: expected int, got 2.5"),
    (["optim.lr=[1, 2]"], "optim.lr: expected float, got [1, 2]"),
    (["train.seed=true"], "train.seed: expected int, got True"),
    (["config.yaml"], "override 'config.yaml' must look like section.key=value"),
    (["data.augment=nonsense"], "data.augment must be one of none | rrc_flip | randaugment, got 'nonsense'"),
    (["train.precision=fp8"], "train.precision must be one of auto | fp32 | bf16 | fp16, got 'fp8'"),
    (["optim.grad_accum=0"], "model.image_size and optim.grad_accum must be positive"),
    (["train.device=nonsense"], "train.device='nonsense' is not a torch device; use auto, cpu, cuda or cuda:N"),
], ids=["clip-loss", "unknown-backbone", "backbone-kwarg", "fractional-int", "list-for-float", "bool-for-int",
        "not-an-override", "augment", "precision", "grad-accum", "device"])
def test_pretrain_config_and_build_errors_are_one_line(tmp_path, capsys, overrides, message):
    # CLIP: no vocabulary to build first, so each case costs one config parse (and at most one timm lookup)
    rc = main(["pretrain", *TINY, *CLIP, f"train.output_dir={tmp_path / 'run'}", *overrides])
    line = _one_line(capsys.readouterr().err, "pretrain")
    assert rc == 2 and line.startswith(f"catlip pretrain: error: {message}"), line


# ---------------------------------------------------------------- finetune --set


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real checkpoint, as cheap as one gets: one optimizer step of a 1-block CLIP on 8 synthetic pairs, plus a
    two-class image folder to fine-tune on."""
    from PIL import Image

    root = tmp_path_factory.mktemp("finetune")
    assert main(["pretrain", *TINY, *CLIP, f"train.output_dir={root / 'run'}"]) == 0
    for k, colour in enumerate(["red", "blue"]):
        (root / "train" / colour).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(root / "train" / colour / f"{i}.png")
    return root


@pytest.mark.parametrize("setting, message", [
    ("epoch=2", "unknown key(s) in finetune: epoch; known: alpha, batch_size, betas, clip_grad, device, epochs, "),
    ("epochs=two", "finetune.epochs: expected int, got 'two'"),
    ("epochs=2.5", "finetune.epochs: expected int, got 2.5"),
    ("lr=fast", "finetune.lr: expected float, got 'fast'"),
    ("init=magic", "init must be random or transfer, got 'magic'"),
    ("epochs", "override 'epochs' must look like section.key=value"),
], ids=["unknown-key", "not-an-int", "fractional-int", "not-a-float", "bad-choice", "no-value"])
def test_bad_finetune_set_is_one_line_and_exit_2(tiny_run, tmp_path, capsys, setting, message):
    capsys.readouterr()
    rc = main(["finetune", str(tiny_run / "run"), "--train", str(tiny_run / "train"), "--set", "epochs=1",
               "--set", setting, "--workers", "0", "--device", "cpu", "--no-progress", "-o", str(tmp_path / "o.json")])
    captured = capsys.readouterr()
    line = _one_line(captured.err, "finetune")
    assert rc == 2 and line.startswith(f"catlip finetune: error: {message}"), line
    assert captured.out == "" and not (tmp_path / "o.json").exists()


def test_a_terminal_sees_a_first_line_before_torch_loads(monkeypatch):
    """`catlip probe ...` on a terminal says it is starting before the (slow) torch import; logs do not get it."""
    import io
    import sys

    from catlip import cli

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh process; restored by monkeypatch
    args = cli.build_parser().parse_args(["zeroshot", "run", "--test", "x"])
    cli._say_starting(args)
    assert tty.getvalue() == "catlip zeroshot: starting (loading PyTorch) ...\n"
    args = cli.build_parser().parse_args(["labels", "a dog"])
    cli._say_starting(args)  # a torch-free command: nothing to announce
    assert tty.getvalue().count("\n") == 1
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    cli._say_starting(cli.build_parser().parse_args(["zeroshot", "run", "--test", "x"]))
    assert log.getvalue() == ""
