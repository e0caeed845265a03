"""Analytic sizes of the towers each method trains: parameters, training FLOPs and activations per sample.

Counted from the transformer's shape rather than by building the model, so `catlip plan` runs without torch and
answers for backbones too large for the machine it runs on. For ViT-B/16 at 224 px the training FLOPs agree with
torch.utils.flop_counter's count in ``benchmarks/results/train_step_cuda.json`` to within 1 %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from catlip.errors import BackboneError

# timm's ViT sizes: name -> (width, depth); heads do not change FLOPs or parameters
VIT_SIZES = {"tiny": (192, 12), "small": (384, 12), "medium": (512, 12), "base": (768, 12), "large": (1024, 24),
             "huge": (1280, 32), "giant": (1408, 40)}
CATLIP_CLASSES = 24320  # the synset vocabulary the benchmarks and the paper's DataComp run use
TEXT = {"width": 512, "layers": 12, "tokens": 77, "vocab": 49408, "embed_dim": 512}  # CLIP's text tower


@dataclass(frozen=True)
class Tower:
    """A pre-norm transformer: ``layers`` blocks of ``width`` over ``tokens`` tokens, MLP ratio 4."""

    width: int
    layers: int
    tokens: int
    extra_params: int = 0  # embeddings, patch projection, heads
    extra_macs: int = 0  # per sample: patch projection, heads

    @property
    def params(self) -> int:
        return self.layers * (12 * self.width**2 + 13 * self.width) + self.extra_params

    @property
    def train_flops(self) -> float:
        """Forward + backward FLOPs per sample: 3 x (2 x multiply-accumulates)."""
        per_token = 12 * self.width**2 + 2 * self.tokens * self.width  # projections + MLP, then QK^T and AV
        return 6.0 * (self.layers * self.tokens * per_token + self.extra_macs)

    @property
    def activation_units(self) -> int:
        """layers x tokens x width: what the activations a block keeps for its backward grow with."""
        return self.layers * self.tokens * self.width


def vit(backbone: str, classes: int = 0, proj_dim: int = 0) -> Tower:
    """A timm ``vit_<size>_patch<P>_<img>`` as a Tower, with a ``classes``-way Linear head or a projection."""
    m = re.fullmatch(r"vit_([a-z]+)_patch(\d+)_(?:clip_)?(\d+)(?:\..*)?", backbone)
    if not m or m.group(1) not in VIT_SIZES:
        known = ", ".join(f"vit_{s}_patch16_224" for s in VIT_SIZES)
        raise BackboneError(f"catlip plan knows timm ViTs named vit_<size>_patch<P>_<image size> ({known}); "
                            f"got {backbone!r}")
    width, depth = VIT_SIZES[m.group(1)]
    patch, size = int(m.group(2)), int(m.group(3))
    patches = (size // patch) ** 2
    embed = 3 * patch * patch * width
    head = width * classes + width * proj_dim
    # + class token, position table, patch bias, final norm
    return Tower(width, depth, patches + 1, extra_params=embed + (patches + 5) * width + head + classes,
                 extra_macs=patches * embed + head)


def text_tower() -> Tower:
    """CLIP's 12-layer, 512-wide text transformer over 77 tokens with its projection."""
    w, e = TEXT["width"], TEXT["embed_dim"]
    return Tower(w, TEXT["layers"], TEXT["tokens"], extra_params=(TEXT["vocab"] + TEXT["tokens"] + 2) * w + w * e,
                 extra_macs=w * e)


def towers(method: str, backbone: str) -> dict[str, Tower]:
    """The towers a method trains, by its registry entry: {"image": ...} with a classification head for a
    label-classification method, {"image": ..., "text": ...} for a two-tower (contrastive) one."""
    if is_contrastive(method):
        return {"image": vit(backbone, proj_dim=TEXT["embed_dim"]), "text": text_tower()}
    return {"image": vit(backbone, classes=CATLIP_CLASSES)}


def is_contrastive(method: str) -> bool:
    """Whether the method trains a text tower (CLIP, SigLIP): the methods registry says, not its name."""
    from catlip.methods.registry import get  # torch-free: builders are imported only when called

    return get(method).uses_text
