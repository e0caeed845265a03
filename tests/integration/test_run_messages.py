"""Runs that say what they did (issue #20): the tower sizes and an oversized text tower, the schedule warning, the
vocabulary summary at the start of `catlip pretrain`, and what `catlip export` announces. One-step runs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from catlip.cli import main, timm_architecture
from catlip.config import load_config
from catlip.labels.vocab import Vocabulary
from catlip.train.log import millions, tower_parameters

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny_cpu.yaml"
CLIP_TINY = ROOT / "configs" / "clip_tiny_cpu.yaml"
QUICK = ["data.synthetic_size=16", "data.batch_size=8", "data.num_workers=0", "train.progress=false",
         "train.tensorboard=false", "train.log_every=1"]
SMALL = ["model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}", "data.vocab_min_count=1"]


def _pretrain(capsys, recipe, *overrides) -> tuple[list[str], list[str]]:
    """stdout lines (what the run is) and its warnings (stderr)."""
    assert main(["pretrain", "--config", str(recipe), *QUICK, *overrides]) == 0
    out, err = capsys.readouterr()
    return out.splitlines(), _warnings(err.splitlines())


def _warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if "warning" in line]


def _expected_counts(method) -> tuple[int, int, int]:
    """(image tower, text transformer without the table, token table), summed here module by module."""
    image = sum(p.numel() for m in (method.backbone, method.image_proj) for p in m.parameters())
    table = method.text.token_embedding.weight.numel()
    return image, sum(p.numel() for p in method.text.parameters()) - table, table


def test_default_text_tower_on_the_tiny_image_tower_warns(tmp_path, capsys):
    out = tmp_path / "clip"
    said, err = _pretrain(capsys, TINY, "method.name=clip", "data.batch_size=4", "data.synthetic_size=8",
                          "optim.steps=1", f"train.output_dir={out}")
    shutil.rmtree(out)  # a 63 M-parameter checkpoint with its optimizer state: ~0.7 GB
    from catlip.methods import build_method

    method = build_method(load_config(TINY, ["method.name=clip"]), 0)
    image, text, table = _expected_counts(method)
    assert table == 49408 * 512 and text > 90 * image
    counts = [line for line in said if line.startswith("image tower ")]
    assert counts == [f"image tower {millions(image)} parameters (backbone {millions(image - 512 * 96)}, projection "
                      f"{millions(512 * 96)}); text tower {millions(text)} (+ 25.3 M token embedding)"]
    (warning,) = err
    assert warning.startswith(f"catlip: warning: the text tower (12 layers x 512 wide, {millions(text)} without its "
                              f"token embedding) is {text / image:.0f}x the image tower ({millions(image)})")
    assert "model.text_width / model.text_layers" in warning and "configs/clip_tiny_cpu.yaml" in warning


def test_matched_clip_recipe_prints_real_counts_and_no_warning(tmp_path, capsys):
    out = tmp_path / "clip_tiny"
    said, err = _pretrain(capsys, CLIP_TINY, "optim.steps=1", f"train.output_dir={out}")
    from catlip.train.checkpoint import load_pretrained

    method = load_pretrained(out).method
    image, text, table = _expected_counts(method)
    assert table == 49408 * 128 and tower_parameters(method) == {
        "backbone": image - 96 * 96, "head": 0, "projection": 96 * 96, "image": image, "image_trainable": image,
        "text": text, "token_embedding": table}
    assert f"image tower {millions(image)} parameters (backbone {millions(image - 96 * 96)}, projection 0.00922 M); " \
           f"text tower {millions(text)} (+ 6.32 M token embedding)" in said
    assert text < 4 * image and err == []
    # the same run exported for open_clip into "dir/": paths joined, no "dir//"
    assert main(["export", str(out), "--format", "open_clip", "-o", f"{tmp_path / 'oc'}/"]) == 0
    printed = capsys.readouterr().out
    assert "//" not in printed and f"'local-dir:{tmp_path / 'oc'}'" in printed


def test_parameter_counts_in_millions():
    assert [millions(n) for n in (21_344, 359_712, 6_324_224, 86_567_656, 1_234_567_890)] == [
        "0.0213 M", "0.360 M", "6.32 M", "86.6 M", "1235 M"]


@pytest.fixture(scope="module")
def catlip_run(tmp_path_factory):
    """A fresh 2-step CatLIP run with warmup 100 (so the schedule warning shows) and what it printed."""
    out = tmp_path_factory.mktemp("messages") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()  # a module fixture cannot take capsys
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["pretrain", "--config", str(TINY), *QUICK, *SMALL, "optim.steps=2", "optim.warmup_steps=100",
                   f"train.output_dir={out}"])
    assert rc == 0, stderr.getvalue()
    return out, stdout.getvalue().splitlines(), _warnings(stderr.getvalue().splitlines())


def test_warmup_warning_states_the_learning_rate_the_run_logged(catlip_run):
    out, said, err = catlip_run
    (line,) = err  # the one warning
    lrs = [json.loads(r)["lr"] for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert lrs == pytest.approx([0.002 * 1 / 100, 0.002 * 2 / 100])
    assert line == (f"catlip: warning: optim.warmup_steps=100 >= optim.steps=2: the learning rate rises for the whole "
                    f"run and never reaches optim.lr=0.002: it peaks at {lrs[-1]:.3g} (2%) on the last step, with no "
                    "cosine decay; lower optim.warmup_steps (e.g. to 0)")
    assert said[-1] == str(out)  # stdout: the run's summary, then the run dir


def test_built_vocabulary_is_summarised(catlip_run):
    out, said, _ = catlip_run
    vocab = Vocabulary.load(out / "vocab.json")
    (line,) = [line for line in said if line.startswith("vocabulary: ")]
    covered = vocab.stats["captions_with_kept_label"] / vocab.num_captions
    assert len(vocab) > 8 and vocab.num_captions > 16  # several captions per synthetic image
    assert line == (f"vocabulary: {len(vocab)} classes (synsets labels) from {vocab.num_captions} captions, built from "
                    f"the training captions (data.vocab_min_count=1); most frequent: {', '.join(vocab.names[:8])}, "
                    f"...; {covered:.1%} of the captions hold at least one of them")
    assert vocab.counts[0] >= vocab.counts[7]  # the names listed are the most frequent ones


def test_classification_run_counts_backbone_and_head(catlip_run):
    out, said, _ = catlip_run
    from catlip.train.checkpoint import load_pretrained

    method = load_pretrained(out).method
    backbone = sum(p.numel() for p in method.backbone.parameters())
    head = sum(p.numel() for p in method.head.parameters())
    n = len(Vocabulary.load(out / "vocab.json"))
    assert head == n * 32 + n  # Linear(32 -> classes) with a bias
    assert [line for line in said if line.startswith("image tower")] == [
        f"image tower {millions(backbone + head)} parameters (backbone {millions(backbone)}, head {millions(head)})"]


def test_vocabulary_from_data_vocab_and_from_the_resumed_run_say_so(catlip_run, tmp_path, capsys):
    out, _, _ = catlip_run
    given = out / "vocab.json"
    said, err = _pretrain(capsys, TINY, *SMALL, "optim.steps=1", "optim.warmup_steps=1", f"data.vocab={given}",
                    f"train.output_dir={tmp_path / 'given'}")
    (line,) = [line for line in said if line.startswith("vocabulary: ")]
    assert f", read from data.vocab={given}; most frequent: " in line
    assert err == []
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    said, _ = _pretrain(capsys, TINY, *SMALL, "optim.steps=3", "optim.warmup_steps=100", "train.resume=auto",
                        f"train.output_dir={resumed}")
    (line,) = [line for line in said if line.startswith("vocabulary: ")]
    assert f", the run's own {resumed / 'vocab.json'}; most frequent: " in line


def test_folder_export_joins_the_path_and_names_the_overrides(catlip_run, tmp_path, capsys):
    out, _, _ = catlip_run
    target = f"{tmp_path / 'backbone'}/"
    assert main(["export", str(out), "-o", target]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {tmp_path / 'backbone' / 'model.safetensors'} + config.json (timm ")
    assert "//" not in printed and f"'local-dir:{tmp_path / 'backbone'}'" in printed
    args = json.loads((tmp_path / "backbone" / "config.json").read_text())["model_args"]
    assert args["patch_size"] == 8 and args["img_size"] == 48 and "drop_path_rate" in args
    assert ("(timm vit_tiny_patch16_224(depth=1, embed_dim=32, num_heads=2, patch_size=8, img_size=48)); load: "
            in printed)


def test_file_export_names_the_overrides(catlip_run, tmp_path, capsys):
    out, _, _ = catlip_run
    assert main(["export", str(out), "-o", str(tmp_path / "b.safetensors")]) == 0
    assert "(timm vit_tiny_patch16_224(depth=1, embed_dim=32, num_heads=2, patch_size=8, img_size=48)); " \
           in capsys.readouterr().out


def test_architecture_without_overrides_is_the_bare_name():
    assert timm_architecture({"name": "vit_base_patch16_224", "kwargs": {"drop_path_rate": 0.1}}) == \
        "vit_base_patch16_224"
    assert timm_architecture({"name": "resnet50", "kwargs": {"drop_rate": 0.0, "in_chans": 1}}) == \
        "resnet50(in_chans=1)"


def test_a_locked_image_tower_is_counted_as_locked():
    from catlip.methods.lit import LiTMethod
    from catlip.models.backbone import create_backbone
    from catlip.train.log import tower_summary

    cfg = load_config(CLIP_TINY, SMALL)
    method = LiTMethod(create_backbone(cfg.model), cfg.model, 32, unlocked_blocks=0)
    c = tower_parameters(method)
    backbone = sum(p.numel() for p in method.backbone.parameters())
    assert c["image"] - c["image_trainable"] == backbone  # the projection trains, the backbone does not
    assert tower_summary(method).startswith(
        f"image tower {millions(c['image'])} parameters (backbone {millions(backbone)}, projection "
        f"{millions(32 * 96)}, {millions(backbone)} locked); text tower ")


def test_closed_bpe_table_is_not_said_to_be_counted_from_captions(tmp_path):
    from catlip.train.vocab_setup import describe_vocabulary, vocabulary_origin

    cfg = load_config(TINY, ["method.name=superclass"])
    line = describe_vocabulary(Vocabulary.full_bpe(), vocabulary_origin(cfg, tmp_path, resuming=False))
    assert line == ("vocabulary: the whole CLIP BPE table, 49,408 classes (class id = BPE id), fixed by label source "
                    "bpe, not counted from the captions")
