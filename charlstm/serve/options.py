"""What a server allows each request, and the API key: one source for each default."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError, require
from ..ranges import MAX_SECONDS, SAMPLES, SERVED_TOKENS, Range

# the ranges of the limits a user sets: `charlstm serve` flags
LIMITS = {"max_tokens": ("--max-tokens", SERVED_TOKENS),
          "max_samples": ("--max-n", SAMPLES),
          "max_body_bytes": ("--max-body", Range(1024, 2**30)),
          "max_batch": ("--max-batch", Range(0, 65536)),  # 0: no batching
          "max_queue": ("--max-queue", Range(0, 1_000_000)),
          "request_seconds": ("--timeout", Range(0.0, MAX_SECONDS, low_open=True)),
          "grace_seconds": ("--grace", Range(0.0, 24 * 3600.0))}


@dataclass(frozen=True)
class ServeOptions:
    """Limits per request (a user raises them with `charlstm serve` flags) and the key."""

    max_tokens: int = 4096  # characters generated per sample
    default_tokens: int = 256  # max_tokens when a request does not say
    max_samples: int = 16  # n times the number of prompts, in one request
    max_body_bytes: int = 1_000_000  # a request's body (JSON) at most
    api_key: str | None = None  # when set, every API request needs "Bearer <key>"
    slice_chars: int = 8  # characters per streamed chunk, at most ...
    slice_seconds: float = 0.05  # ... or this long: then other requests get a turn
    max_batch: int = 64  # samples stepped together on one model; 0: no batching
    max_queue: int = 64  # requests waiting for room (past max_batch) before a 503
    request_seconds: float = 600.0  # a generation's time limit, from its arrival
    grace_seconds: float = 10.0  # on SIGTERM, how long running streams may go on

    def __post_init__(self):
        for name, (flag, allowed) in LIMITS.items():
            if getattr(self, name) not in allowed:
                raise UsageError(allowed.refusal(flag, getattr(self, name)))
        require(self.api_key != "", "the API key must not be empty")
        object.__setattr__(self, "default_tokens", min(self.default_tokens, self.max_tokens))
