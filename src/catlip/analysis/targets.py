"""Target label sets (the downstream classes whose presence in a corpus we measure) and their synsets.

A set is a built-in ImageNet subset (from timm's offline metadata), a TSV ``index<TAB>wnid<TAB>name`` file or a
names-per-line file. Names without a wnid are mapped like caption nouns: the underscore collocation first, then
morphy base forms, first noun sense. Names or wnids WordNet does not know are kept and listed as unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from catlip.errors import DataError

BUILTIN_SETS = ("imagenet1k", "imagenet12k", "imagenet22k")
_WNID = re.compile(r"^n\d{8}$")


@dataclass
class Target:
    index: int
    name: str
    wnid: str | None  # given by the set (ImageNet / TSV) or resolved from the name; None when unknown
    how: str  # "wnid", "name", "name-head", "unknown-wnid", "unknown-name"


@dataclass
class TargetSet:
    name: str
    source: str
    targets: list[Target]

    @property
    def known(self) -> list[Target]:
        return [t for t in self.targets if t.wnid is not None]

    @property
    def unknown(self) -> list[Target]:
        return [t for t in self.targets if t.wnid is None]


def resolve_name(name: str, wordnet) -> tuple[str | None, str]:
    """(first noun sense, how) of a class name: the collocation ("great_white_shark", "shih-tzu") first, then
    base forms of the whole name; failing that the last word, the head noun of an English compound
    ("pickup truck" -> "truck"), reported as how="name-head" so the report shows the approximation."""
    text = " ".join(name.strip().lower().replace("_", " ").split())
    if not text:
        return None, "unknown-name"
    tries = [(text.replace(" ", "_"), "name"), (text.replace("-", " ").replace(" ", "_"), "name")]
    words = text.replace("-", " ").split(" ")
    if len(words) > 1:
        tries.append((words[-1], "name-head"))
    for word, how in tries:
        for base in [word] + [b for b in wordnet.morphy(word) if b != word]:
            senses = wordnet.noun_synsets(base)
            if senses:
                return senses[0], how
    return None, "unknown-name"


def _known_wnid(wnid: str, wordnet) -> bool:
    try:
        wordnet.synset_lemmas(wnid)
    except (KeyError, ValueError, IndexError):
        return False
    return True


def _target(index: int, name: str, wnid: str | None, wordnet) -> Target:
    if wnid:
        if _known_wnid(wnid, wordnet):
            return Target(index, name, wnid, "wnid")
        return Target(index, name or wnid, None, "unknown-wnid")
    key, how = resolve_name(name, wordnet)
    return Target(index, name, key, how)


def _builtin(spec: str, wordnet) -> TargetSet:
    from timm.data import ImageNetInfo  # imports torch: only when a built-in set is asked for

    info = ImageNetInfo(spec)
    targets = []
    for i, wnid in enumerate(info.label_names()):
        lemmas = info.label_name_to_description(wnid)
        targets.append(_target(i, lemmas.split(",")[0].strip(), wnid, wordnet))
    return TargetSet(spec, f"timm.data.ImageNetInfo({spec!r})", targets)


def _from_file(path: Path, wordnet) -> TargetSet:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read target label set {path}: {err}") from err
    targets = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) >= 3 and fields[0].strip().lower() == "index":
            continue  # TSV header
        if len(fields) >= 3 and _WNID.match(fields[1].strip()):
            targets.append(_target(len(targets), fields[2].strip(), fields[1].strip(), wordnet))
        elif len(fields) >= 2 and _WNID.match(fields[0].strip()):
            targets.append(_target(len(targets), fields[1].strip(), fields[0].strip(), wordnet))
        elif _WNID.match(line.strip()):
            targets.append(_target(len(targets), line.strip(), line.strip(), wordnet))
        else:
            targets.append(_target(len(targets), fields[-1].strip(), None, wordnet))
    if not targets:
        raise DataError(f"target label set {path} has no classes")
    return TargetSet(path.stem if path.stem not in ("classes", "class_names") else path.parent.name,
                     str(path), targets)


def load_targets(spec: str, wordnet) -> TargetSet:
    """A built-in name (imagenet1k, imagenet12k, imagenet22k) or a path to a TSV / names-per-line file."""
    key = re.sub(r"[-_\s]", "", spec.lower())
    path = Path(spec)
    if key in BUILTIN_SETS and not path.exists():
        return _builtin(key, wordnet)
    if not path.is_file():
        raise DataError(f"target label set {spec!r} is neither a file nor one of {', '.join(BUILTIN_SETS)}")
    return _from_file(path, wordnet)
