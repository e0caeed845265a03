"""Backbones from timm, heads, CLIP towers, and the timm round trip of exported backbones."""

from __future__ import annotations

import pytest
import timm
import torch

from catlip.config import ModelConfig
from catlip.errors import CatlipError
from catlip.models import (
    AvgTokenHead,
    LinearHead,
    average_pooled,
    create_backbone,
    export_backbone,
    load_backbone,
    patch_tokens,
    prior_bias,
    read_spec,
)
from catlip.models.clip import CLIPTowers

TINY_VIT = {"patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_cfg(**changes) -> ModelConfig:
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", backbone_kwargs=dict(TINY_VIT), image_size=32)
    cfg.embed_dim, cfg.text_width, cfg.text_layers, cfg.text_heads = 16, 32, 2, 2
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_vit_backbone_follows_timm_contract():
    torch.manual_seed(0)
    vit = create_backbone(tiny_cfg())
    x = torch.randn(2, 3, 32, 32)
    tokens = vit.forward_features(x)
    assert tokens.shape == (2, 1 + 16, 32)  # CLS + (32 / 8)^2 patches
    assert vit.forward_head(tokens, pre_logits=True).shape == (2, vit.num_features)
    assert vit.catlip_spec == {
        "name": "vit_tiny_patch16_224",
        "kwargs": {"drop_path_rate": 0.0, **TINY_VIT, "img_size": 32},
    }
    # SuperClass pooling: the mean of the 16 patch tokens, the CLS token left out.
    assert torch.allclose(average_pooled(vit, x), tokens[:, 1:].mean(dim=1))


def test_convnet_backbone_drops_img_size_and_pools_spatial_tokens():
    cfg = tiny_cfg(backbone="resnet18", backbone_kwargs={})
    net = create_backbone(cfg).eval()
    assert "img_size" not in net.catlip_spec["kwargs"]
    feats = net.forward_features(torch.randn(2, 3, 32, 32))
    assert patch_tokens(net, feats).shape == (2, 1, 512)  # 32 px / stride 32 = one position


def test_bad_backbone_names_and_kwargs_are_clear_errors():
    with pytest.raises(CatlipError, match="unknown timm model"):
        create_backbone(tiny_cfg(backbone="vit_nonexistent_model"))
    with pytest.raises(CatlipError, match="cannot build"):
        create_backbone(tiny_cfg(backbone_kwargs={**TINY_VIT, "no_such_option": 1}))


def test_grad_checkpointing_and_dynamic_size_are_applied():
    vit = create_backbone(tiny_cfg(grad_checkpointing=True), dynamic_img_size=True)
    assert vit.grad_checkpointing
    # Multi-scale batches: the same ViT takes 48 px input by interpolating its position embeddings.
    assert vit.forward_features(torch.randn(1, 3, 48, 48)).shape == (1, 1 + 36, 32)


def test_heads_init_and_shapes():
    torch.manual_seed(0)
    vit = create_backbone(tiny_cfg())
    feats = vit.forward_features(torch.randn(3, 3, 32, 32))
    lin = LinearHead(32, 10, bias_init=-2.5)
    assert torch.all(lin.fc.bias == -2.5) and lin.fc.weight.abs().max() > 0
    assert torch.equal(lin.pool(vit, feats), feats[:, 0])  # timm's token pool = CLS (after the final norm)
    avg = AvgTokenHead(32, 10)
    pooled = avg.pool(vit, feats)
    assert torch.allclose(pooled, torch.nn.functional.layer_norm(feats[:, 1:].mean(1), (32,)), atol=1e-6)
    assert avg(pooled).shape == (3, 10)


def test_prior_bias_starts_sigmoid_at_label_prior():
    b = prior_bias(24320, 3)
    assert torch.sigmoid(torch.tensor(b)).item() == pytest.approx(3 / 24320, rel=1e-6)
    assert b == pytest.approx(-9.0, abs=0.05)


def test_export_round_trip_through_timm_is_bitwise(tmp_path):
    torch.manual_seed(0)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = create_backbone(tiny_cfg())

    method = Holder()
    with torch.no_grad():  # move weights away from init so a silently skipped tensor would show
        for p in method.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "backbone.safetensors"
    spec = export_backbone(method, path)
    assert read_spec(path) == spec
    overlay = {"file": str(path)}
    plain = timm.create_model(
        spec["name"], pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **spec["kwargs"]
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    method.backbone.eval()
    with torch.no_grad():
        ref = method.backbone.forward_head(method.backbone.forward_features(x), pre_logits=True)
        for loaded in (plain.eval(), load_backbone(path).eval()):
            assert torch.equal(loaded.forward_head(loaded.forward_features(x), pre_logits=True), ref)


def test_load_backbone_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CatlipError):
        load_backbone(bad)


def test_clip_towers_encode_and_cap_temperature():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    towers = CLIPTowers(create_backbone(cfg), cfg, context_length=8, init_logit_scale=2.6592, init_logit_bias=-10.0)
    img = towers.encode_image(torch.randn(2, 3, 32, 32))
    tokens = torch.tensor([[49406, 320, 1125, 49407, 0, 0, 0, 0], [49406, 3306, 49407, 0, 0, 0, 0, 0]])
    txt = towers.encode_text(tokens)
    assert img.shape == txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(2)) and torch.allclose(txt.norm(dim=-1), torch.ones(2))
    assert towers.scale().item() == pytest.approx(1 / 0.07, rel=1e-4)
    with torch.no_grad():
        towers.logit_scale.fill_(7.0)
    assert towers.scale().item() == pytest.approx(100.0)
    assert towers.logit_bias.item() == -10.0
