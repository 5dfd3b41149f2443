"""One exception family, so the CLI can show a clear message instead of a traceback."""


class MetakitError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ConfigError(MetakitError, ValueError):
    """A configuration value, recipe or override is invalid."""


class DataError(MetakitError):
    """A dataset is missing, corrupt, or cannot serve the requested episodes."""


class ChecksumError(DataError):
    """A downloaded file does not match its published checksum."""


class ArchiveError(DataError):
    """An archive is truncated, malformed, has the wrong structure or unsafe entries."""


class TrainingError(MetakitError):
    """Training cannot go on (e.g. the loss became NaN)."""


class CheckpointError(MetakitError):
    """A checkpoint or run directory is missing or unreadable."""


class TruncatedArchiveError(ArchiveError):
    """The archive is cut short or is not an archive at all."""


class ArchiveStructureError(ArchiveError):
    """The archive opens but does not hold what the dataset should (counts, layout)."""


class UnsafeArchiveError(ArchiveError):
    """An entry's path would escape the folder it is extracted into."""
