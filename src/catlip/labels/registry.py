"""The label sources: how a caption becomes label keys, what the keys look like, and how a class name maps to them.

Every source is one ``LabelSource`` entry in ``SOURCES``; nothing outside ``catlip.labels`` (and the method
registry, ``catlip.methods.registry``) knows source names. An entry holds:

* ``name``, ``summary``, ``key_format``: what the CLI and the docs show;
* ``factory(**options)`` → the extractor (``extract(caption) -> list[str]``, ``name(key) -> str``,
  ``options: dict``), with ``options`` = the option names and their defaults;
* ``mapper`` (``catlip.labels.mapping``): target class name → vocabulary keys with a score, for Transfer Init and
  head zero-shot;
* ``tag``: the value of a vocabulary file's ``method`` field and of the vocabulary hash (``synsets`` and ``bpe``
  keep ``catlip`` / ``superclass``, so the vocabularies, checkpoints and results made before the registry keep
  their hashes and load unchanged); ``aliases``: names that also select the source (the old ``--method``
  values);
* ``config_fields``: extractor options read from ``method.<field>`` of the run config (besides
  ``method.label_options``);
* optional ``closed_vocabulary(options)`` (a fixed table used instead of counting captions: BPE),
  ``special_ids(num_classes)`` (class ids never used as targets), ``gloss(extractor, key)``;
* ``synset_keys``: keys are WordNet noun synsets (what `catlip analyze` needs);
* ``flags`` (option → help): the options `catlip labels` / `catlip vocab build` offer as ``--option-name`` flags,
  ``choices`` (option → valid values).

Add a source with ``register(LabelSource(...))`` at the end of this file (see docs/design.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from catlip.errors import ConfigError


def _lazy(path: str) -> Callable[..., Any]:
    """``"module:attr"`` → a callable that imports ``module`` on first call (keeps this module light)."""
    module, attr = path.split(":")

    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    call.__qualname__ = call.__name__ = attr
    return call


@dataclass(frozen=True)
class LabelSource:
    name: str
    summary: str
    key_format: str
    factory: Callable[..., Any]
    options: dict[str, Any]  # option name -> default
    mapper: Callable[..., Any]  # (vocab, alpha, wordnet) -> catlip.labels.mapping.Mapper
    tag: str  # the vocabulary file's `method` field, hashed with the keys
    aliases: tuple[str, ...] = ()
    config_fields: dict[str, str] = field(default_factory=dict)  # option -> method.<field>
    closed_vocabulary: Callable[[dict], Any] | None = None
    special_ids: Callable[[int], tuple[int, ...]] | None = None
    gloss: Callable[[Any, str], str] | None = None
    synset_keys: bool = False
    flags: dict[str, str] = field(default_factory=dict)  # option -> help of its command-line flag --option-name
    choices: dict[str, tuple] = field(default_factory=dict)  # option -> its valid values

    def make(self, **options):
        """The extractor with ``options`` (unknown option names raise ``TypeError``, as a bad keyword does)."""
        return self.factory(**options)

    def check_options(self, options: dict, where: str = "options") -> dict:
        """``options`` with the defaults filled in; an unknown name is a ``ConfigError`` listing the valid ones."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise ConfigError(f"label source {self.name} has no option {', '.join(unknown)} ({where}); "
                              f"valid: {valid}")
        for key, value in options.items():
            if key in self.choices and value not in self.choices[key]:
                raise ConfigError(f"label source {self.name}: {key}={value!r} ({where}); valid: "
                                  f"{', '.join(map(str, self.choices[key]))}")
        return {**self.options, **options}

    def never_targets(self, num_classes: int) -> tuple[int, ...]:
        return tuple(self.special_ids(num_classes)) if self.special_ids is not None else ()


SOURCES: dict[str, LabelSource] = {}


def register(source: LabelSource) -> LabelSource:
    taken = set(SOURCES) | {a for s in SOURCES.values() for a in s.aliases}
    for name in (source.name, *source.aliases):
        if name in taken:
            raise ValueError(f"label source name {name!r} is already registered")
    SOURCES[source.name] = source
    return source


def names() -> tuple[str, ...]:
    """Registered source names, in registration order."""
    return tuple(SOURCES)


def find(name: str | None) -> LabelSource | None:
    """The source called ``name`` or having it as an alias (``catlip`` → synsets); None when unknown."""
    if not name:
        return None
    if name in SOURCES:
        return SOURCES[name]
    return next((s for s in SOURCES.values() if name in s.aliases), None)


def get(name: str, where: str = "") -> LabelSource:
    """Like ``find`` but an unknown name is a one-line ``ConfigError`` listing the valid names (``where``: the
    setting it came from, e.g. ``method.labels``)."""
    source = find(name)
    if source is None:
        raise ConfigError(f"unknown label source {name!r}{f' ({where})' if where else ''}; "
                          f"valid: {', '.join(names())}")
    return source


def for_tag(tag: str) -> LabelSource | None:
    """The source whose vocabulary files carry ``method: tag`` (how vocabularies without a ``labels`` field are
    read: ``catlip`` → synsets, ``superclass`` → bpe)."""
    return next((s for s in SOURCES.values() if s.tag == tag), None) or find(tag)


