"""Properties of a text computed from the text alone, one value per character, which
`inspect --find` looks for among a model's units (as Karpathy, Johnson and Fei-Fei
found cells that track quotes, line length and indentation).

Each value describes the text up to and including its character, as a left-to-right
reader knows it (a model cannot see ahead either), and the text is read in pieces with
what is needed carried across, so a property of a long text costs bounded memory.

    line_position     characters since the start of the line (0 at its first character)
    indentation       spaces and tabs at the start of the current line, so far
    in_double_quotes  1 between a '"' and the next one (or “ and ”), else 0; the quotes
                      themselves count as inside
    in_single_quotes  1 between a "'" and the next one on the same line, else 0 (an
                      apostrophe in prose opens one too)
    bracket_depth     ( [ { opened and not yet closed (never below 0)
    in_comment        1 from a '#' to the end of its line, else 0 (Python, shell)
    in_word           1 on a letter, digit or underscore, else 0
    since_space       characters since the last space, tab or newline (0 on one)
    is_upper          1 on an upper-case letter, else 0
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

PROPERTIES = {
    "line_position": "characters since the start of the line",
    "indentation": "spaces and tabs at the start of the line so far",
    "in_double_quotes": "inside a \"double-quoted\" string or quotation",
    "in_single_quotes": "inside a 'single-quoted' string on one line",
    "bracket_depth": "( [ { opened and not yet closed",
    "in_comment": "from a # to the end of its line",
    "in_word": "on a letter, digit or underscore",
    "since_space": "characters since the last space, tab or newline",
    "is_upper": "on an upper-case letter",
}
NAMES = tuple(PROPERTIES)
OPENING, CLOSING = "([{", ")]}"


class TextProperties:
    """`values(text)` for consecutive pieces of one text: a (T, P) float64 array, one
    column per property in NAMES order, carrying what it knows from piece to piece."""

    def __init__(self):
        self.column = 0  # line_position of the next character
        self.indent = 0
        self.leading = True  # still in the current line's leading whitespace
        self.double = False
        self.single = False
        self.depth = 0
        self.comment = False
        self.since_space = 0

    def values(self, text: str) -> np.ndarray:
        rows = [self._step(char) for char in text]
        return np.array(rows, dtype=np.float64).reshape(len(text), len(NAMES))

    def _step(self, char: str) -> tuple:
        """The properties at `char`, given everything before it; then the state moves on."""
        if self.leading and char in " \t":
            self.indent += 1
        elif char != "\n":
            self.leading = False
        if char == '"':
            self.double = not self.double
        elif char == "“":
            self.double = True
        if char == "'" and not self.double:
            self.single = not self.single
        if char in OPENING:
            self.depth += 1
        elif char in CLOSING:
            self.depth = max(0, self.depth - 1)
        if char == "#" and not (self.double or self.single):
            self.comment = True
        self.since_space = 0 if char.isspace() else self.since_space + 1
        in_double = self.double or char in '"”'
        in_single = self.single or char == "'"
        row = (self.column, self.indent, in_double, in_single, self.depth, self.comment,
               char.isalnum() or char == "_", self.since_space, char.isupper())
        if char == "”":
            self.double = False
        if char == "\n":
            self.column, self.indent, self.leading = 0, 0, True
            self.single = self.comment = False
        else:
            self.column += 1
        return row


def text_properties(text: str | Iterable[str]) -> np.ndarray:
    """The (T, P) properties of a whole text (or of its pieces, concatenated)."""
    properties = TextProperties()
    pieces = [text] if isinstance(text, str) else text
    parts = [properties.values(piece) for piece in pieces]
    return np.concatenate(parts) if parts else np.zeros((0, len(NAMES)))
