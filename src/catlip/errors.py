"""User-facing errors: one family, all defined here.

Everything the user can fix (a bad recipe or override, a wrong command line, a missing resource, unreadable data, a
damaged checkpoint, a mismatched vocabulary, an unwritable run dir, a backbone timm cannot build) is raised as a
:class:`CatlipError` subclass from this module. ``catlip.cli.main`` prints any of them as one line,
``catlip <command>: error: <message>``, and exits with code 2. Anything else (a plain ``ValueError``/``KeyError``
from deep inside a library) is a bug and keeps its traceback.

This module imports nothing from ``catlip``, so every other module (and ``catlip.cli``) can import it without a
cycle. The classes are also re-exported where they used to live (``catlip.config.ConfigError``,
``catlip.cli.CliError``, ``catlip.train.checkpoint.RunDirError``, ``catlip.models.backbone.BackboneError``).
"""

from __future__ import annotations


class CatlipError(Exception):
    """Base class: something the user can fix (bad input, missing resource, mismatched files)."""


class ConfigError(CatlipError, ValueError):
    """A recipe or override that does not fit the schema (also a ``ValueError``, as it was before)."""


class CliError(CatlipError):
    """A command-line usage error: a flag value or combination of flags that cannot work."""


class ResourceMissingError(CatlipError):
    """An offline resource (WordNet, tagger tables, BPE vocabulary) is not installed; the message says how."""


class VocabularyError(CatlipError):
    """A vocabulary file is corrupt, of another format version, or does not match a checkpoint."""


class CheckpointError(CatlipError):
    """A checkpoint is missing, truncated, unsafe to load, or does not match the run."""


class DataError(CatlipError):
    """A data source cannot be read at all (individual bad samples are skipped and counted instead)."""


class RunDirError(CatlipError):
    """``train.output_dir`` cannot be created or written."""


class BackboneError(CatlipError):
    """A backbone name or keyword argument that timm cannot build."""


class ExportError(CatlipError):
    """A run that the requested export format cannot represent exactly (e.g. open_clip and a conv stem)."""


class TrainingDivergedError(CatlipError):
    """The loss, gradient norm or weights of a run stopped being finite (NaN/inf); no checkpoint of it is written."""


class RunInUseError(RunDirError):
    """Another live run holds ``train.output_dir`` (its lock file names the pid and host)."""


class OutputError(CatlipError):
    """A result file that cannot be written (a full disk, a read-only folder); nothing partial is left behind."""


def one_line(err: BaseException) -> str:
    """The error's message on one line: its lines joined with "; " (a YAML parser's message spans several)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__
