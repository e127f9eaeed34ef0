"""How `charlstm inspect` draws what it found: text coloured by surprise or by a unit's
value, guesses, the --find ranking and the gate saturation chart.

On a terminal with colour, each character's background is its colour: white (no
surprise) to red (8 bits or more) for bits; blue (negative) through white to red
(positive) for a unit, as in Karpathy, Johnson and Fei-Fei's pictures (a cell state is
shown as tanh(c), as theirs are). Where there is no colour (NO_COLOR, or stdout is not a
terminal) each line of text is followed by a row of marks, one under each character:
bits as ▁▂▃▄▅▆▇█ (blank below half a bit), a unit as ▼▽ (negative), blank, △▲ (positive).
"""

from __future__ import annotations

import math

import numpy as np
from rich.console import Console
from rich.text import Text

WHITE = (255, 255, 255)
RED, BLUE = (235, 60, 50), (60, 100, 235)
MAX_BITS = 8.0  # bits shown in full red
BIT_MARKS = " ▁▂▃▄▅▆▇█"
UNIT_MARKS = "▼▽ △▲"
MAX_LINE = 2000  # characters of a line without a newline drawn before it is cut
VISIBLE = {"\n": "↵", "\t": "⇥", " ": "␣", "\r": "␍"}


def visible(char: str) -> str:
    """A character as it can be seen on its own (in guesses and tables)."""
    if char in VISIBLE:
        return VISIBLE[char]
    return char if char.isprintable() else f"\\x{ord(char):02x}"


def _mix(low: tuple, high: tuple, amount: float) -> str:
    amount = min(max(amount, 0.0), 1.0)
    r, g, b = (round(a + (b - a) * amount) for a, b in zip(low, high))
    return f"#{r:02x}{g:02x}{b:02x}"


def bits_colour(bits: float) -> str:
    return _mix(WHITE, RED, math.sqrt(min(bits, MAX_BITS) / MAX_BITS))


def unit_colour(value: float) -> str:
    return _mix(WHITE, RED, value) if value >= 0 else _mix(WHITE, BLUE, -value)


def bits_mark(bits: float) -> str:
    return BIT_MARKS[min(len(BIT_MARKS) - 1, int(round(bits)))]


def unit_mark(value: float) -> str:
    return UNIT_MARKS[min(4, int((value + 1) / 2 * 5))]


class Row:
    """What one row colours a text by: bits, or a unit's values in [-1, 1]."""

    def __init__(self, tag: str, of_bits: bool):
        self.tag, self.of_bits = tag, of_bits

    def colour(self, value: float) -> str:
        return bits_colour(value) if self.of_bits else unit_colour(value)

    def mark(self, value: float) -> str:
        return bits_mark(value) if self.of_bits else unit_mark(value)


class TextPainter:
    """Draws text coloured by one or more rows of values, a line at a time as the text
    arrives: `add(text, values)` with values (rows, T), then `finish()`. Returns the
    output as strings (ANSI codes only when `coloured`)."""

    def __init__(self, rows: list[Row], coloured: bool, console: Console):
        self.rows, self.coloured, self.console = rows, coloured, console
        self.width = max((len(r.tag) for r in rows), default=0)
        self.line, self.values = "", [[] for _ in rows]

    def add(self, text: str, values: list[np.ndarray]) -> str:
        out = []
        start = 0
        for end in range(len(text)):
            if text[end] == "\n" or len(self.line) + end - start + 1 >= MAX_LINE:
                self._take(text[start:end + 1], values, start, end + 1)
                out.append(self._draw_line())
                start = end + 1
        self._take(text[start:], values, start, len(text))
        return "".join(out)

    def finish(self) -> str:
        return self._draw_line() if self.line else ""

    def _take(self, text: str, values: list[np.ndarray], start: int, end: int) -> None:
        self.line += text
        for kept, row in zip(self.values, values):
            kept.extend(row[start:end].tolist())

    def _draw_line(self) -> str:
        line, values = self.line, self.values
        self.line, self.values = "", [[] for _ in self.rows]
        ending = "\n"  # a line cut at MAX_LINE ends here too
        body = line[:-1] if line.endswith("\n") else line
        several = len(self.rows) > 1
        if self.coloured:
            drawn = []
            for row, row_values in zip(self.rows, values):
                text = Text(f"{row.tag:>{self.width}} │ " if several else "")
                for char, value in zip(body, row_values):
                    text.append(char, style=f"#000000 on {row.colour(value)}")
                drawn.append(self._ansi(text) + ending)
            return "".join(drawn)
        pad = f"{'':>{self.width}} │ " if several else ""
        drawn = [pad + body + ending]
        for row, row_values in zip(self.rows, values):
            marks = "".join("\t" if char == "\t" else row.mark(value)
                            for char, value in zip(body, row_values)).rstrip()
            drawn.append((f"{row.tag:>{self.width}} │ " if several else "") + marks + "\n")
        return "".join(drawn)

    def _ansi(self, text: Text) -> str:
        with self.console.capture() as capture:
            self.console.print(text, end="", soft_wrap=True)
        return capture.get()


def paint(text: str, values: np.ndarray, row: Row, coloured: bool, console: Console) -> str:
    """A whole (short) text coloured by one row of values."""
    painter = TextPainter([row], coloured, console)
    return painter.add(text, [values]) + painter.finish()


def guesses_line(char: str, bits: float, guesses: list[tuple[str, float]], coloured: bool,
                 console: Console) -> str:
    """One row of the --top listing: the character, its bits and the guesses after it."""
    shown = f"{visible(char):<3}"
    if coloured:
        text = Text(shown, style=f"#000000 on {bits_colour(bits)}")
        with console.capture() as capture:
            console.print(text, end="", soft_wrap=True)
        shown = capture.get()
    picks = "  ".join(f"{visible(c)} {p:5.1%}" for c, p in guesses)
    return f"{shown} {bits:6.2f} bits   next: {picks}\n"


def saturation_chart(rows: list[dict], width: int = 30) -> str:
    """The gate saturation table as text: per layer and gate, the mean fraction of steps
    left- (<0.1) and right-saturated (>0.9) as bars, and how many units are mostly so."""
    lines = [f"{'layer':>5} {'gate':<8} {'left-saturated (< 0.1)':<{width + 7}} "
             f"{'right-saturated (> 0.9)':<{width + 7}} units mostly left / right"]
    for row in rows:
        left, right = row["left"], row["right"]
        lines.append(
            f"{row['layer']:>5} {row['gate']:<8} "
            f"{_bar(left, width)} {left:6.1%} {_bar(right, width)} {right:6.1%} "
            f"{row['mostly_left']:>5} / {row['mostly_right']} of {row['units']}")
    return "\n".join(lines) + "\n"


def _bar(fraction: float, width: int) -> str:
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")).ljust(width)
