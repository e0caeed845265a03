"""FLIP-style token dropping (`model.patch_drop`): pre-training only, every method, never at evaluation."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from catlip.config import Config, ConfigError, ModelConfig, load_config
from catlip.errors import BackboneError
from catlip.methods import build_method
from catlip.models.backbone import create_backbone

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
SIZE = 32  # 4 x 4 = 16 patch tokens + 1 CLS token
V = 12


def tiny_config(method: str, patch_drop: float) -> Config:
    cfg = Config()
    cfg.method.name = method
    cfg.model.backbone, cfg.model.backbone_kwargs = "vit_tiny_patch16_224", dict(TINY_VIT)
    cfg.model.patch_drop = patch_drop
    cfg.model.embed_dim, cfg.model.text_width, cfg.model.text_layers, cfg.model.text_heads = 16, 32, 2, 2
    cfg.model.image_size, cfg.data.context_length = SIZE, 8
    cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.weight_decay = 2e-3, 0, 0.0
    return cfg.validate()


def tiny_batch(batch_size: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    label_ids = torch.full((batch_size, 3), -1, dtype=torch.long)
    for i in range(batch_size):
        label_ids[i, : 1 + i % 3] = torch.randperm(V, generator=g)[: 1 + i % 3]
    text = torch.zeros(batch_size, 8, dtype=torch.long)
    text[:, 0], text[:, 5] = 49406, 49407
    text[:, 1:5] = torch.randint(1, 49405, (batch_size, 4), generator=g)
    return {"image": torch.randn(batch_size, 3, SIZE, SIZE, generator=g), "label_ids": label_ids, "text": text}


def tokens_seen(backbone: torch.nn.Module, images: torch.Tensor) -> int:
    """Sequence length the first transformer block receives (CLS included)."""
    seen = []
    hook = backbone.blocks[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            backbone.forward_features(images)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("fraction, kept", [(0.0, 16), (0.5, 8), (0.75, 4)])
def test_train_mode_drops_the_fraction_and_eval_mode_sees_every_token(fraction, kept):
    backbone = create_backbone(ModelConfig(backbone="vit_tiny_patch16_224", backbone_kwargs=dict(TINY_VIT),
                                           patch_drop=fraction, image_size=SIZE))
    images = torch.randn(2, 3, SIZE, SIZE)
    assert tokens_seen(backbone.train(), images) == 1 + kept  # the CLS token is never dropped
    assert tokens_seen(backbone.eval(), images) == 1 + 16
    # the rebuild spec (exports, evaluation) carries no dropping
    assert "patch_drop_rate" not in backbone.catlip_spec["kwargs"]


def test_config_range_and_non_vit_backbones_are_one_line_errors():
    for bad in ("1", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match=r"model.patch_drop must lie in \[0, 1\)"):
            load_config(None, [f"model.patch_drop={bad}"])
    with pytest.raises(ConfigError, match="set model.patch_drop instead"):
        load_config(None, ["model.backbone_kwargs={patch_drop_rate: 0.5}"])
    assert load_config(None, ["model.patch_drop=0.75"]).model.patch_drop == 0.75
    with pytest.raises(BackboneError, match="model.patch_drop needs a ViT-style timm backbone") as err:
        create_backbone(ModelConfig(backbone="resnet18", patch_drop=0.5, image_size=SIZE))
    assert "\n" not in str(err.value)
    create_backbone(ModelConfig(backbone="resnet18", patch_drop=0.0, image_size=SIZE))  # 0 leaves any backbone alone


@pytest.mark.parametrize("method", ["catlip", "superclass", "clip", "siglip", "superclip"])
def test_every_method_trains_with_dropped_tokens(method):
    torch.manual_seed(0)
    model = build_method(tiny_config(method, 0.5), V).train()
    batch = tiny_batch()
    out = model(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None
    if method == "superclass":  # the mean patch token is taken over the kept tokens only
        assert model.features(batch["image"]).shape == (8, TINY_VIT["embed_dim"])


@pytest.mark.parametrize("method", ["catlip", "clip"])
def test_loss_falls_on_a_fixed_batch_with_half_the_tokens_dropped(method):
    from catlip.train.optim import build_optimizer
    from catlip.train.step import train_step

    torch.manual_seed(0)
    cfg = tiny_config(method, 0.5)
    model = build_method(cfg, V).train()
    opt = build_optimizer(model, cfg.optim)
    batch = tiny_batch()
    losses = [train_step(model, [batch], opt, autocast=nullcontext, clip_grad=1.0)["loss"] for _ in range(12)]
    # each step sees another random half of the tokens, so compare means rather than single steps
    assert sum(losses[-4:]) / 4 < 0.9 * sum(losses[:4]) / 4, losses


def test_a_checkpoint_is_evaluated_and_fine_tuned_on_every_token(tmp_path):
    from catlip.evaluate.common.model import load_eval_model
    from catlip.models.export import export_backbone, load_backbone
    from catlip.train.checkpoint import load_pretrained, save_checkpoint

    cfg = tiny_config("clip", 0.75)
    torch.manual_seed(0)
    trained = build_method(cfg, 0)
    assert tokens_seen(trained.backbone.train(), torch.randn(1, 3, SIZE, SIZE)) == 1 + 4
    save_checkpoint(tmp_path / "checkpoints", 1, model_state=trained.state_dict(), train_state={"step": 1},
                    meta={"step": 1, "config": cfg.to_dict(), "num_classes": 0})
    images = torch.randn(2, 3, SIZE, SIZE)
    pre = load_pretrained(tmp_path)
    assert pre.config.model.patch_drop == 0.75  # the run's record is unchanged
    model = load_eval_model(str(tmp_path))
    # fine-tuning puts the backbone in train mode: it must still see all 16 patches
    assert tokens_seen(model.backbone.train(), images) == 1 + 16
    with torch.no_grad():
        ref = trained.backbone.eval().forward_features(images)
        assert torch.equal(model.backbone.eval().forward_features(images), ref)
    spec = export_backbone(pre.method, tmp_path / "backbone.safetensors", image_size=SIZE)
    assert "patch_drop_rate" not in spec["kwargs"]
    assert tokens_seen(load_backbone(tmp_path / "backbone.safetensors").train(), images) == 1 + 16
    floor = load_eval_model(f"random:{_recipe(tmp_path, cfg)}")
    assert tokens_seen(floor.backbone.train(), images) == 1 + 16


def _recipe(tmp_path, cfg: Config) -> str:
    from catlip.config import save_config

    path = tmp_path / "recipe.yaml"
    save_config(cfg, path)
    return str(path)
