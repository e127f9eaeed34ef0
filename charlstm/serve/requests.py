"""The bodies of POST requests, checked by pydantic: wrong types are refused, not coerced.

Fields OpenAI defines that charlstm does not use (user, suffix, logit_bias, ...) are
accepted and ignored, so that existing clients work unchanged. The ranges of the loop
penalties are checked by the library (generate.check_options), in one place.
"""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class CompletionRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str
    prompt: Union[str, list[str]] = ""
    max_tokens: Optional[int] = Field(None, ge=1)  # characters per sample; None: the default
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
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
