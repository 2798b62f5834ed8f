"""Errors caused by the user's input, reported as one clear line and a non-zero exit."""


class UserError(Exception):
    """A mistake in the user's data, config or command line; its message says how to fix it."""


class DataError(UserError):
    """A missing, corrupt or malformed data file."""


class ConfigError(UserError):
    """A config value that cannot work."""


class TrainingInterrupted(UserError):
    """Training stopped on SIGTERM or Ctrl-C, its state saved: the same command resumes it."""


class TrainingDiverged(UserError):
    """Training stopped because its loss, parameters or validation scores were no longer finite."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether an error says the host or a device ran out of memory (XLA raises RESOURCE_EXHAUSTED)."""
    return isinstance(error, MemoryError) or any(
        word in str(error) for word in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory"))
