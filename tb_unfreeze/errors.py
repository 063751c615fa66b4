"""The project's own exception types.

A `UserError` is something the person running tb_unfreeze can fix: its message is one sentence that names
the file, node or op and says what to do. The CLI turns it into exit code 2, the HTTP layer into a 4xx.
Anything else escaping the library is a bug (exit code 1, HTTP 500 is never sent: the plugin maps it to a
generic message).
"""

from __future__ import annotations


class UnfreezeError(Exception):
    """Base class of every error tb_unfreeze raises on purpose."""


class UserError(UnfreezeError):
    """Bad input or a bad request; the message says what to do."""

    http_code = 400


class NotFoundError(UserError):
    """A path, model or job that does not exist."""

    http_code = 404


class NotAGraphError(UserError):
    """The file exists but is not a GraphDef (garbage, truncated, or another TensorFlow proto)."""


class NotFrozenError(UserError):
    """The graph still holds variables: there is nothing to unfreeze."""


class SelectionError(UserError):
    """`--only`/`--exclude`/overrides name nodes that are not candidates."""


class OutputDirError(UserError):
    """The output directory is unsafe or already holds something."""


class UnsupportedOpsError(UserError):
    """The graph uses ops this TensorFlow does not register, so it cannot be executed here."""


class ConversionError(UserError):
    """TensorFlow refused the rewritten graph; the message names the node."""


class BusyError(UserError):
    """A conversion of the same model is already queued or running."""

    http_code = 409


def first_line(error: Exception) -> str:
    """An exception's first line (TensorFlow's messages run on for pages), at most 300 characters."""
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0][:300] if text.strip() else type(error).__name__
