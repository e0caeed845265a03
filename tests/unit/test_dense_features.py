"""models.dense.dense_features: multi-level NCHW maps from timm ViTs (any input size) and convnets."""

from __future__ import annotations

import pytest
import timm
import torch

from catlip.errors import CatlipError
from catlip.models.dense import dense_features, dense_levels


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8,
                             embed_dim=32, depth=4, num_heads=2, **kwargs).eval()


@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
@pytest.mark.parametrize("dynamic", [False, True])
def test_vit_levels_at_two_input_sizes(size, dynamic):
    vit = tiny_vit(dynamic_img_size=True) if dynamic else tiny_vit()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        maps = dense_features(vit, x)
    assert dense_levels(vit) == [0, 1, 2, 3] and len(maps) == 4
    assert all(m.shape == (2, 32, size[0] // 8, size[1] // 8) for m in maps)
    assert all(torch.isfinite(m).all() for m in maps)
    # the model is unchanged afterwards: its own forward at the built size still works and matches
    with torch.no_grad():
        out = vit(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 32)


def test_vit_maps_are_the_patch_tokens_and_evenly_spaced():
    vit = tiny_vit()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        (last,) = dense_features(vit, x, indices=[3])
        tokens = vit.forward_features(x)  # (1, 1 + 16, 32) with the final norm
        (normed,) = dense_features(vit, x, indices=[3], norm=True)
    assert torch.allclose(normed.flatten(2).transpose(1, 2), tokens[:, 1:], atol=1e-5)
    assert not torch.allclose(last, normed)
    assert dense_levels(vit, levels=2) == [1, 3]
    # a bigger input reads the same weights with resampled position embeddings; the grid follows the input
    with torch.no_grad():
        (big,) = dense_features(vit, torch.randn(1, 3, 64, 32), indices=[3])
    assert big.shape == (1, 32, 8, 4)


def test_vit_size_not_a_multiple_of_the_patch_is_a_clear_error():
    with pytest.raises(CatlipError, match="multiple of the patch"):
        dense_features(tiny_vit(), torch.randn(1, 3, 36, 32))


def test_convnet_stages():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    with torch.no_grad():
        maps = dense_features(net, torch.randn(2, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(2, 64, 16, 24), (2, 128, 8, 12), (2, 256, 4, 6), (2, 512, 2, 3)]
    with torch.no_grad():
        maps = dense_features(net, torch.randn(1, 3, 64, 64), levels=2)
    assert [m.shape[1] for m in maps] == [256, 512]


def test_a_module_without_intermediates_is_refused():
    with pytest.raises(CatlipError):
        dense_features(torch.nn.Linear(2, 2), torch.randn(1, 2))
