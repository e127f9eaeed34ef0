"""`charlstm serve`: trained models over HTTP, and a playground page in the browser.

An OpenAI-compatible subset (GET /v1/models, POST /v1/completions, streamed or not), a
scoring endpoint (POST /v1/score) and one self-contained page at GET /. Everything goes
through the Python API (`charlstm.load`, `LanguageModel.generate` and `score`). Needs
FastAPI and uvicorn: pip install 'charlstm[serve]'.

    options.py      ServeOptions: limits per request and the API key, with their defaults
    registry.py     the served models: names, model cards, a lock each
    requests.py     the request bodies, as pydantic models
    completion.py   one completion request's generation: stop strings, choices, slices
    choices.py      OpenAI's extras on the choices: logprobs, echo, best_of; novelty
    batcher.py      continuous batching: a thread per model steps its completions together
    memory.py       freed memory handed back to the system (malloc_trim), so it stays flat
    metrics.py      GET /metrics in Prometheus's text format, and the middleware counting
    errors.py       OpenAI-shaped JSON errors for every 4xx (and 503 when busy)
    gate.py         the ASGI middleware: the API key and the request body size limit
    inspection.py   POST /v1/inspect: a unit's values, guesses, the --find ranking
    app.py          create_app: the routes
    playground.html the page at GET / (package data)
"""

from .options import ServeOptions

__all__ = ["ServeOptions", "create_app", "load_models"]


def load_models(paths, device: str = "cpu"):
    """The checkpoints at `paths` (run folders or .pt files), loaded and named."""
    from .registry import load_models as load

    return load(paths, device)


def create_app(models, options: ServeOptions | None = None):
    """The ASGI application (FastAPI behind the key and size gate) serving `models`."""
    from .app import create_app as create

    return create(models, options or ServeOptions())
