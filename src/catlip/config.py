"""Typed run configuration.

A run is described by one :class:`Config` made of small dataclasses. YAML recipes under ``configs/`` fill it,
and ``section.field=value`` overrides from the command line change single fields. Unknown keys are errors:
a typo in a recipe must never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from catlip.defaults import CLIP_MEAN, CLIP_STD, V_TAU_DEFAULT
from catlip.errors import ConfigError  # noqa: F401  (defined in catlip.errors; imported from here too)


@dataclass
class DataConfig:
    """Training data: where images and captions come from, how they are read, augmented and batched."""

    # Sources: "synthetic", webdataset shards (paths, brace patterns, URLs), a CSV/TSV/JSONL manifest, or an
    # image folder with sidecar .txt captions. Several sources are read one after another.
    train: list[str] = field(default_factory=lambda: ["synthetic"])
    synthetic_size: int = 2048  # images in the embedded synthetic set (data.train=[synthetic])
    caption_keys: list[str] = field(default_factory=lambda: ["txt", "json"])  # shard members holding the caption
    image_key: str = "jpg;jpeg;png;webp"  # shard member extensions read as the image, `;`-separated
    caption_column: str = "caption"  # caption field of CSV/TSV/JSONL manifests
    image_column: str = "image"  # image path field of CSV/TSV/JSONL manifests
    vocab: str = ""  # path to a vocabulary JSON; empty = build one from the training captions first
    labels_file: str = ""  # pre-extracted labels (JSONL from `catlip labels`), optional
    vocab_min_count: int = V_TAU_DEFAULT  # V_tau: the paper's 500 (catlip.defaults); small recipes set their own
    vocab_top_k: int = 0  # keep at most this many of the most frequent labels in a built vocabulary (0 = all)
    # Per-channel pixel mean (R, G, B). Mean, std and eval_resize travel with the model: every command that reads
    # the run feeds it what it was trained on, and exports write them into timm's pretrained_cfg. Default: CLIP's;
    # corenet's CatLIP models (catlip import corenet) read [0, 1] pixels: mean 0, std 1, eval_resize 232.
    mean: list[float] = field(default_factory=lambda: list(CLIP_MEAN))
    std: list[float] = field(default_factory=lambda: list(CLIP_STD))  # per-channel pixel std (R, G, B)
    # evaluation: shorter side to this, then the centre model.image_size crop (0 = model.image_size)
    eval_resize: int = 0
    batch_size: int = 64  # images per optimizer micro-step on each process
    num_workers: int = 2  # DataLoader worker processes (also the processes counting captions for a vocabulary)
    augment: str = "rrc_flip"  # none | rrc_flip (random-resized crop + flip) | randaugment
    rrc_scale_min: float = 0.4  # smallest area fraction a random-resized crop keeps
    multiscale: bool = False  # CatLIP Appendix A variable-resolution, variable-batch sampler
    # the resolutions the data.multiscale sampler draws from
    multiscale_sizes: list[int] = field(default_factory=lambda: [128, 160, 192, 224, 256, 288, 320])
    context_length: int = 77  # text tokens for CLIP / SigLIP
    # not read by pre-training: every epoch is an exact permutation of the samples (data/sampler.py); kept so
    # recipes that set it still load
    shuffle_buffer: int = 1000
    max_image_pixels: int = 89_478_485  # PIL's default; larger images are skipped as decompression bombs
    max_skip_fraction: float = 0.5  # warn when more of one data.train source is skipped (1 = never warn)
    # reference: full decode + torchvision transform, float in the workers; fast: the same crops and flips with
    # reduced-size JPEG decoding and uint8 batches normalised on the device; gpu: JPEGs decoded on the GPU (nvJPEG),
    # the CPU fast path without CUDA. docs/throughput.md
    decode: str = "fast"


@dataclass
class ModelConfig:
    """The networks: the timm image backbone, its classification head, and the text tower of two-tower methods."""

    backbone: str = "vit_tiny_patch16_224"  # timm model name of the image backbone
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model
    # input resolution in pixels (square): the training crop, the evaluation crop and the exports' input size.
    # Stored with the checkpoint's model arguments (meta.json), so evaluation, export and LiT rebuild the model
    # from the run's own files. data.image_size is its deprecated name
    image_size: int = 64
    head_bias_init: float = 0.0  # CatLIP: a negative bias starts the sigmoid near the label prior
    # constant: every class starts at head_bias_init; prior: each class at its own caption frequency (log-odds
    # for sigmoid losses, log-frequency for softmax ones), read off the vocabulary counts (models/heads.py)
    head_bias: str = "constant"
    drop_path_rate: float = 0.0  # stochastic depth of the backbone's blocks (timm's drop_path_rate)
    # ViTs: patch (timm's p x p patch embedding) | conv (3x3 stride-2 convolutions) | corenet (the CatLIP paper's
    # 4x4/4 pad 1 -> BN -> GELU -> 2x2/2 -> BN -> GELU -> 2x2/2 stem, patch 16 only): models/stems.py
    stem: str = "patch"
    # ViTs at an input size other than the table's: grid (timm's 2-D resample of the position grid) | stretch
    # (corenet's 1-D linear stretch of the flattened row-major table, what the released CatLIP models were trained
    # and evaluated with). stretch builds the ViT with dynamic input sizes. models/pos_embed.py
    pos_resize: str = "grid"
    # FLIP: fraction of patch tokens a ViT drops at random in each pre-training forward (CLS/register tokens are
    # kept); evaluation, probes, fine-tuning and exports always see every token. 0 disables.
    patch_drop: float = 0.0
    grad_checkpointing: bool = False  # recompute activations in the backward pass (less memory, slower steps)
    embed_dim: int = 512  # CLIP / SigLIP: width of the shared image-text embedding space
    text_width: int = 512  # CLIP / SigLIP: width of the text transformer
    text_layers: int = 12  # CLIP / SigLIP: depth of the text transformer
    text_heads: int = 8  # CLIP / SigLIP: attention heads of the text transformer
    init_logit_scale: float = 2.6592  # CLIP: initial log inverse temperature, log(1 / 0.07)
    init_logit_bias: float = -10.0  # SigLIP: initial logit bias
    siglip_init_logit_scale: float = 2.302585  # log(10), the SigLIP paper's t' init (CLIP uses init_logit_scale)


@dataclass
class MethodConfig:
    """The pre-training method, its label source and loss."""

    name: str = "catlip"  # a catlip.methods.registry entry: catlip | superclass | clip | siglip | superclip
    # label source (catlip.labels.registry: synsets | bpe | words); empty = the method's own (catlip: synsets,
    # superclass: bpe; clip/siglip take none). Any classification method trains with any label source.
    labels: str = ""
    label_options: dict[str, Any] = field(default_factory=dict)  # extractor options, e.g. {languages: off} (synsets), {lemmatize: true} (words)
    loss: str = ""  # empty = the method's own (bce, idf_softmax, clip, siglip); ablations: bce, asl, soft_margin, two_way
    subword_stopwords: bool = False  # label source bpe: drop English stop-words before BPE
    proper_nouns: bool = False  # label source synsets: proper nouns become labels too
    idf_momentum: float = 0.0  # 0 = exact running document counts; m in (0,1): counts decay by m each step
    use_idf: bool = True  # SuperClass idf_softmax: IDF-weight the targets (False = plain L1-normalised multi-hot)
    superclip_weight: float = 1.0  # superclip: loss = clip + superclip_weight * classification (method.loss)
    # LiT (`catlip lit`): the pre-trained checkpoint folder whose backbone is locked (set by `catlip lit RUN`)
    image_tower: str = ""
    image_pool: str = "token"  # token: timm's pooling (CLS for ViTs) | avg: mean patch token (what SuperClass reads)
    unlocked_blocks: int = 0  # the last N transformer blocks (and the final norm) of the image tower train too
    # "" = run the locked tower on every augmented batch; "auto" (<output_dir>/feature_cache) or a folder: compute
    # its features once (resize + center crop, no augmentation), keyed by weights and data, and train at text speed
    feature_cache: str = ""


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule: linear warmup, then cosine decay (train/optim.py)."""

    lr: float = 1e-3  # peak learning rate, reached at the end of the warmup
    weight_decay: float = 0.05  # AdamW decoupled weight decay (biases, norms and embeddings exempt)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW moment decay rates
    eps: float = 1e-8  # AdamW denominator epsilon
    warmup_steps: int = 100  # optimizer steps of linear warmup from 0 to optim.lr
    steps: int = 1000  # total optimizer steps; the cosine decay ends here
    min_lr_ratio: float = 0.0  # the cosine decays to optim.lr * min_lr_ratio
    grad_accum: int = 1  # micro-batches accumulated into one optimizer step
    clip_grad: float = 1.0  # clip the gradient norm to this (0 disables)


