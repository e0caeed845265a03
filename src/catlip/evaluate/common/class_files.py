"""Class lists: the one reader of class files, for ``--classes`` and ``--classnames`` alike.

Formats: plain text (one name per line), TSV (``index<TAB>name``, ``index<TAB>wnid<TAB>name``, ``wnid<TAB>name``;
a first line ``index wnid name`` is a header), a JSON list of names, a JSON object ``{index: name}``, or a JSON
object holding such a list under ``"detection"`` (coco128's ``classes.json``, whose shard labels are detection
indices). Text must be UTF-8 (a BOM is fine). Blank lines and ``#`` comments are skipped.

Segmentation lists map mask ids to names instead (:func:`read_mask_ids`): a JSON object ``{id: name}`` (or one under
``"segmentation"``), ``id<TAB>name`` lines, ADE20k's ``objectInfo150.csv`` (``Idx``, ``Name``), or plain names (a
JSON list or one per line) numbered from 1; id 0 is "unlabeled", never a class.

Every failure is a one-line :class:`DataError` naming the file: a name that repeats (its classes could never be
told apart, unless both lines carry different WordNet ids), indices that are not exactly 0..N-1, an empty list.

No torch here: ``catlip --help`` imports the template module, which reads class files through this one.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from catlip.errors import DataError

WNID = re.compile(r"^n\d{8}$")
_HEADER = {"index", "wnid", "name"}


@dataclass
class ClassList:
    """Target classes in index order, with the WordNet id of each where the list provides one."""

    names: list[str]
    wnids: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.wnids:
            self.wnids = [None] * len(self.names)
        if len(self.wnids) != len(self.names):
            raise DataError("class list: names and wnids differ in length")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, label: str) -> int | None:
        """Index of a class given by name, wnid or decimal index; None when unknown."""
        label = label.strip()
        if label.isdigit():
            i = int(label)
            return i if i < len(self.names) else None
        if not hasattr(self, "_lookup"):
            lookup: dict[str, int] = {}
            for i, (name, wnid) in enumerate(zip(self.names, self.wnids)):
                lookup.setdefault(_norm(name), i)
                if wnid:
                    lookup.setdefault(wnid, i)
            self._lookup = lookup
        return self._lookup.get(_norm(label), self._lookup.get(label))


def _norm(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").split())


def clean_name(name: str) -> str:
    """Folder-style names read as words (``sea_lion`` → ``sea lion``); accents and other non-ASCII stay, the CLIP
    tokenizer encodes them as bytes."""
    return " ".join(name.replace("_", " ").split())


class _Entry(NamedTuple):
    where: str  # "line 3" / "entry 3": where a message points
    index: int | None
    name: str
    wnid: str | None


BESIDE_SHARDS = ("classes.txt", "classes.json")  # looked for next to shards, which carry class indices only


def class_file_beside(folder: Path) -> Path | None:
    """The first of :data:`BESIDE_SHARDS` in ``folder``, if any."""
    return next((folder / name for name in BESIDE_SHARDS if (folder / name).is_file()), None)


def read_class_file(path: str | Path) -> ClassList:
    """The classes a file lists, in index order (see the module docstring for the formats)."""
    path = Path(path)
    text = _read_text(path)
    entries = _json_entries(path, text) if path.suffix.lower() == ".json" else _line_entries(path, text)
    if not entries:
        raise DataError(f"class list {path} is empty")
    _check_unique(path, entries)
    ordered = _in_index_order(path, entries)
    return ClassList([e.name for e in ordered], [e.wnid for e in ordered])


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read class list {path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"class list {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                        f"{err.start}); save it as UTF-8") from None


def _line_entries(path: Path, text: str) -> list[_Entry]:
    out: list[_Entry] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = [c.strip() for c in line.split("\t")]
        if not out and len(cols) > 1 and {c.lower() for c in cols} & _HEADER:
            continue
        if not cols[-1]:
            raise DataError(f"{path}:{n}: empty class name")
        index = int(cols[0]) if len(cols) > 1 and cols[0].isdigit() else None
        wnid = next((c for c in cols if WNID.match(c)), None)
        out.append(_Entry(f"line {n}", index, cols[-1], wnid))
    return out


def _json_entries(path: Path, text: str) -> list[_Entry]:
    try:
        obj = json.loads(text) if text.strip() else []
    except ValueError as err:
        raise DataError(f"class list {path}: not valid JSON ({err})") from None
    if isinstance(obj, dict) and "detection" in obj:
        obj = obj["detection"]
    if isinstance(obj, list):
        items = [(str(i + 1), None, v) for i, v in enumerate(obj)]
    elif isinstance(obj, dict) and all(str(k).strip().isdigit() for k in obj):
        items = [(str(k), int(k), v) for k, v in obj.items()]
    else:
        raise DataError(f"class list {path}: expected a JSON list of names, an object {{index: name}} or one "
                        "with a \"detection\" list")
    out = []
    for where, index, name in items:
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{path}: entry {where}: a class name must be a non-empty string, not {name!r}")
        name = name.strip()
        out.append(_Entry(f"entry {where}", index, name, name if WNID.match(name) else None))
    return out


def _check_unique(path: Path, entries: list[_Entry]) -> None:
    seen: dict[str, _Entry] = {}
    for e in entries:
        key = clean_name(e.name).casefold()
        first = seen.get(key)
        # ImageNet names two different synsets "crane": their wnids still tell the classes apart
        if first is not None and not (first.wnid and e.wnid and first.wnid != e.wnid):
            raise DataError(f"{_at(path, e)}: class name {e.name!r} repeats {first.where}")
        seen.setdefault(key, e)


def _at(path: Path, e: _Entry) -> str:
    return f"{path}:{e.where[5:]}" if e.where.startswith("line ") else f"{path}: {e.where}"


def _in_index_order(path: Path, entries: list[_Entry]) -> list[_Entry]:
    indexed = [e for e in entries if e.index is not None]
    if not indexed:
        return entries
    if len(indexed) != len(entries):
        plain = next(e for e in entries if e.index is None)
        raise DataError(f"{_at(path, plain)}: a plain name among index<TAB>name lines")
    missing = sorted(set(range(len(entries))) - {e.index for e in entries})
    if missing:
        raise DataError(f"{path}: indices must be 0..{len(entries) - 1}, each once; {missing[0]} is missing")
    return sorted(entries, key=lambda e: e.index)


def read_mask_ids(path: str | Path, *, max_classes: int) -> dict[int, str]:
    """Segmentation classes as mask id -> name, in id order, id 0 left out (formats in the module docstring)."""
    path = Path(path)
    if path.suffix == ".json":
        ids = _json_mask_ids(path)
    elif path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(_read_text(path))))
        if not rows or "Idx" not in rows[0] or "Name" not in rows[0]:
            raise DataError(f"class list {path}: a .csv needs the columns Idx and Name (ADE20k objectInfo150.csv)")
        ids = {int(r["Idx"]): r["Name"].split(";")[0].strip() for r in rows}
    else:
        lines = [ln.strip() for ln in _read_text(path).splitlines() if ln.strip()]
        pairs = [ln.split("\t", 1) for ln in lines]
        if all(len(p) == 2 and p[0].strip().isdigit() for p in pairs):
            ids = {int(p[0]): p[1].strip() for p in pairs}
        else:
            ids = {i + 1: name for i, name in enumerate(lines)}
    ids.pop(0, None)  # 0 = unlabeled, never a class
    if not ids:
        raise DataError(f"class list {path} names no classes")
    if len(ids) > max_classes or max(ids) > 65535:  # masks are read as 16-bit ids
        raise DataError(f"class list {path}: at most {max_classes} classes with mask ids below 65536")
    return dict(sorted(ids.items()))


def _json_mask_ids(path: Path) -> dict[int, str]:
    try:
        obj = json.loads(_read_text(path))
    except ValueError as err:
        raise DataError(f"class list {path} is not valid JSON ({err})") from None
    obj = obj.get("segmentation", obj) if isinstance(obj, dict) else obj
    if isinstance(obj, list):
        return {i + 1: str(v) for i, v in enumerate(obj)}
    if not isinstance(obj, dict):
        return {}
    try:
        return {int(k): str(v) for k, v in obj.items()}
    except ValueError:
        raise DataError(f"class list {path}: keys must be mask ids (integers)") from None
