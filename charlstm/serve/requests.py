"""The bodies of POST requests, checked by pydantic: wrong types are refused, not coerced.

Fields OpenAI defines that charlstm does not use (user, suffix, logit_bias, ...) are
accepted and ignored, so that existing clients work unchanged. The ranges of the loop
penalties are checked by the library (generate.check_options), in one place.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..infer import generate, novelty, penalties
from ..ranges import SAMPLES, SEED, SERVED_TOKENS, TEMPERATURE, TOP_P, Range

# Every number a request gives has both bounds, and floats must be finite (JSON bodies
# may say NaN or Infinity: Python's parser reads them), so nothing out of range reaches
# the model; the server's own limits (--max-tokens, --max-n) are checked after these.
# An error names the field and its range (errors.py reads this table).
MAX_LOGPROBS = 5  # alternatives per character at most, as OpenAI
LOGPROBS = Range(0, MAX_LOGPROBS)
RANGES = {"max_tokens": SERVED_TOKENS, "temperature": TEMPERATURE, "top_p": TOP_P,
          "n": SAMPLES, "seed": SEED}
# The ranges of the fields the library checks (generate.check_options and what it calls),
# named here only so that a value of the wrong type still gets its range in the message
CHECKED_BY_THE_LIBRARY = {
    "repetition_penalty": penalties.REPETITION, "frequency_penalty": penalties.FREQUENCY,
    "presence_penalty": penalties.FREQUENCY, "penalty_window": penalties.WINDOW,
    "no_repeat": penalties.WINDOW_OR_OFF, "max_copy": generate.MAX_COPY,
    "novelty_min": novelty.MIN_LENGTH, "logprobs": LOGPROBS, "best_of": SAMPLES}


def _ranged(default, name: str, finite: bool = False):
    """A field whose value must lie in RANGES[name]."""
    allowed: Range = RANGES[name]
    bounds = {"gt" if allowed.low_open else "ge": allowed.low,
              "lt" if allowed.high_open else "le": allowed.high}
    return Field(default, **bounds, **({"allow_inf_nan": False} if finite else {}))


class CompletionRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    prompt: Union[str, list[str]] = ""
    max_tokens: Optional[int] = _ranged(None, "max_tokens")  # per sample; None: the default
    temperature: float = _ranged(1.0, "temperature", finite=True)
    top_p: float = _ranged(1.0, "top_p", finite=True)
    n: int = _ranged(1, "n")
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = _ranged(None, "seed")
    stream: bool = False
    # OpenAI's: per-character log-probabilities (this many alternatives), the prompt in
    # the text, and candidates ranked by log-likelihood per character
    logprobs: Optional[int] = None
    echo: bool = False
    best_of: Optional[int] = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    # charlstm's own: the other loop controls and copies of the training text
    repetition_penalty: float = 1.0
    penalty_window: Optional[int] = None
    no_repeat: int = 0
    max_copy: Optional[int] = None
    novelty: bool = False  # each choice gets a "novelty" report
    novelty_min: Optional[int] = None

    def controls(self) -> dict:
        """The generation's loop and copy controls, as LanguageModel.generate names them."""
        controls = dict(repetition_penalty=self.repetition_penalty,
                        frequency_penalty=self.frequency_penalty,
                        presence_penalty=self.presence_penalty, no_repeat=self.no_repeat,
                        max_copy=self.max_copy)
        if self.penalty_window is not None:
            controls["penalty_window"] = self.penalty_window
        return controls

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]  # OpenAI ignores empty stop strings


class ScoreRequest(BaseModel):
    """One text, or many lines each scored on its own; per_char adds each character's bits
    (for one text only)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str
    text: Optional[str] = None
    lines: Optional[list[str]] = None
    per_char: bool = False
