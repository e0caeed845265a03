"""models.dense.SimpleFeaturePyramid (ViTDet): strides 4-32 (+64) with one width, for /16 and /8 ViTs and a convnet;
data.synthetic.synthetic_dense: masks and boxes that match the unchanged synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from catlip.models.dense import SimpleFeaturePyramid, last_feature_map


def tiny_vit(patch: int, size: int = 64):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=size,
                             patch_size=patch, embed_dim=32, depth=2, num_heads=2)


@pytest.mark.parametrize("patch", [16, 8])
def test_pyramid_strides_and_shapes(patch):
    fpn = SimpleFeaturePyramid(tiny_vit(patch), out_channels=24)
    x = torch.randn(2, 3, 64, 128)  # not the built size: position embeddings are resampled
    out = fpn(x)
    assert list(out) == ["0", "1", "2", "3", "pool"] and fpn.out_channels == 24
    assert [tuple(m.shape) for m in out.values()] == [(2, 24, 64 // s, 128 // s) for s in (4, 8, 16, 32, 64)]
    # the documented resampling per level: deconvs up to stride 4, identity at the patch stride, max-pools down
    deconvs = [sum(isinstance(m, torch.nn.ConvTranspose2d) for m in lvl) for lvl in fpn.levels]
    pools = [[m.kernel_size for m in lvl if isinstance(m, torch.nn.MaxPool2d)] for lvl in fpn.levels]
    if patch == 16:
        assert deconvs == [2, 1, 0, 0] and pools == [[], [], [], [2]]
    else:
        assert deconvs == [1, 0, 0, 0] and pools == [[], [], [2], [4]]
    out["3"].sum().backward()  # gradients reach the backbone
    assert fpn.backbone.blocks[0].attn.qkv.weight.grad is not None


def test_pyramid_on_a_convnet_uses_its_stages():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    fpn = SimpleFeaturePyramid(net, out_channels=16, extra_pool=False)
    out = fpn(torch.randn(1, 3, 64, 96))
    assert fpn.sources == [1, 2, 3, 4]  # the stages at strides 4, 8, 16, 32
    assert [tuple(m.shape) for m in out.values()] == [(1, 16, 16, 24), (1, 16, 8, 12), (1, 16, 4, 6), (1, 16, 2, 3)]


def test_last_feature_map_is_the_normed_last_block():
    vit = tiny_vit(16).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fmap = last_feature_map(vit, x)
        tokens = vit.forward_features(x)[:, 1:]
    assert fmap.shape == (1, 32, 4, 4)
    assert torch.allclose(fmap.flatten(2).transpose(1, 2), tokens, atol=1e-5)


def test_synthetic_dense_matches_the_scene():
    from catlip.data.synthetic import OBJECTS, SEG_CLASSES, synthetic_dense, synthetic_sample

    for i in range(20):
        d, s = synthetic_dense(i, seed=3, image_size=48), synthetic_sample(i, seed=3, image_size=48)
        assert d.image.tobytes() == s.image.tobytes()  # the same picture as before
        mask = np.array(d.mask)
        assert mask.shape == (48, 48) and mask.min() >= 1 and mask.max() <= len(SEG_CLASSES)
        assert s.label in d.labels and OBJECTS[s.label] == s.objects[-1][0]
        assert len(d.boxes) == len(d.labels) == len(d.instance_masks) >= 1
        for (x0, y0, x1, y1), label, inst in zip(d.boxes, d.labels, d.instance_masks):
            pixels = np.array(inst)
            ys, xs = np.nonzero(pixels)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
            assert (mask[pixels] == label + 1).all()  # the semantic mask agrees with each instance
        assert (mask == SEG_CLASSES.index(s.background) + 1).any()
