"""Convolutional stems for timm ViTs (``model.stem=conv`` and ``model.stem=corenet``).

A ViT's patch embedding is one p x p convolution of stride p. Xiao et al. 2021 ("Early convolutions help
transformers see better") replace it with a few 3 x 3 stride-2 convolutions and a 1 x 1 projection: the same
token grid, a few percent more compute, and a much easier optimisation on little data; CatLIP's own ViT
(corenet) starts with a convolutional stem too. timm has no switch for it, so catlip swaps the ``proj`` layer
of timm's ``PatchEmbed``: everything after it (flattening, position embeddings, ``dynamic_img_size``,
``forward_intermediates``) is timm's own and unchanged.

``corenet`` is the CatLIP paper's stem exactly as corenet builds it (and as its released ViT-B/L/H checkpoints
hold it): conv 4x4 stride 4 padding 1 (no bias) -> BatchNorm -> GELU, conv 2x2 stride 2 (no bias) -> BatchNorm ->
GELU, conv 2x2 stride 2 with bias, with max(32, width/4) channels inside; total stride 16, so patch 16 only. The
padding makes the grid floor((H + 2) / 16), equal to timm's H // 16 for every H whose remainder mod 16 is below 14.
timm's ``vit_base_mci_224`` stem is similar but unpadded, so timm cannot rebuild this one (models/export.py).
"""

from __future__ import annotations

from torch import nn

from catlip.errors import BackboneError

STEMS = ("patch", "conv", "corenet")


def conv_stem(patch_size: int, embed_dim: int, in_chans: int = 3) -> nn.Sequential:
    """log2(patch_size) 3x3 stride-2 conv + BatchNorm + ReLU blocks (widths doubling up to ``embed_dim``), then a
    1x1 projection to ``embed_dim``: total stride ``patch_size``, so the token grid is the patch grid."""
    depth = patch_size.bit_length() - 1
    if patch_size < 2 or 1 << depth != patch_size:
        raise BackboneError(f"model.stem=conv needs a power-of-two patch size >= 2, got {patch_size}")
    widths = [max(16, embed_dim >> (depth - i)) for i in range(1, depth + 1)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip([in_chans] + widths[:-1], widths):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    layers.append(nn.Conv2d(widths[-1], embed_dim, 1))
    return nn.Sequential(*layers)


def corenet_stem(patch_size: int, embed_dim: int, in_chans: int = 3) -> nn.Sequential:
    """The CatLIP paper's (corenet's) stem; indices 0, 3, 6 are the convs and 1, 4 the BatchNorms
    (``catlip.models.corenet`` maps corenet's ``patch_emb.{0,1,2}`` keys onto them)."""
    if patch_size != 16:
        raise BackboneError(f"model.stem=corenet has total stride 16; the backbone's patch size is {patch_size}")
    width = max(32, embed_dim // 4)
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 4, stride=4, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU(),
        nn.Conv2d(width, width, 2, stride=2, bias=False), nn.BatchNorm2d(width), nn.GELU(),
        nn.Conv2d(width, embed_dim, 2, stride=2))


_BUILDERS = {"conv": conv_stem, "corenet": corenet_stem}


def apply_stem(model: nn.Module, stem: str, name: str) -> nn.Module:
    """Replace the patch projection of a timm ViT by a convolutional stem (``stem`` conv or corenet)."""
    if stem == "patch":
        return model
    if stem not in STEMS:
        raise BackboneError(f"model.stem must be one of {' | '.join(STEMS)}, got {stem!r}")
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if not isinstance(proj, nn.Conv2d) or proj.kernel_size[0] != proj.stride[0] or proj.kernel_size[0] != proj.kernel_size[1]:
        raise BackboneError(f"model.stem={stem} needs a ViT-style timm backbone with a patch embedding; "
                            f"{name!r} has none")
    model.patch_embed.proj = _BUILDERS[stem](proj.kernel_size[0], proj.out_channels, proj.in_channels)
    return model
