"""The bodies of POST requests, checked by pydantic: wrong types are refused, not coerced.

Fields OpenAI defines that charlstm does not use (user, logprobs, echo, ...) are accepted
and ignored, so that existing clients work unchanged.
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
