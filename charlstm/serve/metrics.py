"""What GET /metrics reports, in Prometheus's text format, written by hand (no dependency).

Counters and histograms are kept here as plain numbers (the event loop and the batch
threads add to them; a lost update under a race would cost one count, and CPython's GIL
makes each += on an int effectively whole); gauges (the batch size now, the queue depth)
are read from their owners when the page is asked for. `Metered` is the outermost ASGI
middleware: it counts every HTTP request by path and status and times it, the gate's 401
and 413 included.

Exposition format: https://prometheus.io/docs/instrumenting/exposition_formats/
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Callable

PREFIX = "charlstm_"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)  # seconds
KNOWN_PATHS = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/score",
               "/v1/stats")


class Histogram:
    """Counts of observations at or below each bucket's bound, their sum and count."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, running = [], 0
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            running += count
            bucket_labels = _join(labels, 'le="' + bound + '"')
            out.append(f"{name}_bucket{{{bucket_labels}}} {running}")
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {_number(self.total)}", f"{name}_count{braces} {running}"]
        return out


class Metrics:
    """The server's counters and histograms; `gauges` are read when rendering."""

    def __init__(self):
        self.requests: dict[tuple[str, str, int], int] = {}  # (method, path, status) -> n
        self.latency: dict[str, Histogram] = {}  # path -> whole request, seconds
        self.first_text = Histogram()  # from a completion's arrival to its first character
        self.characters_generated = 0
        self.disconnects = 0
        self.timeouts = 0
        self.refused_busy = 0  # requests refused because the queue was full
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}  # name -> (help, read)

    def count_request(self, method: str, path: str, status: int, seconds: float) -> None:
        path = path if path in KNOWN_PATHS else (
            "/v1/models/{name}" if path.startswith("/v1/models/") else "other")
        key = (method, path, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.latency.setdefault(path, Histogram()).observe(seconds)

    def render(self) -> str:
        """The whole exposition, one metric family after another."""
        lines = _family("requests_total", "counter", "HTTP requests by method, path and status")
        for (method, path, status), count in sorted(self.requests.items()):
            lines.append(f'{PREFIX}requests_total{{method="{method}",path="{path}",'
                         f'status="{status}"}} {count}')
        lines += _family("request_duration_seconds", "histogram",
                         "Time from a request's arrival to the end of its response, by path")
        for path, histogram in sorted(self.latency.items()):
            lines += histogram.lines(PREFIX + "request_duration_seconds", f'path="{path}"')
        lines += _family("first_text_seconds", "histogram",
                         "Time from a completion's arrival to its first generated character")
        lines += self.first_text.lines(PREFIX + "first_text_seconds")
        for name, help_text, value in (
                ("characters_generated_total", "Characters generated, over all samples",
                 self.characters_generated),
                ("disconnects_total", "Generations ended because the client went away",
                 self.disconnects),
                ("timeouts_total", "Requests ended by the time limit (--timeout)",
                 self.timeouts),
                ("refused_busy_total", "Requests refused with 503 because the queue was "
                 "full (--max-queue)", self.refused_busy)):
            lines += [*_family(name, "counter", help_text), f"{PREFIX}{name} {value}"]
        for name, (help_text, read) in sorted(self.gauges.items()):
            lines += [*_family(name, "gauge", help_text), f"{PREFIX}{name} {_number(read())}"]
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} {kind}"]


def _join(*labels: str) -> str:
    return ",".join(label for label in labels if label)


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Metered:
    """ASGI middleware: each HTTP request counted by method, path and status, and timed
    to the end of its response body (a stream's whole length)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.count_request(scope["method"], scope["path"], status,
                                       time.perf_counter() - started)
