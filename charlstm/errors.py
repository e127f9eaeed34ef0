"""Errors the library raises for expected failures.

Each carries the exit code the command line should end with: 2 for a usage error (the
request itself is wrong), 1 for a runtime failure (the request is fine but could not be
done). The command line prints the message as one line; nothing else needs a traceback.
"""

from __future__ import annotations

import re
from typing import Callable


def spell(template: str, name_of: Callable[[str], str]) -> str:
    """`template` with each {setting} written as `name_of(setting)` says."""
    return re.sub(r"\{(\w+)\}", lambda match: name_of(match.group(1)), template)


class CharlstmError(Exception):
    """An expected failure with a message meant for the user.

    A message may name settings, made with `naming("... {batch_size} ...")`: str() shows
    the setting's own name (batch_size, as the Python API takes it), and `spelled` lets a
    front end show it its own way (the command line's --batch-size)."""

    exit_code = 1
    template: str | None = None  # the message with settings as {name}, if it names any

    @classmethod
    def naming(cls, template: str) -> "CharlstmError":
        error = cls(spell(template, lambda name: name))
        error.template = template
        return error

    def spelled(self, name_of: Callable[[str], str]) -> str:
        return spell(self.template, name_of) if self.template else str(self)

    @property
    def settings(self) -> list[str]:
        """The settings the message names, in order (none if it names none)."""
        return re.findall(r"\{(\w+)\}", self.template or "")


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
