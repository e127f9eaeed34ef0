"""One completion request's generation, advanced a slice at a time, and its JSON shapes.

All the request's samples (n for each prompt) are generated together as one batch by
`LanguageModel.generate`. Stop strings follow OpenAI: a choice ends where one first
appears, and the stop string is not part of its text; while the end of a choice's text
could still be the start of a stop string, that part is held back from the stream.
`advance` is synchronous (it runs in a worker thread) and returns what each choice may
show now; `close` ends the generation early (a client that went away).
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator

from ..api import LanguageModel


class Completion:
    """The generation of `n` samples for each prompt, choices in OpenAI's order."""

    def __init__(self, lm: LanguageModel, prompts: list[str], n: int, max_tokens: int,
                 temperature: float, top_p: float, stops: list[str], seed: int | None,
                 controls: dict | None = None):
        primes = [prompt for prompt in prompts for _ in range(n)]
        # a list of primes: a batch with one sample each, and a list of chars per step;
        # the call checks the options and the primes before any text (a UsageError)
        self._steps: Iterator[list[str]] = lm.generate(
            primes, length=max_tokens, temperature=temperature,
            top_p=None if top_p >= 1 else top_p, seed=seed, **(controls or {}))
        self.stops = stops
        self.texts = [""] * len(primes)  # each choice's text so far, stop strings removed
        self.shown = [0] * len(primes)  # how much of it has been handed out
        self.finish_reasons: list[str | None] = [None] * len(primes)
        self.generated = 0  # characters generated, over all choices

    @property
    def done(self) -> bool:
        return all(self.finish_reasons)

    def advance(self, max_chars: int, max_seconds: float) -> list[str]:
        """Generate up to `max_chars` more characters per choice (or for `max_seconds`)
        and return each choice's newly showable text."""
        started = time.perf_counter()
        for _ in range(max_chars):
            chars = next(self._steps, None)
            if chars is None:  # the length is reached
                self.finish_reasons = [r or "length" for r in self.finish_reasons]
                break
            self._add(chars)
            if self.done:
                self.close()
                break
            if time.perf_counter() - started >= max_seconds:
                break
        return [self._showable(i) for i in range(len(self.texts))]

    def add_steps(self, steps: list[list[str]]) -> list[str]:
        """Take in steps made elsewhere (a batch of many requests, see batcher.py), one
        list of chars per step with one per choice, and return each choice's newly
        showable text; steps after every choice has ended are ignored."""
        for chars in steps:
            if self.done:
                break
            self._add(chars)
        return [self._showable(i) for i in range(len(self.texts))]

    def end(self, reason: str) -> list[str]:
        """End the choices still going with `reason` ("length": max_tokens is reached);
        what they may show now."""
        self.finish_reasons = [r or reason for r in self.finish_reasons]
        return [self._showable(i) for i in range(len(self.texts))]

    def _add(self, chars: list[str]) -> None:
        for i, char in enumerate(chars):
            if self.finish_reasons[i]:
                continue
            self.generated += 1
            text = self.texts[i] + char
            stop = next((s for s in self.stops if text.endswith(s)), None)
            if stop is not None:
                text, self.finish_reasons[i] = text[:-len(stop)], "stop"
            self.texts[i] = text

    def _showable(self, i: int) -> str:
        """The text of choice i not handed out yet that no stop string can still take."""
        text = self.texts[i]
        end = len(text)
        if not self.finish_reasons[i]:
            end -= self._held_back(text)
        new, self.shown[i] = text[self.shown[i]:end], max(self.shown[i], end)
        return new

    def _held_back(self, text: str) -> int:
        """The length of the longest end of `text` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[-k:]):
                    longest = k
                    break
        return longest

    def close(self) -> None:
        """End the generation now (its generator's cleanup runs)."""
        close = getattr(self._steps, "close", None)
        if close is not None:
            close()


def completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def completion_body(ident: str, model: str, completion: Completion, prompts: list[str],
                    n: int) -> dict:
    """The whole (non-streamed) response, as OpenAI's text_completion object."""
    prompt_chars = sum(len(p) for p in prompts)
    completion_chars = sum(len(t) for t in completion.texts)
    return {
        "id": ident, "object": "text_completion", "created": int(time.time()),
        "model": model,
        "choices": [{"text": text, "index": i, "logprobs": None, "finish_reason": reason}
                    for i, (text, reason) in enumerate(zip(completion.texts,
                                                           completion.finish_reasons))],
        "usage": {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
                  "total_tokens": prompt_chars + completion_chars},
    }


def chunk_body(ident: str, model: str, index: int, text: str,
               finish_reason: str | None) -> dict:
    """One streamed event: new text of one choice (and, last, why it ended)."""
    return {"id": ident, "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [{"text": text, "index": index, "logprobs": None,
                                         "finish_reason": finish_reason}]}
