"""What a server allows each request, and the API key: one source for each default."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import require


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
        require(self.max_tokens >= 1, f"--max-tokens must be at least 1, not {self.max_tokens}")
        require(self.max_samples >= 1, f"--max-n must be at least 1, not {self.max_samples}")
        require(self.max_body_bytes >= 1024,
                f"--max-body must be at least 1024 bytes, not {self.max_body_bytes}")
        require(self.api_key != "", "the API key must not be empty")
        require(self.max_batch >= 0, f"--max-batch must be 0 or more, not {self.max_batch}")
        require(self.max_queue >= 0, f"--max-queue must be 0 or more, not {self.max_queue}")
        require(self.request_seconds > 0,
                f"--timeout must be more than 0 seconds, not {self.request_seconds}")
        require(self.grace_seconds >= 0,
                f"--grace must be 0 seconds or more, not {self.grace_seconds}")
        object.__setattr__(self, "default_tokens", min(self.default_tokens, self.max_tokens))
