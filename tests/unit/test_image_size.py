"""The model owns its input size (issue 22, item 3): ``model.image_size``, stored with the checkpoint's model
arguments; ``data.image_size`` is its deprecated name, still read from recipes, overrides and older runs.

An "old-style" run is a real tiny run whose ``meta.json`` and ``config.yaml`` are rewritten the way runs were
written before the move (the size under ``data``, none under ``model``).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from catlip.cli import main
from catlip.config import ConfigError, ModelConfig, load_config
from catlip.errors import CatlipError

DEPRECATED = "catlip: warning: data.image_size is deprecated and read as model.image_size"
TINY = ["model.backbone=vit_tiny_patch16_224",
        "model.backbone_kwargs={patch_size: 8, embed_dim: 32, depth: 1, num_heads: 2}",
        "model.image_size=32", "data.batch_size=4", "data.num_workers=0", "data.synthetic_size=8",
        "data.vocab_min_count=1", "optim.steps=1", "optim.warmup_steps=0", "train.progress=false",
        "train.tensorboard=false"]


def _old_style(config: dict) -> dict:
    config["data"]["image_size"] = config["model"].pop("image_size")
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny CatLIP run written now, and a copy of it rewritten as a run from before the move."""
    from catlip.train.loop import pretrain

    root = tmp_path_factory.mktemp("image_size")
    new = pretrain(load_config(None, [*TINY, f"train.output_dir={root / 'new'}"]))
    old = root / "old"
    shutil.copytree(new, old)
    for meta_file in (old / "checkpoints").glob("step_*/meta.json"):
        meta = json.loads(meta_file.read_text())
        meta_file.write_text(json.dumps({**meta, "config": _old_style(meta["config"])}))
    (old / "config.yaml").write_text(yaml.safe_dump(_old_style(yaml.safe_load((old / "config.yaml").read_text()))))
    return {"new": new, "old": old}


def _deprecation_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(DEPRECATED)]


def test_the_old_key_gives_the_same_config_and_says_so_once(tmp_path, capsys):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("data:\n  image_size: 40\n  batch_size: 8\n")
    want = load_config(None, ["model.image_size=40", "data.batch_size=8"])
    assert capsys.readouterr().err == ""
    for recipe_file, overrides in ((recipe, []), (None, ["data.image_size=40", "data.batch_size=8"])):
        cfg = load_config(recipe_file, overrides)
        assert cfg == want and cfg.model.image_size == 40 and not hasattr(cfg.data, "image_size")
        assert len(_deprecation_lines(capsys.readouterr().err)) == 1
    # the same value under both names is no conflict
    assert load_config(recipe, ["model.image_size=40"]) == want


