"""Files that appear whole or not at all: every file a catlip command writes goes through here.

A temp file beside the target (same folder, so ``os.replace`` is atomic) becomes the target only once it is
complete; on any failure (a full disk, an interrupt) the temp is removed and the target is untouched. Imports
nothing heavy, so the torch-free stages (labels, config) use it too.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def staged(*targets: Path) -> Iterator[tuple[Path, ...]]:
    """Temp paths beside ``targets``, renamed onto them together when the block succeeds.

    On any failure every temp is removed, and so is a folder this call created, so a failed write leaves neither
    a partial file nor a temp behind.
    """
    targets = tuple(Path(t) for t in targets)
    created = _missing_parents(targets)
    tmps = tuple(t.with_name(f".{t.name}.{os.getpid()}.tmp") for t in targets)
    try:
        for folder in reversed(created):
            folder.mkdir(exist_ok=True)
        yield tmps
        for tmp, target in zip(tmps, targets):
            os.chmod(tmp, _file_mode())  # safetensors and mkstemp create files readable by their owner only
            os.replace(tmp, target)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        for folder in created:
            _remove_if_empty(folder)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """``path`` holds ``text`` (UTF-8) completely, or is left as it was; flushed to disk before the rename."""
    path = Path(path)
    with staged(path) as (tmp,):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def write_json(path: str | Path, data: Any, **dump: Any) -> Path:
    """:func:`write_text` of ``json.dumps(data, **dump)`` plus a final newline."""
    return write_text(path, json.dumps(data, **dump) + "\n")


def _missing_parents(targets: tuple[Path, ...]) -> list[Path]:
    """The folders above ``targets`` that do not exist yet, deepest first."""
    missing: list[Path] = []
    for target in targets:
        folder = target.parent
        while not folder.exists() and folder not in missing:
            missing.append(folder)
            folder = folder.parent
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (or already gone): it holds something that is not ours


@functools.cache
def _file_mode() -> int:
    """The mode ``open()`` gives a new file (0o666 less the umask, which can only be read by setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask
