"""Typed run configuration.

A run is described by one :class:`Config` made of small dataclasses. YAML recipes under ``configs/`` fill it,
and ``section.field=value`` overrides from the command line change single fields. Unknown keys are errors:
a typo in a recipe must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from catlip.defaults import CLIP_MEAN, CLIP_STD, V_TAU_DEFAULT
from catlip.errors import ConfigError  # noqa: F401  (defined in catlip.errors; imported from here too)


@dataclass
class DataConfig:
    # Sources: "synthetic", webdataset shards (paths, brace patterns, URLs), a CSV/TSV/JSONL manifest, or an
    # image folder with sidecar .txt captions. Several sources are read one after another.
    train: list[str] = field(default_factory=lambda: ["synthetic"])
    synthetic_size: int = 2048
    caption_keys: list[str] = field(default_factory=lambda: ["txt", "json"])
    image_key: str = "jpg;jpeg;png;webp"
    caption_column: str = "caption"
    image_column: str = "image"
    vocab: str = ""  # path to a vocabulary JSON; empty = build one from the training captions first
    labels_file: str = ""  # pre-extracted labels (JSONL from `catlip labels`), optional
    vocab_min_count: int = V_TAU_DEFAULT  # V_tau: the paper's 500 (catlip.defaults); small recipes set their own
    vocab_top_k: int = 0
    image_size: int = 64
    # Pixel normalisation and evaluation resize travel with the model: every command that reads a run feeds it
    # what it was trained on, and exports write them into timm's pretrained_cfg. Defaults: CLIP's statistics;
    # corenet's CatLIP models read [0, 1] pixels (mean 0, std 1) and evaluate at shorter side 232 -> crop 224.
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))
    eval_resize: int = 0  # evaluation: shorter side to this, then the centre image_size crop (0 = image_size)
    batch_size: int = 64
    num_workers: int = 2
    augment: str = "rrc_flip"  # none | rrc_flip | randaugment
    rrc_scale_min: float = 0.4
    multiscale: bool = False  # CatLIP Appendix A variable-resolution, variable-batch sampler
    multiscale_sizes: list[int] = field(default_factory=lambda: [128, 160, 192, 224, 256, 288, 320])
    context_length: int = 77  # text tokens for CLIP / SigLIP
    shuffle_buffer: int = 1000
    max_image_pixels: int = 89_478_485  # PIL's default; larger images are skipped as decompression bombs
    max_skip_fraction: float = 0.5  # warn when more of one data.train source is skipped (1 = never warn)
    # reference: full decode + torchvision transform, float in the workers; fast: the same crops and flips with
    # reduced-size JPEG decoding and uint8 batches normalised on the device; gpu: JPEGs decoded on the GPU (nvJPEG),
    # the CPU fast path without CUDA. docs/throughput.md
    decode: str = "fast"


@dataclass
class ModelConfig:
    backbone: str = "vit_tiny_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model
    head_bias_init: float = 0.0  # CatLIP: a negative bias starts the sigmoid near the label prior
    # constant: every class starts at head_bias_init; prior: each class at its own caption frequency (log-odds
    # for sigmoid losses, log-frequency for softmax ones), read off the vocabulary counts (models/heads.py)
    head_bias: str = "constant"
    drop_path_rate: float = 0.0
    # ViTs: patch (timm's p x p patch embedding) | conv (3x3 stride-2 convolutions) | corenet (the CatLIP paper's
    # 4x4/4 pad 1 -> BN -> GELU -> 2x2/2 -> BN -> GELU -> 2x2/2 stem, patch 16 only): models/stems.py
    stem: str = "patch"
    # ViTs at an input size other than the table's: grid (timm's 2-D resample of the position grid) | stretch
    # (corenet's 1-D linear stretch of the flattened row-major table, what the released CatLIP models were trained
    # and evaluated with). stretch builds the ViT with dynamic input sizes. models/vit_layout.py
    pos_resize: str = "grid"
    # FLIP: fraction of patch tokens a ViT drops at random in each pre-training forward (CLS/register tokens are
    # kept); evaluation, probes, fine-tuning and exports always see every token. 0 disables.
    patch_drop: float = 0.0
    grad_checkpointing: bool = False
    # CLIP / SigLIP towers
    embed_dim: int = 512
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    init_logit_scale: float = 2.6592  # log(1 / 0.07)
    init_logit_bias: float = -10.0  # SigLIP
    siglip_init_logit_scale: float = 2.302585  # log(10), the SigLIP paper's t' init (CLIP uses init_logit_scale)


@dataclass
class MethodConfig:
    name: str = "catlip"  # a catlip.methods.registry entry: catlip | superclass | clip | siglip | superclip
    # label source (catlip.labels.registry: synsets | bpe | words); empty = the method's own (catlip: synsets,
    # superclass: bpe; clip/siglip take none). Any classification method trains with any label source.
    labels: str = ""
    label_options: dict[str, Any] = field(default_factory=dict)  # extractor options, e.g. {lemmatize: true}
    loss: str = ""  # empty = the method's own (bce, idf_softmax, clip, siglip); ablations: bce, asl, soft_margin, two_way
    subword_stopwords: bool = False  # label source bpe: drop English stop-words before BPE
    proper_nouns: bool = False  # label source synsets: proper nouns become labels too
    idf_momentum: float = 0.0  # 0 = exact running document counts; m in (0,1): counts decay by m each step
    use_idf: bool = True  # SuperClass idf_softmax: IDF-weight the targets (False = plain L1-normalised multi-hot)
    superclip_weight: float = 1.0  # superclip: loss = clip + superclip_weight * classification (method.loss)
    # LiT (`catlip lit`): a locked pre-trained image tower + a projection, and a text tower trained contrastively
    image_tower: str = ""  # the pre-trained checkpoint folder whose backbone is locked (set by `catlip lit RUN`)
    image_pool: str = "token"  # token: timm's pooling (CLS for ViTs) | avg: mean patch token (what SuperClass reads)
    unlocked_blocks: int = 0  # the last N transformer blocks (and the final norm) of the image tower train too
    # "" = run the locked tower on every augmented batch; "auto" (<output_dir>/feature_cache) or a folder: compute
    # its features once (resize + center crop, no augmentation), keyed by weights and data, and train at text speed
    feature_cache: str = ""


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 100
    steps: int = 1000
    min_lr_ratio: float = 0.0
    grad_accum: int = 1
    clip_grad: float = 1.0  # 0 disables


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on GPU, fp32 on CPU)
    device: str = "auto"
    compile: bool = False
    ema_decay: float = 0.0  # 0 disables EMA
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    distributed: str = "ddp"  # ddp | fsdp (used only under torchrun)
    progress: bool = True
    resume: str = ""  # "" = fresh run, "auto" = newest valid checkpoint in output_dir if any, or a checkpoint path
    stop_after: int = 0  # stop this process after N optimizer steps (time-boxed jobs); the schedule keeps optim.steps
    tensorboard: bool = True
    # a run stops (one-line error, exit 2) once this many consecutive steps had a NaN/inf loss or gradient norm;
    # checked where the loop waits for the device anyway (log steps, checkpoints), so it may run up to
    # train.log_every steps more before stopping; no checkpoint with non-finite weights is ever written
    nonfinite_patience: int = 3
    # refuse | allow: resuming with another data.train, data.batch_size or train.seed (not an exact continuation)
    resume_changes: str = "refuse"


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        from catlip.methods.registry import resolve

        resolve(self.method)  # method, label source, label options and loss against the registries
        if self.optim.steps <= 0:
            raise ConfigError("optim.steps must be positive")
        if self.data.batch_size <= 0:
            raise ConfigError("data.batch_size must be positive")
        # values read deep inside the trainer: a typo here must be one line now, not a traceback later
        for key, value, allowed in (("data.augment", self.data.augment, ("none", "rrc_flip", "randaugment")),
                                    ("data.decode", self.data.decode, ("reference", "fast", "gpu")),
                                    ("train.precision", self.train.precision, ("auto", "fp32", "bf16", "fp16")),
                                    ("train.distributed", self.train.distributed, ("ddp", "fsdp")),
                                    ("model.stem", self.model.stem, ("patch", "conv", "corenet")),
                                    ("model.pos_resize", self.model.pos_resize, ("grid", "stretch")),
                                    ("model.head_bias", self.model.head_bias, ("constant", "prior")),
                                    ("method.image_pool", self.method.image_pool, ("token", "avg")),
                                    ("train.resume_changes", self.train.resume_changes, ("refuse", "allow"))):
            if value not in allowed:
                raise ConfigError(f"{key} must be one of {' | '.join(allowed)}, got {value!r}")
        if self.data.image_size <= 0 or self.optim.grad_accum <= 0:
            raise ConfigError("data.image_size and optim.grad_accum must be positive")
        check_preprocessing(self.data)
        check_numbers(self)
        if not 0.0 <= self.model.patch_drop < 1.0:
            raise ConfigError(f"model.patch_drop must lie in [0, 1), got {self.model.patch_drop}")
        if "patch_drop_rate" in self.model.backbone_kwargs:
            # one switch only: model.patch_drop is left out of exports and evaluation, a raw timm kwarg would not be
            raise ConfigError("set model.patch_drop instead of model.backbone_kwargs.patch_drop_rate")
        self._validate_image_tower()
        return self

    def _validate_image_tower(self) -> None:
        from catlip.methods.registry import get

        m = self.method
        if not get(m.name).needs_image_tower:
            if m.image_tower or m.feature_cache or m.unlocked_blocks:
                raise ConfigError("method.image_tower, method.feature_cache and method.unlocked_blocks belong to "
                                  f"a locked-image method (method.name=lit: `catlip lit RUN`), not {m.name}")
            return
        if not m.image_tower:
            raise ConfigError(f"method.name={m.name} needs method.image_tower (a pre-trained run); start it with "
                              "`catlip lit RUN --config configs/lit_tiny_cpu.yaml`")
        if m.unlocked_blocks < 0:
            raise ConfigError(f"method.unlocked_blocks must be >= 0, got {m.unlocked_blocks}")
        if m.feature_cache and m.unlocked_blocks:
            raise ConfigError("method.feature_cache needs a fully locked image tower (method.unlocked_blocks=0): "
                              "the features of trainable blocks change every step; set method.feature_cache= "
                              "(empty) to train the unlocked blocks")
        if self.model.patch_drop and not m.unlocked_blocks:
            raise ConfigError("model.patch_drop has no effect on a locked image tower (it runs in eval mode); "
                              "set it to 0")


def check_preprocessing(data: DataConfig) -> None:
    """data.mean / data.std: three finite numbers each (std > 0); data.eval_resize: 0 or >= data.image_size."""
    import math

    for key, values in (("data.mean", data.mean), ("data.std", data.std)):
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{key} must be three finite numbers (R, G, B), got {values}")
    if min(data.std) <= 0:
        raise ConfigError(f"data.std must be positive, got {data.std}")
    if data.eval_resize and data.eval_resize < data.image_size:
        raise ConfigError(f"data.eval_resize ({data.eval_resize}) must be 0 or at least data.image_size "
                          f"({data.image_size}): the evaluation crop is taken from the resized image")


def check_numbers(cfg: Config) -> None:
    """Hyper-parameters that are NaN, inf or of the wrong sign would only show up as a diverged or stuck run."""
    import math

    o, t = cfg.optim, cfg.train
    for key, value, low, low_ok in (("optim.lr", o.lr, 0, True), ("optim.weight_decay", o.weight_decay, 0, True),
                                    ("optim.eps", o.eps, 0, False), ("optim.warmup_steps", o.warmup_steps, 0, True),
                                    ("optim.clip_grad", o.clip_grad, 0, True),
                                    ("optim.min_lr_ratio", o.min_lr_ratio, 0, True),
                                    ("train.ema_decay", t.ema_decay, 0, True),
                                    ("train.nonfinite_patience", t.nonfinite_patience, 1, True)):
        if not math.isfinite(value) or value < low or (value == low and not low_ok):
            raise ConfigError(f"{key} must be a finite number {'>=' if low_ok else '>'} {low}, got {value}")


def from_dict(data: dict[str, Any], cls: type = Config, where: str = "") -> Any:
    """Build a dataclass tree from a nested dict, rejecting unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where or 'config'}: {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        path = f"{where}.{key}" if where else key
        kwargs[key] = from_dict(value, hint, path) if dataclasses.is_dataclass(hint) else _coerce(value, hint, path)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = _plain_list("[" + value + "]") if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return [_coerce(v, item, path) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if hint in (int, float, str):
        # never round 2.5 to 2, read true as 1, or stringify a list: each is a typo to report, not a value
        if (isinstance(value, (list, tuple, dict)) or (hint is not str and isinstance(value, bool))
                or (hint is int and isinstance(value, float) and not value.is_integer())):
            raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}") from None
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.seed=3`` -> (["train", "seed"], 3). The value is read as YAML so lists and numbers work."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    if not raw.strip():
        return key.strip().split("."), ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        # Brace patterns such as data/{000..127}.tar are not YAML; keep such values as plain text.
        value = _plain_list(raw) if raw.strip().startswith("[") else raw
    return key.strip().split("."), value


def _plain_list(raw: str) -> list[str]:
    """``[a/{0..3}.tar, b.tar]`` -> items split on commas outside braces (brace sets may hold commas)."""
    items, depth, cur = [], 0, ""
    for ch in raw.strip()[1:-1] if raw.strip().endswith("]") else raw.strip()[1:]:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [i for i in items + [cur.strip()] if i]


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
        node[path[-1]] = value
    return raw


def read_recipe(path: str | Path | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML recipe (optional) as a nested dict, with ``key=value`` overrides applied."""
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections (data, model, method, optim, "
                              f"train) at the top level, got a {type(raw).__name__}")
    return apply_overrides(raw, overrides or [])


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Recipe file (optional) + overrides -> validated Config."""
    return from_dict(read_recipe(path, overrides)).validate()


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