@dataclass
class TrainConfig:
    """The run: output folder, precision, device, checkpoints, logs and resuming."""

    output_dir: str = "runs/default"  # run folder: checkpoints, config.yaml, vocab.json, metrics.jsonl, logs
    seed: int = 0  # seed of the initial weights, the sample order and augmentation
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (auto: bf16 on GPU, fp32 on CPU)
    device: str = "auto"  # auto (CUDA if present, else CPU) | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model (falls back to eager with one line if compiling fails)
    ema_decay: float = 0.0  # decay of an exponential moving average of the weights (0 disables EMA)
    ckpt_every: int = 200  # write a checkpoint every N optimizer steps (and always at the last step)
    keep_checkpoints: int = 2  # how many of the newest checkpoints stay on disk
    log_every: int = 10  # write a metrics record every N optimizer steps (and at the last step)
    distributed: str = "ddp"  # ddp | fsdp (used only under torchrun)
    progress: bool = True  # show a progress bar
    resume: str = ""  # "" = fresh run, "auto" = newest valid checkpoint in output_dir if any, or a checkpoint path
    stop_after: int = 0  # stop this process after N optimizer steps (time-boxed jobs); the schedule keeps optim.steps
    tensorboard: bool = True  # write TensorBoard scalars to <output_dir>/tb
    # a run stops (one-line error, exit 2) once this many consecutive steps had a NaN/inf loss or gradient norm;
    # checked where the loop waits for the device anyway (log steps, checkpoints), so it may run up to
    # train.log_every steps more before stopping; no checkpoint with non-finite weights is ever written
    nonfinite_patience: int = 3
    # refuse | allow: resuming with another data.train, data.batch_size or train.seed (not an exact continuation)
    resume_changes: str = "refuse"