def test_both_keys_disagreeing_is_a_one_line_config_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^data.image_size=40 and model.image_size=48 disagree; set only "
                                          r"model.image_size \(data.image_size is its deprecated name\)$"):
        load_config(None, ["data.image_size=40", "model.image_size=48"])
    recipe = tmp_path / "both.yaml"
    recipe.write_text("data:\n  image_size: 40\nmodel:\n  image_size: 48\n")
    assert main(["pretrain", "--print-config", "--config", str(recipe)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("catlip pretrain: error: data.image_size=40 and")


def test_an_override_wins_over_the_recipe_under_either_name(tmp_path, capsys):
    """Overrides apply on top of a recipe, so the old name on the command line beats the recipe's new one (and
    the reverse); only one layer naming both, differently, is a conflict."""
    new, old = tmp_path / "new.yaml", tmp_path / "old.yaml"
    new.write_text("model:\n  image_size: 48\n")
    old.write_text("data:\n  image_size: 48\n")
    assert load_config(new, ["data.image_size=32"]).model.image_size == 32
    assert load_config(old, ["model.image_size=64"]).model.image_size == 64
    assert len(_deprecation_lines(capsys.readouterr().err)) == 2


def test_print_config_and_config_keys_show_the_model_key(capsys):
    assert main(["pretrain", "--print-config", "data.image_size=40"]) == 0
    out, err = capsys.readouterr()
    printed = yaml.safe_load(out)
    assert printed["model"]["image_size"] == 40 and "image_size" not in printed["data"]
    assert _deprecation_lines(err) == err.splitlines()
    assert main(["config", "keys"]) == 0
    keys = capsys.readouterr().out
    assert "  model.image_size (int) = 64" in keys and "  data.image_size -> model.image_size" in keys
    assert "  data.image_size (int)" not in keys


def test_the_backbone_is_built_from_the_model_config_alone():
    from catlip.methods import build_method
    from catlip.models.backbone import create_backbone

    vit = ModelConfig(backbone="vit_tiny_patch16_224", backbone_kwargs={"patch_size": 8, "embed_dim": 32,
                                                                         "depth": 1, "num_heads": 2}, image_size=40)
    backbone = create_backbone(vit)
    assert backbone.catlip_spec["kwargs"]["img_size"] == 40 and backbone.patch_embed.img_size == (40, 40)
    for method in ("catlip", "clip", "superclip"):
        cfg = load_config(None, [*TINY, f"method.name={method}", "model.image_size=40", "model.text_width=32",
                                 "model.text_layers=1", "model.text_heads=2", "model.embed_dim=16"])
        assert build_method(cfg, 5).backbone.patch_embed.img_size == (40, 40), method


def test_the_checkpoint_records_the_size_with_the_model_arguments(runs):
    from catlip.train.checkpoint import load_pretrained

    (meta_file,) = (runs["new"] / "checkpoints").glob("step_*/meta.json")
    config = json.loads(meta_file.read_text())["config"]
    assert config["model"]["image_size"] == 32 and "image_size" not in config["data"]
    saved = yaml.safe_load((runs["new"] / "config.yaml").read_text())
    assert saved["model"]["image_size"] == 32 and "image_size" not in saved["data"]
    assert load_pretrained(runs["new"]).method.backbone.catlip_spec["kwargs"]["img_size"] == 32


def test_an_old_style_run_still_evaluates_and_exports(runs, tmp_path, capsys):
    from catlip.evaluate.common.model import load_eval_model
    from catlip.models.export import read_config

    new, old = (load_eval_model(str(runs[k]), announce=False) for k in ("new", "old"))
    assert _deprecation_lines(capsys.readouterr().err) == []  # a stored run's old names: nothing for a user to fix
    assert old.image_size == new.image_size == 32 and old.preprocess == new.preprocess
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(old.encoder()(x), new.encoder()(x))
    assert main(["export", str(runs["old"]), "-o", str(tmp_path / "old.safetensors")]) == 0
    assert read_config(tmp_path / "old.safetensors")["pretrained_cfg"]["input_size"] == [3, 32, 32]
    folder = _class_folders(tmp_path / "images")
    assert main(["knn", str(runs["old"]), "--train", str(folder), "--test", str(folder), "--k", "1", "--workers",
                 "0", "--no-progress", "-o", str(tmp_path / "knn.json")]) == 0
    assert json.loads((tmp_path / "knn.json").read_text())["image_size"] == 32


def _class_folders(root):
    from PIL import Image

    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 50, 220))):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (40 + 8 * i, 36), colour).save(root / name / f"{i}.png")
    return root


def test_an_old_style_run_resumes_and_feeds_lit(runs, tmp_path, capsys):
    from catlip.train.lit import lit_config
    from catlip.train.loop import pretrain

    lit = lit_config(runs["old"], None, ["model.embed_dim=16", "model.text_width=32", "model.text_layers=1",
                                         "model.text_heads=2", f"train.output_dir={tmp_path / 'lit'}"])
    assert lit.model.image_size == 32
    with pytest.raises(ConfigError, match="model.image_size=48 differs from the image tower's 32"):
        lit_config(runs["old"], None, ["data.image_size=48"])
    run = tmp_path / "resumed"
    shutil.copytree(runs["old"], run)
    capsys.readouterr()
    pretrain(load_config(None, [*TINY, "optim.steps=2", "train.resume=auto", f"train.output_dir={run}"]))
    err = capsys.readouterr().err
    assert "resuming from" in err and "model.image_size" not in err  # nothing changed, nothing incompatible
    assert "data.image_size" not in err  # the stored config is compared, not announced again
    meta = json.loads((run / "checkpoints" / "step_0000002" / "meta.json").read_text())
    assert meta["config"]["model"]["image_size"] == 32


def test_a_resume_at_another_size_stays_allowed_as_under_data():
    from catlip.train.checkpoint import check_compatible

    meta = {"config": load_config(None, ["model.image_size=32"]).to_dict(), "vocab_hash": None}
    check_compatible(meta, load_config(None, ["model.image_size=48"]).to_dict(), None)  # progressive resizing
    with pytest.raises(CatlipError, match="model.stem"):
        check_compatible(meta, load_config(None, ["model.stem=conv"]).to_dict(), None)