def of_vocabulary(vocab: Any) -> LabelSource:
    """The source a vocabulary (or anything with ``labels`` or a legacy ``method``) was built with.

    Raises ``VocabularyError`` naming the value when it is none of the registered sources, so an unknown
    vocabulary is never silently treated as another source's keys.
    """
    labels = getattr(vocab, "labels", None)
    source = find(labels) if labels else for_tag(getattr(vocab, "method", None) or "")
    if source is None:
        from catlip.errors import VocabularyError

        got = labels or getattr(vocab, "method", None)
        raise VocabularyError(f"vocabulary label source {got!r} is not one of {', '.join(names())}")
    return source


def flag_options(source: LabelSource, flags: dict[str, Any]) -> dict:
    """Extractor options from command-line flags (``{option: value}``, None/False = not given).

    A flag the source has no option for is a ``ConfigError`` naming the sources it applies to.
    """
    given = {k: v for k, v in flags.items() if v not in (None, False)}
    wrong = sorted(k for k in given if k not in source.options)
    if wrong:
        owners = [s for s in SOURCES.values() if any(k in s.options for k in wrong)]
        where = " or ".join(f"--method {s.aliases[0]} (--labels {s.name})" if s.aliases else f"--labels {s.name}"
                            for s in owners)
        flag_names = "/".join("--" + k.replace("_", "-") for k in wrong)
        raise ConfigError(f"{flag_names} apply to {where} only, not --labels {source.name}")
    return source.check_options({k: v for k, v in given.items()})


def cli_flags() -> dict[str, dict]:
    """Every option some source offers as a flag: ``{option: {"default", "help", "choices", "sources"}}`` (help
    prefixed by the sources it applies to), in registration order; what `catlip labels` builds its flags from."""
    out: dict[str, dict] = {}
    for src in SOURCES.values():
        for opt, text in src.flags.items():
            entry = out.setdefault(opt, {"default": src.options[opt], "help": [], "choices": src.choices.get(opt),
                                         "sources": []})
            entry["sources"].append(src.name)
            if text not in entry["help"]:
                entry["help"].append(text)
    for entry in out.values():
        entry["help"] = "/".join(entry["sources"]) + ": " + "; ".join(entry["help"])
    return out


def config_options(source: LabelSource, method_cfg: Any) -> dict:
    """Extractor options of a run: ``method.<field>`` for the source's config fields, then
    ``method.label_options`` (unknown names are a ``ConfigError``)."""
    options = {opt: getattr(method_cfg, fld) for opt, fld in source.config_fields.items()}
    extra = dict(getattr(method_cfg, "label_options", None) or {})
    if extra:
        source.check_options(extra, "method.label_options")
        options.update(extra)
    return options


# ------------------------------------------------------------------------------------------ entries


def _synset_gloss(extractor, key: str) -> str:
    return extractor.wordnet.gloss(key)


def _full_bpe(options: dict):
    from catlip.labels.vocab import Vocabulary

    return Vocabulary.full_bpe(stopwords=bool(options.get("stopwords", False)))


# CLIP BPE ids that carry no caption content: <start_of_text>, <end_of_text>, and 0 (open_clip's padding id).
BPE_SPECIAL_IDS = (0, 49406, 49407)
BPE_VOCAB_SIZE = 49408


def _bpe_special_ids(num_classes: int) -> tuple[int, ...]:
    """Over the full BPE table (class id = BPE id) the special tokens are never targets."""
    return BPE_SPECIAL_IDS if num_classes == BPE_VOCAB_SIZE else ()


register(LabelSource(
    name="synsets", summary="CatLIP: caption nouns -> WordNet noun synsets (paper or corenet style)",
    key_format="n%08d (WordNet 3.0 noun offset = ImageNet wnid)",
    factory=_lazy("catlip.labels.synsets:SynsetExtractor"),
    options={"proper_nouns": False, "style": "paper", "languages": "en"},
    mapper=_lazy("catlip.labels.mapping:SynsetMapper"),
    tag="catlip", aliases=("catlip",), config_fields={"proper_nouns": "proper_nouns"},
    gloss=_synset_gloss, synset_keys=True, choices={"style": ("paper", "corenet")},
    flags={"proper_nouns": "also keep proper nouns (NNP/NNPS)",
           "style": "'paper' (POS nouns -> first sense; default) or 'corenet' (original code's rule)",
           "languages": "skip captions confidently in none of these ISO 639-1 codes (default en; 'off' keeps all)"}))

register(LabelSource(
    name="bpe", summary="SuperClass: CLIP byte-pair-encoding token ids of the caption",
    key_format="decimal CLIP BPE id (0..49407)",
    factory=_lazy("catlip.labels.subwords:SubwordExtractor"),
    options={"stopwords": False, "context_length": 77},
    mapper=_lazy("catlip.labels.mapping:SubwordMapper"),
    tag="superclass", aliases=("superclass",), config_fields={"stopwords": "subword_stopwords"},
    closed_vocabulary=_full_bpe, special_ids=_bpe_special_ids,
    flags={"stopwords": "drop English stop-words"}))

register(LabelSource(
    name="words", summary="lower-cased words of the caption (optionally lemmatised, stop-words removed)",
    key_format="the lower-case word",
    factory=_lazy("catlip.labels.words:WordExtractor"),
    options={"lemmatize": False, "stopwords": False},
    mapper=_lazy("catlip.labels.mapping:WordMapper"),
    tag="words",
    flags={"lemmatize": "reduce words to base forms (WordNet morphy for nouns, verb rules otherwise)",
           "stopwords": "drop English stop-words"}))