@dataclass
class Config:
    """One run: a section per dataclass above."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """The schema's checks. The method registry checks names and each method's own rules on top
        (``catlip.methods.registry.validate_config``), since a layer below the methods cannot ask them."""
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
        if self.model.image_size <= 0 or self.optim.grad_accum <= 0:
            raise ConfigError("model.image_size and optim.grad_accum must be positive")
        if self.train.ckpt_every <= 0 or self.train.log_every <= 0:  # the loop divides the step by them
            raise ConfigError(f"train.ckpt_every and train.log_every must be positive, got {self.train.ckpt_every} "
                              f"and {self.train.log_every}")
        check_preprocessing(self.data, self.model.image_size)
        check_numbers(self)
        if not 0.0 <= self.model.patch_drop < 1.0:
            raise ConfigError(f"model.patch_drop must lie in [0, 1), got {self.model.patch_drop}")
        if "patch_drop_rate" in self.model.backbone_kwargs:
            # one switch only: model.patch_drop is left out of exports and evaluation, a raw timm kwarg would not be
            raise ConfigError("set model.patch_drop instead of model.backbone_kwargs.patch_drop_rate")
        return self


def check_preprocessing(data: DataConfig, image_size: int) -> None:
    """data.mean / data.std: three finite numbers each (std > 0); data.eval_resize: 0 or >= model.image_size."""
    import math

    for key, values in (("data.mean", data.mean), ("data.std", data.std)):
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ConfigError(f"{key} must be three finite numbers (R, G, B), got {values}")
    if min(data.std) <= 0:
        raise ConfigError(f"data.std must be positive, got {data.std}")
    if data.eval_resize and data.eval_resize < image_size:
        raise ConfigError(f"data.eval_resize ({data.eval_resize}) must be 0 or at least model.image_size "
                          f"({image_size}): the evaluation crop is taken from the resized image")


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


def schedule_warnings(cfg: Config) -> list[str]:
    """Settings that run but do not do what they read as: one line each (the trainer prints them at start)."""
    o, t = cfg.optim, cfg.train
    out = []
    if o.warmup_steps >= o.steps > 1:  # one step at the full rate (warmup 1) is what it reads as
        out.append(_warmup_warning(o))
    if t.stop_after > o.steps:
        out.append(f"train.stop_after={t.stop_after} > optim.steps={o.steps} has no effect: the run ends at step "
                   f"{o.steps} (train.stop_after only stops a run earlier)")
    if o.min_lr_ratio > 1:
        out.append(f"optim.min_lr_ratio={o.min_lr_ratio:g} > 1: after the warmup the learning rate rises from "
                   f"optim.lr to {o.lr * o.min_lr_ratio:.3g} instead of decaying")
    return out


def _warmup_warning(o: OptimConfig) -> str:
    # train/optim.py lr_at: warmup step i (0-based) uses lr * (i + 1) / warmup_steps, so the last step is the peak
    peak = o.lr * o.steps / o.warmup_steps
    if o.warmup_steps == o.steps:
        what = f"reaches optim.lr={o.lr:g} only on the last step"
    else:
        share = o.steps / o.warmup_steps
        what = f"never reaches optim.lr={o.lr:g}: it peaks at {peak:.3g} ({share:.0%}) on the last step"
    return (f"optim.warmup_steps={o.warmup_steps} >= optim.steps={o.steps}: the learning rate rises for the whole "
            f"run and {what}, with no cosine decay; lower optim.warmup_steps (e.g. to {o.steps // 10})")


# Keys that moved to another section (old -> new). Recipes, overrides and the config.yaml / checkpoint meta of older
# runs still say the old name, so it keeps loading: a recipe or override with one line on stderr saying where it now
# lives, a stored run's config quietly (its owner has nothing to change).
MOVED_KEYS = {"data.image_size": "model.image_size"}


def upgrade_keys(raw: dict[str, Any], *, quiet: bool = False) -> dict[str, Any]:
    """``raw`` (a nested config dict) with every :data:`MOVED_KEYS` entry at its new place, as a copy. The old
    and the new key both set to different values is a ``ConfigError``; ``quiet`` leaves out the deprecation line
    (for comparing a stored config, which was read, and announced, elsewhere)."""
    if not isinstance(raw, dict):
        return raw
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        if not isinstance(out.get(old_section), dict) or old_key not in out[old_section]:
            continue
        value = out[old_section].pop(old_key)
        target = out.setdefault(new_section, {})
        if not isinstance(target, dict):
            continue  # from_dict names the section that is not a mapping
        if new_key in target and not _same(target[new_key], value, new):
            raise ConfigError(f"{old}={value!r} and {new}={target[new_key]!r} disagree; set only {new} "
                              f"({old} is its deprecated name)")
        target[new_key] = value
        if not quiet:
            _deprecated(f"{old} is deprecated and read as {new}; recipes and overrides should set {new}")
    return out


def _same(a: Any, b: Any, key: str) -> bool:
    section, name = key.split(".")
    hint = typing.get_type_hints(typing.get_type_hints(Config)[section])[name]
    return _coerce(a, hint, key) == _coerce(b, hint, key)


def _deprecated(text: str) -> None:
    print(f"catlip: warning: {text}", file=sys.stderr)


def from_dict(data: dict[str, Any], cls: type = Config, where: str = "") -> Any:
    """Build a dataclass tree from a nested dict, rejecting unknown keys (a :class:`Config` reads moved keys at
    their new place: :func:`upgrade_keys`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    if cls is Config:
        data = upgrade_keys(data)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        # a flat recipe (no section at all) is a task recipe: configs/finetune_*, segment_*, detect_*
        hint = ("; a recipe without sections is one of `catlip finetune`, `segment` or `detect`"
                if cls is Config and not set(data) & names else "")
        raise ConfigError(f"unknown key(s) in {where or 'config'}: {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(names))}{hint}")
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
        except OSError as err:  # a folder, no permission: the same one line as a missing file
            raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path}: expected a mapping of sections (data, model, method, optim, "
                              f"train) at the top level, got a {type(raw).__name__}")
    # each layer's old names first: an override then wins over the recipe whichever name either of them used
    return apply_overrides(upgrade_keys(raw), upgrade_overrides(overrides or []))


