"""Prompt templates and class names for text zero-shot, following the CLIP_benchmark protocol.

The built-in template sets and the ImageNet class names come from open_clip's ``zero_shot_metadata`` (they ship in
its wheel) so that our numbers are comparable with open_clip / CLIP_benchmark ones. open_clip imports torch, and
task modules must not (``catlip --help``), so it is imported only when a built-in set is asked for.

A template is either a callable taking the class name (open_clip's) or a string with a ``{}`` or ``{c}``
placeholder (ours and template files). Strings are filled by plain replacement, not ``str.format``: a prompt with
other braces in it then stays as written instead of raising.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

from catlip.errors import DataError
from catlip.evaluate.common.class_files import clean_name, read_class_file  # noqa: F401 - clean_name re-exported

log = logging.getLogger("catlip.evaluate")

Template = Union[str, Callable[[str], str]]

# A short subset of the CLIP ImageNet prompt ensemble (the default before the full ensemble was available).
SHORT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a close-up photo of a {}.",
    "itap of a {}.",
)
TEMPLATE_SETS = ("openai", "simple", "short")
DEFAULT_TEMPLATES = "openai"  # CLIP_benchmark's choice for ImageNet-style classification
PLACEHOLDERS = ("{}", "{c}")
_PLACEHOLDER = re.compile(r"\{c?\}")
CLASSNAME_SETS = ("imagenet",)


@dataclass(frozen=True)
class PromptSet:
    name: str  # a TEMPLATE_SETS entry or the template file's path
    templates: tuple[Template, ...]

    def __len__(self) -> int:
        return len(self.templates)

    def prompts(self, classname: str) -> list[str]:
        return [fill(t, classname) for t in self.templates]


def fill(template: Template, classname: str) -> str:
    if callable(template):
        return template(classname)
    return _PLACEHOLDER.sub(lambda _: classname, template)  # one pass: a name holding "{}" is not re-filled


def load_templates(spec: str | None = None) -> PromptSet:
    """A built-in set (``openai``: 80 prompts, ``simple``: 7, ``short``: 6) or a file, one template per line."""
    spec = spec or DEFAULT_TEMPLATES
    if spec in TEMPLATE_SETS:
        return PromptSet(spec, _builtin_templates(spec))
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"--templates {spec!r} is neither {', '.join(TEMPLATE_SETS)} nor a file")
    return PromptSet(spec, read_template_file(path))


def _builtin_templates(name: str) -> tuple[Template, ...]:
    if name == "short":
        return SHORT_TEMPLATES
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    return tuple(OPENAI_IMAGENET_TEMPLATES if name == "openai" else SIMPLE_IMAGENET_TEMPLATES)


def read_template_file(path: str | Path) -> tuple[str, ...]:
    """Templates from a file: blank lines and ``#`` comments skipped; every other line needs a placeholder, since
    a prompt without the class name would give every class the same embedding."""
    out = []
    for n, line in enumerate(_read_lines(path, "template file"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not any(p in line for p in PLACEHOLDERS):
            raise DataError(f"{path}:{n}: template {line!r} has no {{}} or {{c}} placeholder for the class name")
        out.append(line)
    if not out:
        raise DataError(f"template file {path} holds no template (only blank or # lines)")
    return tuple(out)


# ---------------------------------------------------------------- class names


@dataclass(frozen=True)
class ClassNames:
    source: str  # "dataset", a CLASSNAME_SETS entry or the file's path
    names: tuple[str, ...]  # one per dataset class, in the dataset's class order
    # the WordNet ids the source gives (ImageNet's, or a file's wnid column; None where it gives none): a synset
    # head maps a class by its wnid first, so "church" (n03028079, the building) is not read as the congregation
    wnids: tuple[str | None, ...] = ()


def resolve_classnames(spec: str | None, dataset_names: Sequence[str]) -> ClassNames:
    """The names prompts are built from: the dataset's (``None``), open_clip's ImageNet names (``imagenet``) or a
    file; anything but the dataset's own must give exactly one name per dataset class."""
    wnids: list[str | None] = []
    if spec is None:
        source, names = "dataset", list(dataset_names)
    elif spec in CLASSNAME_SETS:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
        from timm.data import ImageNetInfo  # the 1,000 wnids in the class order open_clip's names follow

        source, names, wnids = spec, list(IMAGENET_CLASSNAMES), list(ImageNetInfo().label_names())
    else:
        source, (names, wnids) = spec, read_classnames_file(spec, with_wnids=True)
    if not names:
        raise DataError(f"class names ({source}): the list is empty")
    if len(names) != len(dataset_names):
        raise DataError(f"--classnames {source}: {len(names)} names, but the test set has {len(dataset_names)} "
                        "classes (one name per class, in the dataset's class order)")
    return ClassNames(source, tuple(clean_name(n) for n in names), tuple(wnids) or (None,) * len(names))


def read_classnames_file(path: str | Path, with_wnids: bool = False):
    """The names of a class file (any format :mod:`catlip.evaluate.common.class_files` reads), in index order;
    ``with_wnids``: (names, wnids), a WordNet id per name where the file gives one, else None."""
    classes = read_class_file(path)
    return (classes.names, classes.wnids) if with_wnids else classes.names


def name_warnings(names: Sequence[str]) -> list[str]:
    """Counted problems of a name list that do not stop the run: shared names (their text embeddings are equal,
    so their scores tie; open_clip's ImageNet list has two) and names that are WordNet ids (prompts need words)."""
    out, seen, shared = [], set(), []
    for name in names:
        key = name.casefold()
        if key in seen and name not in shared:
            shared.append(name)
        seen.add(key)
    if shared:
        out.append(f"{len(shared)} class names are shared by several classes, whose scores tie: {', '.join(shared)}")
    wnids = [n for n in names if len(n) == 9 and n[0] == "n" and n[1:].isdigit()]
    if wnids:
        out.append(f"{len(wnids)} class names are WordNet ids (e.g. {wnids[0]}); pass --classes with names or "
                   "--classnames imagenet")
    for message in out:
        log.warning("zero-shot: %s", message)
    return out


def _read_lines(path: str | Path, what: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {what} {path}: {getattr(err, 'strerror', None) or err}") from None
