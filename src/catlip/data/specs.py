"""What kind of data a spec names: the one place that decides it, for every consumer.

A *spec* is what a user writes for data: a ``data.train`` entry, evaluation's ``--train`` / ``--test``, a
``catlip labels --input`` file, a ``catlip tag`` input, dense ``--train``. ``classify(spec)`` tells its kind from
its form and what is on disk; ``resolve(spec, role, accepts)`` also refuses a kind the consumer does not read and
checks that the data is there, with one text per failure. Each consumer then reads its kinds through
``catlip.data.formats`` and does only its own part. Pure Python (no torch), like ``formats``.

The kinds, in the order they are tried (``KINDS``; the first that matches wins):

- ``synthetic``: ``synthetic``, ``synthetic:N`` or ``synthetic:N:SIZE`` (the generated scenes; the word wins over a
  file or folder of that name: write ``./synthetic`` for those).
- ``folder``: an existing directory. What it holds is the consumer's reading (images with sidecar captions, one
  sub-folder per class, ADE20k's images/ + annotations/, any images), and so is a folder without it.
- ``glob``: a pattern with ``*``, ``?`` or ``[`` that is not itself a path (its matches, sorted).
- ``shards``: webdataset tar shards: a ``.tar`` / ``.tar.gz`` / ``.tgz`` path, a brace pattern, ``::``-joined
  patterns or a remote URL (``formats.is_shard_spec``); an existing file only by its own suffix.
- ``manifest``: a ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.ndjson`` file (``formats.MANIFEST_SUFFIXES``).
- ``json``: a ``.json`` file (COCO instances for detection).
- ``image``: a file with an image suffix (``formats.IMAGE_EXTENSIONS``).
- ``captions``: any other file (caption text: one caption per line).

Failures, each with one text: a malformed ``synthetic:...``; a kind the consumer does not take (``refusal``: the
spec, what the consumer takes, and what the spec is, or that it is not found); a missing file or local shard
(``not_found``). Adding a kind is a row of ``KINDS`` (and its reader in ``formats``); a new suffix
of an existing kind is a constant of ``formats``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from catlip.data import formats
from catlip.errors import DataError

SYNTHETIC, FOLDER, GLOB, SHARDS, MANIFEST, JSON, IMAGE, CAPTIONS = (
    "synthetic", "folder", "glob", "shards", "manifest", "json", "image", "captions")
SYNTHETIC_FORM = "synthetic[:N[:SIZE]]"
_SHOWN = 5  # missing files named in one message


@dataclass(frozen=True)
class DataSpec:
    """A classified spec: ``paths`` are the shard URLs (brace patterns expanded), the glob's matches, or the one
    file / folder; none for synthetic data, whose ``count`` / ``size`` are given only when the spec names them."""

    spec: str
    kind: str
    paths: tuple[str, ...] = ()
    count: int | None = None
    size: int | None = None

    @property
    def path(self) -> Path:
        return Path(self.paths[0])


@dataclass(frozen=True)
class Kind:
    """One row of the table: ``noun`` names such a spec in messages, ``short`` a missing one ("manifest not
    found"); ``describe`` builds its ``DataSpec``; ``check(found)`` raises when its data is not there."""

    name: str
    noun: str
    short: str
    matches: Callable[[str], bool]
    describe: Callable[[str, str], DataSpec] = lambda spec, name: DataSpec(spec, name, (spec,))
    check: Callable[[DataSpec], None] | None = None


def _synthetic(spec: str, name: str) -> DataSpec:
    parts = spec.split(":")[1:]
    try:
        if len(parts) > 2:
            raise ValueError
        numbers = [int(p) for p in parts]
    except ValueError:
        raise DataError(f"{spec!r}: synthetic data is written {SYNTHETIC_FORM}") from None
    count, size = (numbers + [None, None])[:2]
    if (count is not None and count <= 0) or (size is not None and size < 16):
        raise DataError(f"{spec!r}: N must be positive and SIZE at least 16")
    return DataSpec(spec, name, (), count, size)


def _is_glob(spec: str) -> bool:
    return any(ch in spec for ch in "*?[") and not formats.is_remote(spec) and not os.path.exists(spec)


def _glob(spec: str, name: str) -> DataSpec:
    return DataSpec(spec, name, tuple(sorted(glob.glob(spec, recursive=True))))


def _is_shards(spec: str) -> bool:
    if os.path.isfile(spec):  # a file is what its own name says: notes.target.txt or x.tar.bak hold no shard
        return spec.lower().endswith(formats.TAR_SUFFIXES)
    return formats.is_shard_spec(spec)


def _shards(spec: str, name: str) -> DataSpec:
    return DataSpec(spec, name, tuple(formats.expand_urls(spec)))


def file_there(found: DataSpec) -> None:
    if not os.path.isfile(found.spec):
        raise not_found(found.kind, [found.spec])


def _shards_there(found: DataSpec) -> None:
    """Local shards only: a remote one is fetched (and may fail, naming itself) when it is read."""
    missing = [u for u in found.paths if not formats.is_remote(u) and not formats.local_shard(u, "").is_file()]
    if missing:
        raise not_found(found.kind, missing)


def _suffix(*suffixes: str) -> Callable[[str], bool]:
    return lambda spec: spec.lower().endswith(suffixes)


KINDS: tuple[Kind, ...] = (
    Kind(SYNTHETIC, "the synthetic set", "synthetic set", lambda s: s == SYNTHETIC or s.startswith(SYNTHETIC + ":"),
         _synthetic),
    Kind(FOLDER, "an image folder", "folder", os.path.isdir),
    Kind(GLOB, "a glob pattern", "glob", _is_glob, _glob),
    Kind(SHARDS, ".tar shards", "shard", _is_shards, _shards, _shards_there),
    Kind(MANIFEST, "a .csv/.tsv/.jsonl manifest", "manifest", formats.is_manifest, check=file_there),
    Kind(JSON, "a .json file", ".json file", _suffix(".json"), check=file_there),
    Kind(IMAGE, "an image file", "image", _suffix(*formats.IMAGE_EXTENSIONS), check=file_there),
    Kind(CAPTIONS, "a caption text file", "caption file", lambda s: True, check=file_there),
)


def kind(name: str) -> Kind:
    return next(k for k in KINDS if k.name == name)


def classify(spec: str | Path) -> DataSpec:
    """The kind of ``spec`` (the first row of ``KINDS`` that matches) with its paths. Raises only for a malformed
    ``synthetic:...``; nothing else is checked (see ``resolve``)."""
    spec = str(spec)
    row = next(k for k in KINDS if k.matches(spec))
    return row.describe(spec, row.name)


def resolve(spec: str | Path, role: str, accepts: Sequence[str]) -> DataSpec:
    """``classify(spec)``, refused unless its kind is one of ``accepts``, and checked to be there (files and local
    shards exist). ``role`` names the spec in messages ("data.train entry")."""
    found = classify(spec)
    if found.kind not in accepts:
        raise refusal(found, role, accepts)
    check = kind(found.kind).check
    if check is not None:
        check(found)
    return found


def refusal(found: DataSpec, role: str, accepts: Sequence[str]) -> DataError:
    """The one message for a spec of a kind the consumer does not read: what was given, what the consumer takes,
    and what the spec is (or that nothing is there)."""
    missing = found.paths == (found.spec,) and not os.path.exists(found.spec) and not formats.is_remote(found.spec)
    what = "not found" if missing else f"it is {kind(found.kind).noun}"
    return DataError(f"{role} {found.spec!r} is not {either(kind(k).noun for k in accepts)} ({what})")


def not_found(name: str, paths: Sequence[str | Path]) -> DataError:
    """The one message for missing files of a kind ("shard not found: a, b"), naming the first few."""
    more = f" (+{len(paths) - _SHOWN} more)" if len(paths) > _SHOWN else ""
    return DataError(f"{kind(name).short} not found: {', '.join(map(str, paths[:_SHOWN]))}{more}")


def either(nouns) -> str:
    """``a, b or c``."""
    nouns = list(nouns)
    return nouns[0] if len(nouns) == 1 else f"{', '.join(nouns[:-1])} or {nouns[-1]}"
