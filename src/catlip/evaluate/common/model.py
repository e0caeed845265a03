"""What evaluation loads: a pre-trained checkpoint, or ``random:<backbone>`` for the random-init floor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from catlip.errors import CheckpointError
from catlip.evaluate.common.features import Encoder
from catlip.train.feature_cache import module_hash

RANDOM_PREFIX = "random:"


@dataclass
class EvalModel:
    source: str
    method_name: str  # a catlip.methods.registry name, or "random" for the random-init floor
    backbone: nn.Module
    image_size: int
    head: nn.Module | None = None  # classification head (methods with a label source)
    vocab: Any = None
    method: nn.Module | None = None  # the whole method (CLIP towers for zero-shot)
    context_length: int = 77
    preprocess: Any = None  # catlip.data.transforms.Preprocess: the run's mean/std and resize (None: defaults)
    loaded: dict | None = None  # checkpoint_path, checkpoint_step, checkpoint_steps (None: random-init floor)

    def __post_init__(self) -> None:
        from catlip.data.transforms import Preprocess

        if self.preprocess is None:
            self.preprocess = Preprocess(self.image_size)

    def eval_transform(self):
        """The run's evaluation transform: resize + centre crop at ``image_size``, the run's mean/std."""
        return self.preprocess.eval_transform()

    def train_transform(self, scale_min: float = 0.25):
        """Probe / fine-tune augmentation (random resized crop + flip) with the run's mean/std."""
        return self.preprocess.finetune_transform(scale_min)

    def describe(self) -> str:
        """What the weights are: the checkpoint folder with its step of the run's steps, or the random floor."""
        if self.loaded is None:
            return f"none, {self.source} is the random-init floor (seeded random weights, nothing trained)"
        return self.loaded["checkpoint_description"]

    def encoder(self) -> Encoder:
        return Encoder(self.backbone, self.head)

    def weights_id(self) -> str:
        return module_hash(self.encoder())

    def zero_shot_mode(self) -> str:
        """``head`` or ``text``: the method registry's zero-shot mode (``head`` for a random-init floor)."""
        from catlip.methods.registry import find

        spec = find(self.method_name)
        return spec.zero_shot if spec is not None else "head"

    def head_weight(self, purpose: str):
        """(weight (V, D), bias (V,)) of the pre-trained classifier, or a clear error naming ``purpose``."""
        if self.head is None or self.vocab is None:
            from catlip.methods.registry import titles

            why = "has no classification head" if self.head is None else "has no vocabulary (vocab.json)"
            hint = (f" (use `catlip zeroshot`, which takes the text tower for {titles('text', sep='/')})"
                    if self.zero_shot_mode() == "text" else "")
            raise CheckpointError(f"{purpose} needs a {titles(labels=True)} checkpoint; {self.source} "
                                  f"(method {self.method_name}) {why}{hint}")
        fc = getattr(self.head, "fc", None)
        if not isinstance(fc, nn.Linear):
            raise CheckpointError(f"{self.source}: the classification head has no Linear layer `fc`")
        return fc.weight.detach(), fc.bias.detach() if fc.bias is not None else None


def load_eval_model(spec: str, image_size: int | None = None, ema: bool = False, announce: bool = True
                    ) -> EvalModel:
    """A checkpoint (run dir or checkpoint dir) or ``random:NAME`` (a timm name or a pre-training recipe .yaml).

    ``announce``: say on stderr which checkpoint was loaded (``checkpoint: RUN/checkpoints/step_N (step N of M)``),
    so a number in a log can be traced to the weights, and a run stopped early shows it."""
    model = _random_model(spec[len(RANDOM_PREFIX):], image_size) if spec.startswith(RANDOM_PREFIX) \
        else _trained_model(spec, image_size, ema)
    if announce:
        from catlip.progress import note

        note(f"checkpoint: {model.describe()}")
    return model


def check_source(spec: str) -> None:
    """A run folder that is not there is named as such before any work (not "no valid checkpoint")."""
    if spec.startswith(RANDOM_PREFIX):
        return
    from catlip.train.checkpoint import not_a_folder

    why = not_a_folder(Path(spec))
    if why:
        raise CheckpointError(f"run folder {spec} {why}; give a run dir or checkpoint dir from `catlip pretrain`, "
                              "or random:<timm name | recipe.yaml>")


def _trained_model(spec: str, image_size: int | None, ema: bool) -> EvalModel:
    check_source(spec)
    from catlip.train.checkpoint import load_pretrained

    pre = load_pretrained(spec, ema=ema)
    cfg = pre.config
    size = image_size or cfg.model.image_size
    method = pre.method
    if size != cfg.model.image_size:
        _resize(method.backbone, size, spec)
    head = getattr(method, "head", None)
    from catlip.data.transforms import Preprocess

    loaded = {"checkpoint_path": str(pre.path), "checkpoint_step": pre.meta.get("step"),
              "checkpoint_steps": cfg.optim.steps, "checkpoint_description": pre.describe()}
    return EvalModel(spec, cfg.method.name, method.backbone, size, head, pre.vocab, method, cfg.data.context_length,
                     Preprocess.of(cfg, size), loaded)


def _random_model(name: str, image_size: int | None) -> EvalModel:
    from dataclasses import replace

    from catlip.config import ModelConfig
    from catlip.methods.registry import load_config
    from catlip.models.backbone import create_backbone, for_evaluation

    # a recipe: the same architecture and size as its pre-training, random weights; a timm name: timm's usual 224
    recipe = load_config(name) if name.endswith((".yaml", ".yml")) else None
    model_cfg = recipe.model if recipe is not None else ModelConfig(backbone=name, image_size=224)
    size = image_size or model_cfg.image_size
    import torch

    torch.manual_seed(0)  # the floor must be the same random network every time
    backbone = create_backbone(replace(for_evaluation(model_cfg), image_size=size))  # patch_drop: pre-training
    from catlip.data.transforms import Preprocess

    pre = Preprocess.of(recipe, size) if recipe is not None else None
    return EvalModel(f"random:{name}", "random", backbone.eval(), size, preprocess=pre)


def _resize(backbone: nn.Module, size: int, source: str) -> None:
    """Evaluate at another resolution: timm ViTs resample their position embeddings (``set_input_size``); a
    ``model.pos_resize=stretch`` ViT takes any size and stretches its table in each forward instead."""
    if getattr(backbone, "catlip_pos_resize", "grid") == "stretch":
        return
    fn = getattr(backbone, "set_input_size", None)
    if fn is None:
        return  # convolutional backbones take any size as they are
    try:
        fn(img_size=size)
    except (TypeError, ValueError, AssertionError) as err:
        raise CheckpointError(f"{source}: cannot evaluate at image size {size}: {err}") from None
