"""Loop control: penalties on characters the sample used lately, and no repeated n-grams.

Each counts the characters of a window of the last `window` characters of the text (the
prime's last ones included, so a loop begun in the prime is one too). For a character
seen `count` times in the window, its logit `l` becomes, before the temperature:

    repetition (CTRL, Hugging Face)  l / r if l > 0 else l * r, when count > 0 (1: off)
    frequency (OpenAI)               l - frequency * count (0: off; -2 to 2)
    presence (OpenAI)                l - presence * (count > 0) (0: off; -2 to 2)

in that order. `no_repeat` n rules out every character that would complete an n-gram
(n characters) already in the window; when that rules out all of them, it rules out
none for that step.

The settings and their checks are here (no torch, so the command line's --help stays
fast); penalty_state.py applies them to a generation's logits.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..errors import UsageError
from ..ranges import Range

DEFAULT_WINDOW = 256  # characters the penalties look back over
# against loops (docs/novelty.md): no 24-character stretch twice within the window; the
# per-character penalties break loops too, but every character recurs in any window,
# so they change all text, not only loops
RECOMMENDED = {"no_repeat": 24}
REPETITION = Range(0.0, 10.0, low_open=True)  # 1 = off
FREQUENCY = Range(-2.0, 2.0)  # OpenAI's range, for frequency and presence; 0 = off
WINDOW = Range(1, 100_000)
WINDOW_OR_OFF = Range(0, 100_000)  # no_repeat: 0 = off


@dataclass(frozen=True)
class Penalties:
    """The loop-control settings of one generation; the defaults do nothing."""

    repetition: float = 1.0  # divides a seen character's positive logit (multiplies a negative)
    frequency: float = 0.0  # subtracted once per occurrence in the window
    presence: float = 0.0  # subtracted once if the character is in the window
    no_repeat: int = 0  # n: no n-gram twice in the window (0: off)
    window: int = DEFAULT_WINDOW  # the last characters counted

    def check(self) -> None:
        """Each penalty in its range, named as the Python API names it."""
        for name, value, allowed in (("repetition_penalty", self.repetition, REPETITION),
                                     ("frequency_penalty", self.frequency, FREQUENCY),
                                     ("presence_penalty", self.presence, FREQUENCY),
                                     ("penalty_window", self.window, WINDOW),
                                     ("no_repeat", self.no_repeat, WINDOW_OR_OFF)):
            if value not in allowed:
                raise UsageError.naming(allowed.refusal("{%s}" % name, value))
        if self.no_repeat > self.window:
            raise UsageError.naming(
                f"{{no_repeat}} {self.no_repeat} is longer than {{penalty_window}} "
                f"{self.window}: no n-gram that long fits in the window")

    @property
    def scoring(self) -> bool:
        """Whether any penalty changes the logits (no_repeat rules characters out)."""
        return self.repetition != 1 or self.frequency != 0 or self.presence != 0

    @property
    def active(self) -> bool:
        return self.scoring or self.no_repeat > 0


class NgramWindow:
    """The n-grams of one sample's last `window` characters, by their first n - 1
    characters, and so what may not come next: constant work per character."""

    def __init__(self, n: int, window: int):
        self.n, self.window = n, window
        self.recent: list[int] = []  # the characters; the window starts at `start`
        self.start = 0
        self.following: dict[tuple, Counter] = {}  # n-1 characters -> the next ones

    def push(self, i: int) -> None:
        self.recent.append(i)
        n = self.n
        if len(self.recent) - self.start >= n:
            gram = tuple(self.recent[-n:])
            self.following.setdefault(gram[:-1], Counter())[gram[-1]] += 1
        if len(self.recent) - self.start > self.window:  # the oldest n-gram leaves
            oldest = tuple(self.recent[self.start:self.start + n])
            self.start += 1
            nexts = self.following[oldest[:-1]]
            nexts[oldest[-1]] -= 1
            if not nexts[oldest[-1]]:
                del nexts[oldest[-1]]
                if not nexts:
                    del self.following[oldest[:-1]]
            if self.start > 4 * self.window:
                del self.recent[:self.start]
                self.start = 0

    def banned(self) -> set[int]:
        """The ids that would complete an n-gram already in the window."""
        if len(self.recent) - self.start < self.n - 1:
            return set()
        context = tuple(self.recent[len(self.recent) - (self.n - 1):])
        return set(self.following.get(context, ()))
