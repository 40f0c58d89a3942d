"""Error hierarchy; each error class carries the exit code the CLI returns for it."""

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_FATAL = 2
EXIT_LOCKED = 3


class BatchemoError(Exception):
    """A job-level failure: the job could not be done (exit 2)."""

    exit_code = EXIT_FATAL


class ConfigError(BatchemoError):
    """Bad usage, a bad job file or option value."""


class DatasetError(BatchemoError):
    """A training or evaluation dataset that cannot be used as given."""


class ModelError(BatchemoError):
    """A model artifact that is missing, corrupt, or whose metadata does not match it."""


class OutputError(BatchemoError):
    """The output cannot be written (unwritable directory, disk full, model mismatch)."""


class LockedError(BatchemoError):
    """Another run holds the lock on this output."""

    exit_code = EXIT_LOCKED


class Interrupted(BatchemoError):
    """SIGTERM (or Ctrl-C) outside file processing: start-up or the final writes (exit 2)."""


class MediaError(Exception):
    """A per-file failure; it becomes an `error` row in the files table, the run goes on."""


class MediaOpenError(MediaError):
    """The file cannot be opened or is not decodable media."""


class DecodeError(MediaError):
    """The file opened but its content cannot be decoded."""
