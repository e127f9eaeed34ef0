"""The ranges numbers given by a user must fall in, and how a range is written in messages.

Every integer and float a user gives (a setting, a flag, a request field) has a `Range`,
bounded on both sides: a value outside it, NaN or an infinity is refused with a message
that names the range, before anything is computed with it. The bounds are generous
(what a machine could conceivably run), not advice; they keep 2**80 from reaching torch.

Plain Python, no torch: settings.py and the command line read these cheaply.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

SEED_LIMIT = 2**63  # seeds are in [0, 2**63): what torch.manual_seed takes on every device
MAX_COUNT = 10**12  # steps, characters to generate, ...: far beyond any run, still exact
MAX_SECONDS = 366 * 24 * 3600.0  # durations: a year


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high`, each end included unless marked open."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return False  # NaN compares false anyway; an infinity is never meant
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        return (f"{'(' if self.low_open else '['}{_number(self.low)}, "
                f"{_number(self.high)}{')' if self.high_open else ']'}")

    def refusal(self, name: str, value) -> str:
        """'NAME must be in [low, high], not VALUE'."""
        return f"{name} must be in {self}, not {value!r}"


def _number(bound: float) -> str:
    if bound == SEED_LIMIT:
        return "2**63"
    if isinstance(bound, int) or float(bound).is_integer():
        return f"{int(bound):,}"
    return f"{bound:g}"


# Shared by more than one command
SEED = Range(0, SEED_LIMIT, high_open=True)
FRACTION = Range(0.0, 1.0, high_open=True)  # dropouts, the validation share, the betas
TEMPERATURE = Range(0.0, 100.0)  # 0 = greedy; far above 1 every character is as likely
TOP_P = Range(0.0, 1.0, low_open=True)
TOP_K = Range(1, 0x110000)  # beyond the vocabulary it changes nothing
SAMPLES = Range(1, 100_000)  # samples generated together as one batch
PORT = Range(1, 65535)
SERVED_TOKENS = Range(1, 10_000_000)  # characters per sample a server may allow
