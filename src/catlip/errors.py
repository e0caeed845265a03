"""User-facing errors. The CLI prints these as one line (no traceback) and exits with code 2."""


class CatlipError(Exception):
    """Base class: something the user can fix (bad input, missing resource, mismatched files)."""


class ResourceMissingError(CatlipError):
    """An offline resource (WordNet, tagger tables, BPE vocabulary) is not installed; the message says how."""


class VocabularyError(CatlipError):
    """A vocabulary file is corrupt, of another format version, or does not match a checkpoint."""


class CheckpointError(CatlipError):
    """A checkpoint is missing, truncated, unsafe to load, or does not match the run."""


class DataError(CatlipError):
    """A data source cannot be read at all (individual bad samples are skipped and counted instead)."""
