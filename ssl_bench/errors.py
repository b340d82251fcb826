"""User-facing errors.

Every problem caused by the user's input (a recipe key, a file, a registry name) raises
:class:`SSLBenchError` with a one-line message.  The CLI prints that line and exits non-zero,
without a traceback; any other exception is a bug and keeps its traceback.
"""

__all__ = ["SSLBenchError", "RunDirBusy"]


class SSLBenchError(Exception):
    """An error in the user's input, reported as one line without a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class RunDirBusy(SSLBenchError):
    """The run directory is held by another ssl-bench process (or was claimed by one first)."""
