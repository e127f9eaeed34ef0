"""The bodies of POST requests, checked by pydantic: wrong types are refused, not coerced.

Fields OpenAI defines that charlstm does not use (user, logprobs, echo, ...) are accepted
and ignored, so that existing clients work unchanged.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from ..ranges import SAMPLES, SEED, SERVED_TOKENS, TEMPERATURE, TOP_P, Range

# Every number a request gives has both bounds, and floats must be finite (JSON bodies
# may say NaN or Infinity: Python's parser reads them), so nothing out of range reaches
# the model; the server's own limits (--max-tokens, --max-n) are checked after these.
# An error names the field and its range (errors.py reads this table).
RANGES = {"max_tokens": SERVED_TOKENS, "temperature": TEMPERATURE, "top_p": TOP_P,
          "n": SAMPLES, "seed": SEED}


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
