"""Locate the offline resources the label extractors read; nothing is ever downloaded.

Each resource has an environment override so a user can point at a copy outside the Debian locations. A missing
resource raises `ResourceMissingError` whose one-line message names the command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from catlip.errors import ResourceMissingError

# name -> (env var, default candidates, file that must exist inside a dir (None: the path is the file), install)
_RESOURCES = {
    "wordnet": (
        "CATLIP_WORDNET_DIR",
        ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/wordnet/dict"),
        "data.noun",
        "apt-get install -y wordnet-base wordnet-sense-index",
    ),
    "tagger": (
        "CATLIP_TAGGER_DIR",
        ("/usr/share/perl5/Lingua/EN/Tagger",),
        "words.yml",
        "apt-get install -y liblingua-en-tagger-perl",
    ),
    "bpe": ("CATLIP_BPE_PATH", (), None, "pip install open-clip-torch"),
}

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"


def _bpe_candidates() -> list[str]:
    # open_clip imports torch at import time, so find its package folder without importing it.
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    return [str(Path(loc) / BPE_FILE) for loc in spec.submodule_search_locations]


def _ok(path: Path, member: str | None) -> bool:
    if member is None:
        return path.is_file()
    return (path / member).is_file()


def locate(name: str) -> Path:
    """Path of resource `name` ("wordnet" dir, "tagger" dir, "bpe" file); `ResourceMissingError` if absent."""
    if name not in _RESOURCES:
        raise ValueError(f"unknown resource {name!r}; expected one of {sorted(_RESOURCES)}")
    env, defaults, member, install = _RESOURCES[name]
    override = os.environ.get(env)
    if override:
        path = Path(override).expanduser()
        if _ok(path, member):
            return path
        what = f"{member} in {path}" if member else str(path)
        raise ResourceMissingError(f"{name}: {env} points at {path} but {what} does not exist; unset it or run: {install}")
    candidates = list(defaults) + (_bpe_candidates() if name == "bpe" else [])
    for cand in candidates:
        if _ok(Path(cand), member):
            return Path(cand)
    raise ResourceMissingError(f"{name} data not found (looked in {', '.join(candidates) or 'the open_clip package'}); "
                               f"install it with: {install} (or set {env})")
