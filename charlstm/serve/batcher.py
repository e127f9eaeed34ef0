"""Continuous batching: a model's concurrent completions stepped together as one batch.

Each served model has a `Batcher`: one thread that steps every completion admitted to it
as one batch (`infer.batch_step.BatchStepper`), a block of a few characters at a time
(as many as fit in BLOCK_SECONDS, at most BLOCK_STEPS). A request joins at the next
block, and leaves when its choices have ended (length, stop strings), when its client
has gone, or at its time limit (its choices then end with finish_reason "time_limit").
Each keeps its own options, stop strings and torch.Generator; a seeded one gives the
text it gives alone, whoever else is served.

Room: the batch holds up to `max_batch` samples (n times the prompts of each request);
further requests wait, first come first served, up to `max_queue` of them; past that
a request gets a 503 with Retry-After. The event loop never computes: the thread hands
each block's new text to the request's asyncio.Queue with `call_soon_threadsafe`, and
`stream` turns it into slices of at most `slice_chars` characters per choice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator

import torch
from starlette.requests import Request

from ..api import LanguageModel
from ..infer.batch_step import BatchStepper, Generation
from ..infer.generate import BLOCK_SECONDS, BLOCK_STEPS
from .completion import Completion
from .errors import APIError
from .memory import Trimmer
from .metrics import Metrics
from .options import ServeOptions

log = logging.getLogger("charlstm.serve")

RETRY_AFTER_SECONDS = 1
TIME_LIMIT = "time_limit"  # the finish_reason of choices ended by the time limit
_GONE = object()  # put in a job's queue when its client disconnects


@dataclass(eq=False)
class Job:
    """One completion request in (or waiting for) the batch."""

    completion: Completion
    primes: list[str]  # one per choice, in OpenAI's order
    max_tokens: int
    temperature: float
    top_p: float | None
    generator: torch.Generator
    exact: bool  # seeded: its text must not depend on the rest of the batch
    deadline: float  # time.monotonic() past which it is ended
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)  # pieces lists; None: end
    arrived: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the event loop: the client went away
    timed_out: bool = False
    error: Exception | None = None
    generation: Generation | None = None

    @property
    def rows(self) -> int:
        return len(self.primes)

    def publish(self, item) -> None:
        """Hand `item` (a list of pieces, or None at the end) to the event loop."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class Batcher:
    """The batch thread of one model (started at once; a daemon thread)."""

    def __init__(self, name: str, lm: LanguageModel, options: ServeOptions, metrics: Metrics,
                 counters, trimmer: Trimmer):
        self.name, self.options, self.metrics, self.counters = name, options, metrics, counters
        self.trimmer = trimmer
        self.chars = lm.vocab.chars
        self.stepper = BatchStepper(lm.model, lm.vocab, options.max_batch)
        self._condition = threading.Condition()
        self._joining: list[Job] = []  # admitted, to join at the next block
        self._waiting: deque[Job] = deque()  # no room yet
        self._rows_taken = 0  # samples of the jobs in the batch or joining it
        self._jobs: list[Job] = []  # in the batch, in the stepper's order
        self._steps = 1  # steps per block: doubled or halved to take about BLOCK_SECONDS
        self._thread = threading.Thread(target=self._run, name=f"charlstm-batch-{name}",
                                        daemon=True)
        self._thread.start()

    @property
    def rows(self) -> int:
        """Samples being stepped now."""
        return self.stepper.rows

    @property
    def queue_depth(self) -> int:
        """Requests waiting for room in the batch."""
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        """Admit `job` to the batch, or to the queue; a 503 when the queue is full."""
        if job.rows > self.options.max_batch:
            raise APIError(400, f"{job.rows} samples in one request, more than this "
                           f"server's batch of {self.options.max_batch} (charlstm serve "
                           "--max-batch)", "n", "limit_exceeded")
        with self._condition:
            if not self._waiting and self._rows_taken + job.rows <= self.options.max_batch:
                self._rows_taken += job.rows
                self._joining.append(job)
            elif len(self._waiting) < self.options.max_queue:
                self._waiting.append(job)
            else:
                self.metrics.refused_busy += 1
                raise APIError(503, f"the server is busy: {len(self._waiting)} requests are "
                               f"waiting for model {self.name!r} already; try again shortly",
                               None, "server_busy",
                               {"Retry-After": str(RETRY_AFTER_SECONDS)})
            self._condition.notify()

    # ------------------------------------------------------------- the batch thread

    def _run(self) -> None:
        while True:
            if not self._jobs:
                self.trimmer()  # idle: what the last batches freed goes back
            with self._condition:
                while not (self._joining or self._jobs):
                    self._condition.wait()
                joining, self._joining = self._joining, []
            if joining:
                self._steps = 1  # the newcomers' first text comes after one step
            try:
                for job in joining:
                    self._admit(job)
                self._drop_ended()
                if self._jobs:
                    self._step()
            except Exception as error:  # never let the thread die: fail the batch's jobs
                log.error("batch of %s failed: %s: %s", self.name, type(error).__name__,
                          error)
                for job in list(self._jobs):
                    job.error = error
                    self._leave(job)

    def _admit(self, job: Job) -> None:
        if job.cancelled or time.monotonic() > job.deadline:
            job.timed_out = not job.cancelled
            self._finish(job)
            return
        try:
            job.generation = self.stepper.join(job.primes, job.max_tokens, job.temperature,
                                               job.top_p, job.generator, job.exact)
        except Exception as error:  # options are checked before: this is unexpected
            job.error = error
            self._finish(job)
            return
        self._jobs.append(job)

    def _drop_ended(self) -> None:
        now = time.monotonic()
        for job in list(self._jobs):
            if now > job.deadline and not job.completion.done:
                job.timed_out = True
            if job.cancelled or job.timed_out or job.completion.done:
                self._leave(job)

    def _step(self) -> None:
        started = time.perf_counter()
        ids = self.stepper.step(self._steps)
        took = time.perf_counter() - started
        if took < BLOCK_SECONDS / 2:
            self._steps = min(2 * self._steps, BLOCK_STEPS)
        elif took > BLOCK_SECONDS:
            self._steps = max(1, self._steps // 2)
        chars = self.chars
        for job, steps in zip(self._jobs, ids):
            if job.cancelled:  # its client left during the block: nobody to tell
                continue
            completion = job.completion
            before = completion.generated
            pieces = completion.add_steps([[chars[i] for i in row] for row in steps])
            if job.generation.left == 0 and not completion.done:
                pieces = [a + b for a, b in zip(pieces, completion.end("length"))]
            made = completion.generated - before
            self.metrics.characters_generated += made
            self.counters.characters_generated += made
            if any(pieces):
                job.publish(pieces)

    def _leave(self, job: Job) -> None:
        self.stepper.leave(job.generation)
        self._jobs.remove(job)
        self._finish(job)

    def _finish(self, job: Job) -> None:
        """The job is out of the batch: end its choices if time ran out, tell its
        request, and give its room to those waiting."""
        if job.timed_out:
            self.metrics.timeouts += 1
            pieces = job.completion.end(TIME_LIMIT)
            if any(pieces):
                job.publish(pieces)
        job.publish(None)
        with self._condition:
            self._rows_taken -= job.rows
            while self._waiting and (self._rows_taken + self._waiting[0].rows
                                     <= self.options.max_batch):
                waiting = self._waiting.popleft()
                self._rows_taken += waiting.rows
                self._joining.append(waiting)


async def stream(job: Job, request: Request, slice_chars: int, metrics: Metrics,
                 counters) -> AsyncIterator[list[str]]:
    """The new text of each choice, slice by slice (at most `slice_chars` characters per
    choice in each), as the batch makes it; ends early when the client has gone."""
    counters.active_generations += 1
    watcher = asyncio.ensure_future(_watch_disconnect(request, job))
    first, ended = True, False
    try:
        while (item := await job.queue.get()) is not None:
            if item is _GONE:
                return
            if first:
                metrics.first_text.observe(time.perf_counter() - job.arrived)
                first = False
            while any(item):
                yield [piece[:slice_chars] for piece in item]
                item = [piece[slice_chars:] for piece in item]
        ended = True
        if job.error is not None:
            raise job.error
    finally:
        if not ended:  # the client went away (or the server is stopping)
            counters.disconnects += 1
            metrics.disconnects += 1
        job.cancelled = True  # a no-op once it has ended; else the batch drops it
        watcher.cancel()
        counters.active_generations -= 1


async def _watch_disconnect(request: Request, job: Job) -> None:
    """Tell `job` once its client disconnects (one waiting receive)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancelled = True
    job.queue.put_nowait(_GONE)
