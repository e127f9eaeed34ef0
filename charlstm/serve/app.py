"""The FastAPI application: the routes, over the served models.

Concurrency: the event loop never computes. Completions join their model's batch
(batcher.py: a thread steps every admitted completion together). With batching off
(`max_batch` 0) a completion is advanced in time slices (up to `slice_chars` characters
per choice, or `slice_seconds`), each run in a worker thread while holding its model's
asyncio lock, which hands the model to waiting requests in arrival order (FIFO); so
streams on one model interleave slice by slice, and the loop stays free to accept
requests, answer others and notice clients that went away (a watcher waits for the
disconnect, looked at between slices; a closed stream also cancels its generator). A
non-streamed completion takes bigger slices (fewer trips to a thread). Scores take
turns at the lock the same way. Different models work in parallel (torch releases the
GIL in its ops). A request's own samples (n, several prompts) are one batch.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from importlib import resources
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..api import make_generator
from . import choices, errors
from .batcher import TIME_LIMIT, Batcher, Job, stream
from .completion import Completion, chunk_body, completion_body, completion_id
from .errors import APIError
from .gate import Gate
from .inspection import add_inspect_route
from .memory import Trimmer
from .metrics import Metered, Metrics
from .options import ServeOptions
from .registry import ServedModel
from .requests import CompletionRequest, ScoreRequest

MAX_STOPS = 4  # as OpenAI
NON_STREAMED_SLICE_FACTOR = 8  # nobody watches a non-streamed completion grow


@dataclass
class Counters:
    """What GET /v1/stats reports: to watch load, and to see a generation stop."""

    active_generations: int = 0
    characters_generated: int = 0
    completions: int = 0
    disconnects: int = 0


def create_app(models: dict[str, ServedModel], options: ServeOptions):
    """The ASGI application serving `models` (see `registry.load_models`)."""
    counters, metrics, trimmer = Counters(), Metrics(), Trimmer()
    batchers = {name: Batcher(name, served.lm, options, metrics, counters, trimmer)
                for name, served in models.items()} if options.max_batch else {}
    _add_gauges(metrics, batchers, counters)
    app = FastAPI(title="charlstm", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    errors.install(app)
    page = resources.files("charlstm.serve").joinpath("playground.html").read_text("utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [
            {key: served.card[key] for key in ("id", "object", "created", "owned_by")}
            for served in models.values()]}

    @app.get("/v1/models/{name}")
    async def model_card(name: str):
        return JSONResponse(_finite(_find(models, name).card))

    @app.get("/v1/stats")
    async def stats():
        return vars(counters)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(models)}

    @app.get("/metrics")
    async def exposition():
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    _add_text_routes(app, models, options, counters, batchers, trimmer, metrics)
    add_inspect_route(app, models, lambda name: _find(models, name))
    return Metered(Gate(app, options.api_key, options.max_body_bytes), metrics)


def _add_gauges(metrics: Metrics, batchers: dict[str, Batcher], counters: Counters) -> None:
    metrics.gauges.update({
        "batch_size": ("Samples being stepped together now, over all models",
                       lambda: sum(b.rows for b in batchers.values())),
        "queue_depth": ("Requests waiting for room in a batch (--max-batch)",
                        lambda: sum(b.queue_depth for b in batchers.values())),
        "active_generations": ("Completions being generated or waiting",
                               lambda: counters.active_generations)})


def _find(models: dict[str, ServedModel], name: str) -> ServedModel:
    if name not in models:
        raise APIError(404, f"no model named {name!r}; served: {', '.join(models)}",
                       "model", "model_not_found")
    return models[name]


def _add_text_routes(app: FastAPI, models: dict[str, ServedModel], options: ServeOptions,
                     counters: Counters, batchers: dict[str, Batcher], trimmer: Trimmer,
                     metrics: Metrics) -> None:
    """POST /v1/completions and /v1/score."""

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        served = _find(models, body.model)
        prompts, stops = body.prompts(), body.stops()
        max_tokens = _check_completion(body, prompts, stops, options)
        best_of = choices.check_extras(body, prompts, options)
        _check_characters(served, prompts)
        if body.max_copy is not None or body.novelty:
            await choices.open_copy_index(served.lm, body)  # built once, off the event loop
        # options out of range: the library's UsageError, a 400 naming the field (errors.py)
        completion = Completion(served.lm, prompts, best_of, max_tokens, body.temperature,
                                body.top_p, stops, body.seed, body.controls())
        counters.completions += 1
        chars = options.slice_chars * (1 if body.stream else NON_STREAMED_SLICE_FACTOR)
        if served.name in batchers and _batchable(body, best_of):
            batcher = batchers[served.name]
            job = _job(served, completion, prompts, body, max_tokens, options)
            batcher.submit(job)
            slices = stream(job, request, chars, metrics, counters)
        else:
            slices = _slices(served, completion, request, chars, options.slice_seconds,
                             counters, time.monotonic() + options.request_seconds, metrics)
        ident = completion_id()
        if body.stream:
            return StreamingResponse(
                _events(slices, completion, ident, served.name), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        async for _ in slices:
            pass
        if not completion.done:  # the client went away: nobody to answer
            return JSONResponse({}, status_code=499)
        answer = completion_body(ident, served.name, completion, prompts, body.n)
        if choices.needs_finishing(body, best_of):
            async with served.lock:
                answer["choices"] = await run_in_threadpool(
                    choices.finish, served.lm, completion, prompts, body, best_of)
            return JSONResponse(_finite(answer))
        return answer

    @app.post("/v1/score")
    async def score(body: ScoreRequest):
        served = _find(models, body.model)
        if (body.text is None) == (body.lines is None):
            raise APIError(400, "give either 'text' (one text) or 'lines' (a list of texts)",
                           "text")
        if body.per_char and body.text is None:
            raise APIError(400, "'per_char' needs 'text' (one text), not 'lines'", "per_char")
        async with served.lock:
            result = await run_in_threadpool(_score, served, body)
        trimmer()
        return JSONResponse(_finite(result))


def _batchable(body: CompletionRequest, best_of: int) -> bool:
    """Whether the batch step can generate this request: it picks with temperature and
    top-p alone, so loop penalties, max_copy and best_of's extra candidates are generated
    on their own (see _slices); logprobs, echo and novelty are read after either way."""
    penalised = (body.repetition_penalty != 1 or body.frequency_penalty != 0
                 or body.presence_penalty != 0 or body.no_repeat != 0)
    return not penalised and body.max_copy is None and best_of == body.n


def _job(served: ServedModel, completion: Completion, prompts: list[str],
         body: CompletionRequest, max_tokens: int, options: ServeOptions) -> Job:
    """The completion as a job for its model's batch (see batcher.py)."""
    completion.close()  # its own generator (which checked the options) is not used
    return Job(completion, [p for p in prompts for _ in range(body.n)], max_tokens,
               body.temperature, None if body.top_p >= 1 else body.top_p,
               make_generator(body.seed, served.lm.device), body.seed is not None,
               time.monotonic() + options.request_seconds, asyncio.get_running_loop())


