"""POST /v1/inspect: what the playground's "Look inside" view shows, as `charlstm
inspect` computes it: one unit's value at each character of a text, the five likeliest
next characters after each, and with `find` the ranking of units by how closely they
track each property of the text.

    {"model": "run", "text": "def f(x):", "layer": 0, "unit": 17, "state": "cell",
     "find": true}
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ..errors import UsageError
from ..infer.inspect import UnitCorrelations, check_state_kind, parse_unit, top_guesses
from ..infer.properties import TextProperties
from ..infer.states import STATE_KINDS
from .errors import APIError
from .registry import ServedModel

MAX_INSPECT_CHARS = 20_000  # characters per request: every one comes back with its guesses
GUESSES = 5  # likeliest next characters per position
RANKED = 5  # units per property in the ranking


class InspectRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    model: str
    text: str
    layer: int = Field(0, ge=0)
    unit: int = Field(0, ge=0)
    state: Optional[str] = None  # "hidden" or "cell"; default cell for an LSTM
    find: bool = False  # also rank the units by the text's properties


def add_inspect_route(app: FastAPI, models: dict[str, ServedModel], find_model) -> None:
    """Register POST /v1/inspect; `find_model(name)` gives a served model or a 404."""

    @app.post("/v1/inspect")
    async def inspect(body: InspectRequest):
        served = find_model(body.model)
        _check(served, body)
        async with served.lock:
            return await run_in_threadpool(inspect_text, served, body)


def _check(served: ServedModel, body: InspectRequest) -> None:
    """A 400 naming the field for an empty or too long text, or a unit out of range."""
    if not body.text:
        raise APIError(400, "'text' is empty: nothing to inspect", "text")
    if len(body.text) > MAX_INSPECT_CHARS:
        raise APIError(400, f"'text' has {len(body.text):,} characters, more than the "
                       f"{MAX_INSPECT_CHARS:,} this endpoint looks at", "text",
                       "limit_exceeded")
    config = served.lm.config
    state = body.state or _default_state(config.model)
    try:
        check_state_kind(state, config)
    except UsageError as exc:
        raise APIError(400, str(exc), "state") from None
    try:
        parse_unit(f"{body.layer}:{body.unit}", state, config)
    except UsageError as exc:
        raise APIError(400, str(exc), "layer" if "no layer" in str(exc) else "unit") from None


def _default_state(cell: str) -> str:
    return "cell" if cell == "lstm" else "hidden"


def inspect_text(served: ServedModel, body: InspectRequest) -> dict:
    """The response: the unit's values, bits and guesses per character, and the
    ranking when asked for."""
    lm = served.lm
    config = lm.config
    unit = parse_unit(f"{body.layer}:{body.unit}",
                      body.state or _default_state(config.model), config)
    correlations = UnitCorrelations(config) if body.find else None
    properties = TextProperties()
    values, bits, guesses = [], [], []
    for chunk in lm.walk(body.text, predictions=True):
        layer = chunk.layers[unit.layer]
        values.append(layer.state(unit.kind)[:, unit.index])
        bits.append(chunk.bits)
        guesses.extend(top_guesses(chunk.log_probs, lm.vocab.chars, GUESSES))
        if correlations is not None:
            correlations.add(chunk, properties.values(chunk.text))
    result = {
        "object": "inspection", "model": served.name, "characters": len(body.text),
        "shape": {"cell": config.model, "num_layers": config.num_layers,
                  "hidden_size": config.hidden_size,
                  "states": list(STATE_KINDS[config.model])},
        "layer": unit.layer, "unit": unit.index, "state": unit.kind,
        "values": np.concatenate(values).astype(float).tolist(),
        "bits": np.concatenate(bits).tolist(),
        "top": [[[char, round(p, 5)] for char, p in row] for row in guesses],
    }
    if correlations is not None:
        try:
            findings = correlations.findings(RANKED)
        except UsageError as exc:
            raise APIError(400, str(exc), "find") from None
        result["ranking"] = [
            {"property": f.property, "description": f.description,
             "units": [{"layer": u.layer, "unit": u.index, "state": u.kind,
                        "correlation": r} for u, r in f.units]}
            for f in findings if not f.constant]
    return result
