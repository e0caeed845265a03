"""LiT (`catlip lit`): a locked pre-trained image tower, a text tower trained on it, the feature cache.

The data is a tiny planted set: noisy 32 px squares of eight colours, captioned with their colour, so a text tower
that learns to read the locked tower's features retrieves the right caption far above chance (1/8).
"""

from __future__ import annotations

import io
import json
import os
import random

import pytest
import torch
from shards import write_tar  # tests/shards.py

from catlip.cli import main
from catlip.errors import CatlipError, CheckpointError, ConfigError

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 50, 220), "yellow": (230, 220, 40),
           "black": (15, 15, 15), "white": (240, 240, 240), "purple": (130, 30, 160), "orange": (240, 140, 20)}
SOURCE = """
model:
  backbone: vit_tiny_patch16_224
  backbone_kwargs: {patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2}
  image_size: 32
data: {num_workers: 0, augment: none, batch_size: 32, vocab_min_count: 1}
optim: {steps: 20, warmup_steps: 2, lr: 0.003}
train: {progress: false, tensorboard: false, ckpt_every: 20}
"""
LIT = """
model: {embed_dim: 32, text_width: 32, text_layers: 1, text_heads: 2}
data: {batch_size: 32, num_workers: 0, context_length: 16, augment: none}
method: {feature_cache: auto}
optim: {lr: 0.003, warmup_steps: 5, steps: 60, weight_decay: 0.0001}
train: {progress: false, tensorboard: false, ckpt_every: 1000, log_every: 1}
"""


