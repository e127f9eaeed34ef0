"""Errors the library raises for expected failures.

Each carries the exit code the command line should end with: 2 for a usage error (the
request itself is wrong), 1 for a runtime failure (the request is fine but could not be
done). The command line prints the message as one line; nothing else needs a traceback.
"""

from __future__ import annotations


class CharlstmError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code = 1


class UsageError(CharlstmError, ValueError):
    """The request is invalid: a bad flag value, an unknown corpus name, a missing file."""

    exit_code = 2


class CorpusError(CharlstmError):
    """A corpus could not be read, decoded or downloaded."""


class CheckpointError(CharlstmError):
    """A checkpoint could not be read, is not ours, or could not be written."""


class TrainingDiverged(CharlstmError):
    """The loss kept turning non-finite, even after rolling back with lower learning rates."""


def require(condition: bool, message: str) -> None:
    """Raise a UsageError with `message` unless `condition` holds."""
    if not condition:
        raise UsageError(message)