def _check_completion(body: CompletionRequest, prompts: list[str], stops: list[str],
                      options: ServeOptions) -> int:
    """The request's max_tokens, once its sizes are within the server's limits."""
    max_tokens = body.max_tokens if body.max_tokens is not None else options.default_tokens
    if max_tokens > options.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens:,}, more than this server's limit of "
                       f"{options.max_tokens:,} characters (charlstm serve --max-tokens)",
                       "max_tokens", "limit_exceeded")
    if not prompts:
        raise APIError(400, "'prompt' is an empty list", "prompt")
    samples = body.n * len(prompts)
    if samples > options.max_samples:
        raise APIError(400, f"{len(prompts)} prompt(s) x n={body.n} is {samples} samples, more "
                       f"than this server's limit of {options.max_samples} per request "
                       "(charlstm serve --max-n)", "n", "limit_exceeded")
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"at most {MAX_STOPS} stop strings, not {len(stops)}", "stop")
    return max_tokens


def _check_characters(served: ServedModel, prompts: list[str]) -> None:
    """A 400 naming the characters of the prompts the model never saw."""
    unseen = sorted({c for prompt in prompts for c in served.lm.vocab.unknown(prompt)})
    if unseen:
        shown = ", ".join(repr(c) for c in unseen[:20]) + (" ..." if len(unseen) > 20 else "")
        raise APIError(400, f"the prompt has {len(unseen)} character(s) the model "
                       f"{served.name!r} never saw: {shown}", "prompt", "unseen_characters")


async def _slices(served: ServedModel, completion: Completion, request: Request,
                  slice_chars: int, slice_seconds: float, counters: Counters,
                  deadline: float = math.inf, metrics: Metrics | None = None
                  ) -> AsyncIterator[list[str]]:
    """Advance `completion` slice by slice, taking turns at the model's lock; yield each
    slice's new text per choice. Ends early when the client has gone, and ends its
    choices with "time_limit" past `deadline` (time.monotonic())."""
    counters.active_generations += 1
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_watch_disconnect(request, gone))
    try:
        while not completion.done:
            if gone.is_set():
                counters.disconnects += 1
                return
            before = completion.generated
            async with served.lock:
                pieces = await run_in_threadpool(completion.advance, slice_chars,
                                                 slice_seconds)
            counters.characters_generated += completion.generated - before
            if time.monotonic() > deadline and not completion.done:
                pieces = [a + b for a, b in zip(pieces, completion.end(TIME_LIMIT))]
                if metrics is not None:
                    metrics.timeouts += 1
            yield pieces
    finally:
        watcher.cancel()
        completion.close()
        counters.active_generations -= 1


async def _watch_disconnect(request: Request, gone: asyncio.Event) -> None:
    """Set `gone` once the client disconnects: one waiting receive, where polling with
    `request.is_disconnected()` between slices cost a cancelled receive each time."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _events(slices: AsyncIterator[list[str]], completion: Completion, ident: str,
                  model: str) -> AsyncIterator[str]:
    """Server-sent events as OpenAI streams them: a `data: {json}` chunk per new piece of
    a choice, one with each choice's finish_reason, then `data: [DONE]`."""
    try:
        async for pieces in slices:
            for index, text in enumerate(pieces):
                if text:
                    yield _event(chunk_body(ident, model, index, text, None))
        if completion.done:
            for index, reason in enumerate(completion.finish_reasons):
                yield _event(chunk_body(ident, model, index, "", reason))
            yield "data: [DONE]\n\n"
    finally:
        await slices.aclose()  # a cancelled stream still ends its generation


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _score(served: ServedModel, body: ScoreRequest) -> dict:
    lm = served.lm
    if body.lines is not None:
        records = list(lm.score_lines(body.lines))
        return {"object": "list", "model": served.name,
                "data": [{k: r[k] for k in ("characters", "bits", "bits_per_char", "unknown")}
                         for r in records]}
    # with per-character bits, the whole is read the same sequential way, so they add up
    record = lm.score(body.text, exact=body.per_char)
    result = {"object": "score", "model": served.name,
              **{k: record[k] for k in ("characters", "bits", "bits_per_char", "unknown")}}
    if body.per_char:
        result["char_bits"] = lm.char_bits(body.text)
    return result


def _finite(value):
    """JSON has no NaN or infinity: they become null (an empty text's bits_per_char)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
