"""model.stem=conv: a timm ViT with a convolutional stem (Xiao et al. 2021) instead of the patch projection."""

from __future__ import annotations

import pytest
import torch

from catlip.config import load_config
from catlip.errors import BackboneError, CheckpointError, ConfigError
from catlip.models.backbone import create_backbone
from catlip.models.stems import conv_stem

VIT = "model.backbone_kwargs={patch_size: 8, embed_dim: 64, depth: 1, num_heads: 2}"


class Method(torch.nn.Module):
    """What export_backbone reads: a module with a ``backbone``."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone


def _backbone(*overrides: str, size: int = 32):
    cfg = load_config(None, [VIT, f"model.image_size={size}", *overrides])
    return create_backbone(cfg.model)


def test_conv_stem_keeps_the_patch_grid_and_trains():
    torch.manual_seed(0)
    patch, conv = _backbone(), _backbone("model.stem=conv")
    x = torch.randn(4, 3, 32, 32)
    assert patch.patch_embed(x).shape == conv.patch_embed(x).shape == (4, 16, 64)  # (32 / 8)^2 tokens
    strides = [m.stride[0] for m in conv.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 1]  # three 3x3 stride-2 convs, then the 1x1 projection
    assert conv.catlip_spec["stem"] == "conv" and "stem" not in patch.catlip_spec
    # the stem is trained with the rest: one batch is over-fitted
    head = torch.nn.Linear(64, 2)
    opt = torch.optim.AdamW(list(conv.parameters()) + list(head.parameters()), lr=3e-3)
    y = torch.tensor([0, 1, 0, 1])
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(head(conv(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_conv_stem_widths_double_up_to_the_embedding():
    stem = conv_stem(16, 192)
    widths = [m.out_channels for m in stem if isinstance(m, torch.nn.Conv2d)]
    assert widths == [24, 48, 96, 192, 192]


def test_bad_stems_are_one_line_errors():
    with pytest.raises(ConfigError, match="model.stem"):
        load_config(None, ["model.stem=convnext"])
    with pytest.raises(BackboneError, match="power-of-two"):
        conv_stem(14, 64)
    with pytest.raises(BackboneError, match="patch embedding"):
        create_backbone(load_config(None, ["model.backbone=resnet18", "model.stem=conv"]).model)


def test_conv_stem_export_is_refused_clearly(tmp_path):
    from catlip.models.export import export_backbone

    with pytest.raises(CheckpointError, match="timm cannot rebuild this backbone .model.stem=conv"):
        export_backbone(Method(_backbone("model.stem=conv")), tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors").exists()


PAPER = ["model.stem=corenet", "model.pos_resize=stretch", "model.backbone_kwargs={embed_dim: 64, depth: 1, "
         "num_heads: 2, no_embed_class: true}"]


@pytest.mark.parametrize("h,w,grid", [(224, 224, (14, 14)), (256, 256, (16, 16)), (160, 320, (10, 20)),
                                      (64, 96, (4, 6))])
def test_corenet_stem_grid_is_the_patch_grid(h, w, grid):
    from catlip.models.stems import corenet_stem

    stem = corenet_stem(16, 64)
    convs = [(m.kernel_size[0], m.stride[0], m.padding[0], m.bias is not None) for m in stem
             if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(4, 4, 1, False), (2, 2, 0, False), (2, 2, 0, True)]
    assert [m.out_channels for m in stem if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64]  # max(32, 64 / 4)
    assert any(isinstance(m, torch.nn.GELU) and m.approximate == "none" for m in stem)
    assert stem(torch.zeros(1, 3, h, w)).shape[-2:] == grid


def test_paper_layout_trains_at_several_sizes():
    """The paper's ViT (corenet stem, CLS outside the position table, 1-D stretch) over-fits a batch fed at
    two resolutions, as the multi-scale sampler feeds it."""
    torch.manual_seed(0)
    model = _backbone(*PAPER, size=64)
    assert model.no_embed_class and model.pos_embed.shape == (1, 16, 64)
    head = torch.nn.Linear(64, 2)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    xs = [torch.randn(4, 3, 64, 64), torch.randn(4, 3, 96, 64)]
    y = torch.tensor([0, 1, 0, 1])
    first = last = None
    for step in range(40):
        loss = torch.nn.functional.cross_entropy(head(model(xs[step % 2])), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < 0.1 * first


def test_paper_layout_bad_settings_are_one_line_errors():
    from catlip.models.stems import corenet_stem

    with pytest.raises(BackboneError, match="total stride 16"):
        corenet_stem(8, 64)
    with pytest.raises(ConfigError, match="model.pos_resize"):
        load_config(None, ["model.pos_resize=bicubic"])
    with pytest.raises(BackboneError, match="position table"):
        create_backbone(load_config(None, ["model.backbone=resnet18", "model.pos_resize=stretch"]).model)


def test_paper_layout_export_is_refused_clearly(tmp_path):
    from catlip.models.export import export_backbone

    with pytest.raises(CheckpointError, match="model.stem=corenet"):
        export_backbone(Method(_backbone(*PAPER, size=64)), tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match="model.pos_resize=stretch"):
        export_backbone(Method(_backbone("model.pos_resize=stretch")), tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors").exists()