def _png(rgb, seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    img = Image.new("RGB", (32, 32), rgb)
    px = img.load()
    for _ in range(120):  # speckle, so no two images are the same
        x, y = rng.randrange(32), rng.randrange(32)
        px[x, y] = tuple(min(255, max(0, c + rng.randint(-60, 60))) for c in rgb)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def colour_shard(path, per_colour: int, seed: int):
    members = []
    for k, (name, rgb) in enumerate(COLOURS.items()):
        for j in range(per_colour):
            key = f"{k:02d}{j:03d}"
            caps = [f"a {name} square", f"a photo of something {name}"]
            members += [(f"{key}.png", _png(rgb, seed * 10_000 + k * 100 + j)),
                        (f"{key}.json", json.dumps({"captions": caps}).encode())]
    return write_tar(path, members)


def _lit_cfg(source, root, overrides=()):
    from catlip.train.lit import lit_config

    (root / "lit.yaml").write_text(LIT)
    return lit_config(source, str(root / "lit.yaml"), [f"data.train=[{root / 'train-000.tar'}]", *overrides])


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def lit(tmp_path_factory):
    """A SuperClass source run on the colour squares and a LiT run (feature cache) on top of it."""
    from catlip.config import load_config
    from catlip.train.loop import pretrain

    root = tmp_path_factory.mktemp("lit")
    colour_shard(root / "train-000.tar", per_colour=12, seed=1)
    colour_shard(root / "test-000.tar", per_colour=1, seed=2)
    (root / "source.yaml").write_text(SOURCE)
    source = pretrain(load_config(root / "source.yaml", [
        "method.name=superclass", f"data.train=[{root / 'train-000.tar'}]", f"train.output_dir={root / 'source'}"]))
    run = pretrain(_lit_cfg(source, root, [f"train.output_dir={root / 'lit'}"]))
    return {"root": root, "source": str(source), "run": str(run)}


def test_lit_drives_the_contrastive_loss_down(lit):
    losses = [m["loss"] for m in _metrics(lit["run"])]
    assert losses[0] > 3.2  # ln 32 = 3.47: chance over a batch of 32
    # a batch holds ~4 squares of each colour, whose captions are equally right: the floor is about ln 4 = 1.39
    assert sum(losses[-10:]) / 10 < 1.6


def test_lit_retrieves_far_above_chance(lit, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["retrieval", lit["run"], "--data", str(lit["root"] / "test-000.tar"), "--workers", "0",
                 "--no-progress", "-o", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["mode"] == "text" and result["images"] == 8 and result["captions"] == 16
    # one new square per colour with 2 of the 16 captions: chance R@1 is 2/16 image->text, 1/8 text->image
    assert result["image_to_text"]["R@1"] >= 0.75 and result["text_to_image"]["R@1"] >= 0.75
    assert "text tower" in capsys.readouterr().out


def test_the_locked_tower_is_bit_identical_after_lit(lit):
    from catlip.train.checkpoint import find_checkpoint

    before = find_checkpoint(os.path.join(lit["source"]), with_train_state=False).model_state
    after = find_checkpoint(os.path.join(lit["run"]), with_train_state=False).model_state
    keys = [k for k in before if k.startswith("backbone.")]
    assert keys and all(torch.equal(before[k], after[k]) for k in keys)
    assert not any(torch.equal(after["image_proj.weight"], torch.zeros_like(after["image_proj.weight"])) for _ in [0])


def test_lit_takes_the_pooling_of_its_source(lit):
    from catlip.train.checkpoint import load_pretrained

    pre = load_pretrained(lit["run"])
    assert pre.config.method.image_pool == "avg"  # SuperClass's head reads the mean patch token
    assert pre.config.model.backbone_kwargs == {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    assert pre.config.model.image_size == 32


def test_lit_resume_is_exact_with_and_without_the_cache(lit, tmp_path, capsys):
    from catlip.train.checkpoint import find_checkpoint
    from catlip.train.loop import pretrain

    for cache in ("auto", ""):
        common = [f"method.feature_cache={cache}", "optim.steps=12", "train.ckpt_every=6"]
        whole = pretrain(_lit_cfg(lit["source"], lit["root"], [*common, f"train.output_dir={tmp_path / f'a{cache}'}"]))
        cut = [*common, f"train.output_dir={tmp_path / f'b{cache}'}"]
        pretrain(_lit_cfg(lit["source"], lit["root"], [*cut, "train.stop_after=6", "train.resume=auto"]))
        assert "train.resume=auto: no checkpoint in" in capsys.readouterr().err  # said, not silent
        resumed = pretrain(_lit_cfg(lit["source"], lit["root"], [*cut, "train.resume=auto"]))
        assert "resuming from" in capsys.readouterr().err
        a = find_checkpoint(whole, with_train_state=False).model_state
        b = find_checkpoint(resumed, with_train_state=False).model_state
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), cache
        assert [m["loss"] for m in _metrics(whole)] == [m["loss"] for m in _metrics(resumed)]


def test_the_feature_cache_is_rebuilt_when_weights_or_data_change(lit, tmp_path, capsys):
    from catlip.train.feature_cache import open_feature_cache
    from catlip.data.sources import open_sources
    from catlip.methods import build_method
    from catlip.train.lit import load_image_tower

    cfg = _lit_cfg(lit["source"], lit["root"], [f"train.output_dir={tmp_path}"])
    method = build_method(cfg, 0)
    load_image_tower(method, cfg.method.image_tower)
    source = open_sources(cfg.data, seed=0, stats=__import__("collections").Counter())
    first = open_feature_cache(method, source, cfg, tmp_path / "cache", device=torch.device("cpu"), progress=False)
    assert "wrote" in capsys.readouterr().err
    again = open_feature_cache(method, source, cfg, tmp_path / "cache", device=torch.device("cpu"), progress=False)
    assert again.path == first.path and "reusing" in capsys.readouterr().err
    assert torch.equal(again.features, first.features) and int((first.status == 0).sum()) == 96
    with torch.no_grad():  # the same features the tower gives an un-augmented image
        x = method.image_features(torch.zeros(1, 3, 32, 32))
    assert x.shape == (1, 32) and first.features.shape == (96, 32)

    with torch.no_grad():
        next(method.backbone.parameters()).add_(0.01)
    changed = open_feature_cache(method, source, cfg, tmp_path / "cache", device=torch.device("cpu"), progress=False)
    err = capsys.readouterr().err
    assert changed.path != first.path and "stale (weights changed)" in err and not first.path.exists()
    assert not torch.equal(changed.features, first.features)

    shard = lit["root"] / "train-000.tar"
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        source = open_sources(cfg.data, seed=0, stats=__import__("collections").Counter())
        rebuilt = open_feature_cache(method, source, cfg, tmp_path / "cache", device=torch.device("cpu"),
                                     progress=False)
        assert rebuilt.path != changed.path and "stale (data changed)" in capsys.readouterr().err
        (rebuilt.path / "features.safetensors").write_bytes(b"truncated")
        repaired = open_feature_cache(method, source, cfg, tmp_path / "cache", device=torch.device("cpu"),
                                      progress=False)
        assert repaired.path == rebuilt.path and torch.equal(repaired.features, rebuilt.features)
        assert "damaged" in capsys.readouterr().err
    finally:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_one_cache_folder_keeps_an_entry_per_data_set(lit, tmp_path, capsys):
    from collections import Counter

    from catlip.train.feature_cache import open_feature_cache
    from catlip.data.sources import open_sources
    from catlip.methods import build_method
    from catlip.train.lit import load_image_tower

    cfg = _lit_cfg(lit["source"], lit["root"], [f"train.output_dir={tmp_path}"])
    other = _lit_cfg(lit["source"], lit["root"], [f"data.train=[{lit['root'] / 'test-000.tar'}]",
                                                  f"train.output_dir={tmp_path}"])
    method = build_method(cfg, 0)
    load_image_tower(method, cfg.method.image_tower)
    entries = []
    for c in (cfg, other, cfg, other):
        source = open_sources(c.data, seed=0, stats=Counter())
        entries.append(open_feature_cache(method, source, c, tmp_path / "shared", device=torch.device("cpu"),
                                          progress=False))
    err = capsys.readouterr().err
    assert err.count("wrote") == 2 and err.count("reusing") == 2 and "stale" not in err
    assert entries[0].path == entries[2].path != entries[1].path == entries[3].path
    assert len(entries[0]) == 96 and len(entries[1]) == 8


def test_cached_batches_carry_the_same_captions_as_the_image_loader(lit, tmp_path):
    from catlip.data import build_train_loader
    from catlip.train.feature_cache import build_cached_loader
    from catlip.methods import build_method
    from catlip.train.lit import load_image_tower
    from catlip.train.distributed import Dist

    cfg = _lit_cfg(lit["source"], lit["root"], [f"train.output_dir={tmp_path}"])
    method = build_method(cfg, 0)
    load_image_tower(method, cfg.method.image_tower)
    d = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    cached, images = iter(build_cached_loader(cfg, method, d, start_sample=64)), \
        iter(build_train_loader(cfg, None, method_inputs=method.inputs, start_sample=64, device="cpu"))
    for _ in range(3):  # from the middle of epoch 0 into epoch 1
        a, b = next(cached), next(images)
        assert torch.equal(a["text"], b["text"]) and "image" not in a
        with torch.no_grad():
            assert torch.allclose(a["image_features"], method.image_features(b["image"]), atol=1e-5)


def test_unlocked_blocks_train_only_the_last_blocks(lit, tmp_path):
    from catlip.train.checkpoint import find_checkpoint
    from catlip.train.loop import pretrain

    run = pretrain(_lit_cfg(lit["source"], lit["root"], [
        "method.feature_cache=", "method.unlocked_blocks=1", "optim.steps=4", f"train.output_dir={tmp_path / 'u'}"]))
    before = find_checkpoint(lit["source"], with_train_state=False).model_state
    after = find_checkpoint(run, with_train_state=False).model_state
    same = {k for k in before if k.startswith("backbone.") and torch.equal(before[k], after[k])}
    moved = {k for k in before if k.startswith("backbone.")} - same
    assert moved and all(k.startswith(("backbone.blocks.1.", "backbone.norm.")) for k in moved)
    assert any(k.startswith("backbone.blocks.0.") for k in same) and "backbone.pos_embed" in same


@pytest.mark.parametrize("overrides, message", [
    (["model.backbone=vit_small_patch16_224"], "differs from the image tower"),
    (["model.image_size=64"], "differs from the image tower"),
    (["method.unlocked_blocks=1"], "fully locked image tower"),  # with the recipe's feature_cache=auto
    (["method.name=clip"], "trains a locked-image method"),
    (["method.feature_cache=", "method.unlocked_blocks=5"], "has 2 blocks"),
])
def test_bad_lit_configs_are_one_line_errors(lit, tmp_path, overrides, message):
    from catlip.train.loop import pretrain

    with pytest.raises(CatlipError, match=message):
        pretrain(_lit_cfg(lit["source"], lit["root"], [*overrides, f"train.output_dir={tmp_path}"]))


def test_lit_needs_a_run_with_an_image_tower(lit, tmp_path, capsys):
    from catlip.methods.registry import load_config

    empty = tmp_path / "empty_run"
    empty.mkdir()
    for run, words in ((tmp_path / "nowhere", "does not exist"), (empty, "no usable pre-trained image tower")):
        assert main(["lit", str(run), "--config", str(lit["root"] / "lit.yaml")]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and words in err[0] and err[0].count("catlip lit") == 1
    with pytest.raises(ConfigError, match="needs method.image_tower"):
        load_config(None, ["method.name=lit"])
    with pytest.raises(ConfigError, match=r"belong to a locked-image method \(method.name=lit"):
        load_config(None, ["method.feature_cache=auto"])
    assert issubclass(CheckpointError, CatlipError)


def test_lit_cli_trains_and_prints_the_run(lit, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["lit", lit["source"], "--config", str(lit["root"] / "lit.yaml"),
                 f"data.train=[{lit['root'] / 'train-000.tar'}]", "optim.steps=3", f"train.output_dir={out}"]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert (out / "config.yaml").is_file() and "lit" in (out / "config.yaml").read_text()
