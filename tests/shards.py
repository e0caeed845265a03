"""Test helper: write a small webdataset-style tar shard from (member name, bytes) pairs."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_tar(path: Path, members) -> Path:
    """A plain tar at `path` with the given members in order; returns `path`."""
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
