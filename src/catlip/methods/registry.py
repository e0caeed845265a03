"""The pre-training methods: name → builder, default label source and loss, inputs, zero-shot mode.

Every method is one ``MethodSpec`` in ``METHODS``; config validation, the CLI, the vocabulary setup and evaluation
read this table instead of comparing method names. Importing this module does not import torch (builders are
imported when called). An entry holds:

* ``builder(cfg, num_classes, resolved, zero_weight_ids) -> Method`` (``resolved``: a ``Resolved`` with the
  loss and label source; ``zero_weight_ids``: class ids that are never targets);
* ``inputs``: the batch keys the method reads: ``("image", "label_ids")`` for classification over a label
  source's vocabulary, ``("image", "text")`` for the caption tokens;
* ``default_labels``: the label source (``catlip.labels.registry``) used when ``method.labels`` is empty (None:
  the method takes no labels); ``label_sources``: the sources it accepts (None = every registered one);
* ``default_loss`` and ``losses`` (the accepted ``method.loss`` values; None = any classification loss of
  ``catlip.losses.CLASSIFICATION_LOSSES``);
* ``zero_shot``: ``"head"`` (class names mapped onto the head rows by the label source's mapper) or ``"text"``
  (prompt embeddings from the text tower);
* ``needs_image_tower``: the method starts from a pre-trained run's backbone (``method.image_tower``: LiT);
  ``image_pool``: the pooled features its training shapes, which LiT on its runs reads (``token``: timm's pooling,
  the CLS token; ``avg``: the mean patch token);
* ``check(cfg)``: the method's own rules for a whole run config (one-line ``ConfigError``), run by
  :func:`validate_config` after the schema and both registries are checked.

Whoever loads a config to train calls :func:`validate_config` (or :func:`load_config`); the ``Resolved`` it returns
is the run's one resolution, passed down to the method builder and the vocabulary setup.

Add a method with ``register(MethodSpec(...))`` at the end of this file (see docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from catlip.config import Config, from_dict, read_recipe
from catlip.errors import ConfigError

from catlip.labels import registry as label_registry
from catlip.labels.registry import LabelSource, _lazy

ZERO_SHOT_MODES = ("head", "text")


def _locked_image_fields_unset(cfg: Any) -> None:
    """The rule of every method that trains its own image tower: the locked-image settings stay empty."""
    m = cfg.method
    if m.image_tower or m.feature_cache or m.unlocked_blocks:
        raise ConfigError("method.image_tower, method.feature_cache and method.unlocked_blocks belong to "
                          f"a locked-image method (method.name=lit: `catlip lit RUN`), not {m.name}")


def _locked_image_rules(cfg: Any) -> None:
    """LiT: a tower to lock, and settings that agree with a locked tower."""
    m = cfg.method
    if not m.image_tower:
        raise ConfigError(f"method.name={m.name} needs method.image_tower (a pre-trained run); start it with "
                          "`catlip lit RUN --config RECIPE` (a LiT recipe such as configs/lit_tiny_cpu.yaml), which "
                          "sets the tower to the run's backbone")
    if m.unlocked_blocks < 0:
        raise ConfigError(f"method.unlocked_blocks must be >= 0, got {m.unlocked_blocks}")
    if m.feature_cache and m.unlocked_blocks:
        raise ConfigError("method.feature_cache needs a fully locked image tower (method.unlocked_blocks=0): "
                          "the features of trainable blocks change every step; set method.feature_cache= "
                          "(empty) to train the unlocked blocks")
    if cfg.model.patch_drop and not m.unlocked_blocks:
        raise ConfigError("model.patch_drop has no effect on a locked image tower (it runs in eval mode); "
                          "set it to 0")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str  # how messages and tables write it ("CatLIP")
    summary: str
    builder: Callable[..., Any]
    inputs: tuple[str, ...]
    default_labels: str | None
    default_loss: str
    zero_shot: str  # one of ZERO_SHOT_MODES
    losses: tuple[str, ...] | None = None
    label_sources: tuple[str, ...] | None = None
    needs_image_tower: bool = False  # trains on a pre-trained run's backbone (method.image_tower): LiT
    image_pool: str = "token"  # the pooled image features its training shapes (LiT on its runs reads these)
    check: Callable[[Any], None] = _locked_image_fields_unset  # the method's own rules for a run config

    @property
    def uses_labels(self) -> bool:
        """Whether the method classifies over a label vocabulary (reads ``label_ids``)."""
        return "label_ids" in self.inputs

    @property
    def uses_text(self) -> bool:
        return "text" in self.inputs

    def compatible_sources(self) -> tuple[str, ...]:
        """The label sources this method can train with (empty for methods without labels)."""
        if not self.uses_labels:
            return ()
        return tuple(n for n in label_registry.names() if self.label_sources is None or n in self.label_sources)


@dataclass(frozen=True)
class Resolved:
    """A run's method settings after defaults: the spec, its label source and options, its loss."""

    spec: MethodSpec
    source: LabelSource | None
    options: dict
    loss: str

    def zero_weight_ids(self, num_classes: int) -> tuple[int, ...]:
        """Class ids that are never targets (the label source's special ids, e.g. BPE start/end tokens)."""
        return self.source.never_targets(num_classes) if self.source is not None else ()


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in METHODS:
        raise ValueError(f"method {spec.name!r} is already registered")
    if spec.zero_shot not in ZERO_SHOT_MODES:
        raise ValueError(f"method {spec.name}: zero_shot must be one of {ZERO_SHOT_MODES}")
    METHODS[spec.name] = spec
    return spec


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def titles(zero_shot: str | None = None, *, labels: bool | None = None, sep: str = " or ") -> str:
    """Titles of the methods with this zero-shot mode / with or without labels, e.g. "CatLIP, SuperClass or
    SuperCLIP" (with sep="/": "CLIP/SigLIP")."""
    names = [s.title for s in METHODS.values()
             if (zero_shot is None or s.zero_shot == zero_shot) and (labels is None or s.uses_labels == labels)]
    if sep == " or " and len(names) > 2:
        return ", ".join(names[:-1]) + " or " + names[-1]
    return sep.join(names)


def find(name: str | None) -> MethodSpec | None:
    return METHODS.get(name or "")


def get(name: str) -> MethodSpec:
    """The method called ``name``; unknown is a one-line ``ConfigError`` listing the valid names."""
    spec = find(name)
    if spec is None:
        raise ConfigError(f"unknown method {name!r} (method.name); valid: {', '.join(names())}")
    return spec


def image_pool_of(method_cfg: dict) -> str:
    """The pooled features a recorded run's image tower was trained to give (its ``method`` section as a dict)."""
    spec = find(method_cfg.get("name", ""))
    if spec is None:
        return "token"
    return method_cfg.get("image_pool", "token") if spec.needs_image_tower else spec.image_pool


def image_tower_method() -> str:
    """The method `catlip lit` trains: the registered one that locks a pre-trained image tower."""
    return next(s.name for s in METHODS.values() if s.needs_image_tower)


def label_source_name(method_cfg: Any) -> str | None:
    """``method.labels``, or the method's default label source when it is empty (None: no labels)."""
    spec = get(method_cfg.name)
    return (getattr(method_cfg, "labels", "") or spec.default_labels) if spec.uses_labels else None


def resolve(method_cfg: Any) -> Resolved:
    """Check ``cfg.method`` against both registries and fill in the defaults.

    ``ConfigError`` (one line) for an unknown method or label source, a label source the method cannot use, label
    options for a method without labels or unknown to the source, and a loss the method does not accept.
    """
    spec = get(method_cfg.name)
    labels = getattr(method_cfg, "labels", "") or ""
    label_options = dict(getattr(method_cfg, "label_options", None) or {})
    source, options = None, {}
    if spec.uses_labels:
        source = label_registry.get(labels or spec.default_labels, "method.labels")
        allowed = spec.compatible_sources()
        if source.name not in allowed:
            raise ConfigError(f"method {spec.name} cannot train with label source {source.name} (method.labels); "
                              f"valid: {', '.join(allowed)}")
        options = label_registry.config_options(source, method_cfg)
    elif labels or label_options:
        with_labels = ", ".join(s.name for s in METHODS.values() if s.uses_labels)
        given = ", ".join(([f"method.labels={labels}"] if labels else [])
                          + ([f"method.label_options={label_options}"] if label_options else []))
        raise ConfigError(f"method {spec.name} trains on the caption text and takes no label source ({given}); "
                          f"methods with label sources: {with_labels}")
    loss = getattr(method_cfg, "loss", "") or spec.default_loss
    if spec.losses is not None and loss not in spec.losses:
        raise ConfigError(f"method {spec.name} trains with its own loss; method.loss={loss!r} is unsupported "
                          f"(valid: {', '.join(spec.losses)})")
    return Resolved(spec, source, options, loss)