def upgrade_overrides(overrides: list[str]) -> list[str]:
    """``overrides`` with every :data:`MOVED_KEYS` name at its new place (one deprecation line each); the old and
    the new name both given, with different values, is the same ``ConfigError`` as in a recipe."""
    given = {".".join(path): value for path, value in map(parse_override, overrides)}
    out = []
    for text in overrides:
        key, value = text.split("=", 1)
        new = MOVED_KEYS.get(key.strip())
        if new is not None:
            old_value = given[key.strip()]
            if new in given and not _same(given[new], old_value, new):
                raise ConfigError(f"{key.strip()}={old_value!r} and {new}={given[new]!r} disagree; set only {new} "
                                  f"({key.strip()} is its deprecated name)")
            _deprecated(f"{key.strip()} is deprecated and read as {new}; recipes and overrides should set {new}")
            text = f"{new}={value}"
        out.append(text)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Recipe file (optional) + overrides -> Config checked against the schema. A config to train with also needs
    the method registry's checks: ``catlip.methods.registry.load_config`` is this plus those."""
    return from_dict(read_recipe(path, overrides)).validate()


def dump_config(cfg: Config) -> str:
    """Every key of ``cfg`` as YAML, in the dataclasses' order; ``load_config`` of this text gives ``cfg`` back."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML, written atomically (a run dir never holds half a config.yaml)."""
    from catlip.atomic import write_text

    write_text(path, dump_config(cfg))
