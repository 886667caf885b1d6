"""The one error type of the data sources, and the one-line form of a caught exception for its messages."""

from __future__ import annotations


class DataError(RuntimeError):
    """A data problem the user can fix (missing, truncated or corrupt files); the message says how.

    Example:
        >>> raise DataError("image a.png does not exist; check the path")
        Traceback (most recent call last):
        cinn.data.errors.DataError: image a.png does not exist; check the path
    """


def one_line_reason(error: Exception) -> str:
    """An exception as one line ``"Type: message"``, for embedding in a one-sentence :class:`DataError`.

    Example:
        >>> one_line_reason(OSError("network\\n  is unreachable"))
        'OSError: network is unreachable'
    """
    return " ".join(f"{type(error).__name__}: {error}".split())