def validate_config(cfg: Config) -> Resolved:
    """The whole check of a run config, in the order its errors have always come: method and label source against
    both registries, the schema (``Config.validate``), then the method's own rules. Returns the run's resolution."""
    resolved = resolve(cfg.method)
    cfg.validate()
    resolved.spec.check(cfg)
    return resolved


def load_config(path: Any = None, overrides: list[str] | None = None) -> Config:
    """A recipe file (optional) + ``key=value`` overrides as a run config checked by :func:`validate_config`:
    what the commands that train read (``catlip.config.load_config`` checks the schema only)."""
    cfg = from_dict(read_recipe(path, overrides))
    validate_config(cfg)
    return cfg


register(MethodSpec(
    name="catlip", title="CatLIP", summary="CatLIP: multi-label BCE over WordNet synsets, linear head on the pooled embedding",
    builder=_lazy("catlip.methods.classification:build_catlip"), inputs=("image", "label_ids"),
    default_labels="synsets", default_loss="bce", zero_shot="head"))

register(MethodSpec(
    name="superclass", title="SuperClass", summary="SuperClass: IDF-weighted softmax over CLIP BPE tokens, head on mean patch tokens",
    builder=_lazy("catlip.methods.classification:build_superclass"), inputs=("image", "label_ids"),
    default_labels="bpe", default_loss="idf_softmax", zero_shot="head", image_pool="avg"))

register(MethodSpec(
    name="clip", title="CLIP", summary="CLIP: symmetric InfoNCE between image and text towers over the global batch",
    builder=_lazy("catlip.methods.contrastive:build_contrastive"), inputs=("image", "text"),
    default_labels=None, default_loss="clip", losses=("clip",), zero_shot="text"))

register(MethodSpec(
    name="siglip", title="SigLIP", summary="SigLIP: sigmoid loss over all image-text pairs with a learnable bias",
    builder=_lazy("catlip.methods.contrastive:build_contrastive"), inputs=("image", "text"),
    default_labels=None, default_loss="siglip", losses=("siglip",), zero_shot="text"))

register(MethodSpec(
    name="superclip", title="SuperCLIP",
    summary="SuperCLIP: CLIP's InfoNCE + method.superclip_weight x SuperClass's IDF softmax over BPE tokens (head on "
            "mean patch tokens)",
    builder=_lazy("catlip.methods.superclip:build_superclip"), inputs=("image", "text", "label_ids"),
    default_labels="bpe", default_loss="idf_softmax", zero_shot="text"))

register(MethodSpec(
    name="lit", title="LiT",
    summary="LiT: a locked pre-trained image tower (method.image_tower) + projection, and a text tower trained with "
            "CLIP's InfoNCE (`catlip lit RUN`)",
    builder=_lazy("catlip.methods.lit:build_lit"), inputs=("image", "text"),
    default_labels=None, default_loss="clip", losses=("clip",), zero_shot="text", needs_image_tower=True,
    check=_locked_image_rules))
