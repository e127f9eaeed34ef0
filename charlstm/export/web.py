"""A model as one self-contained web page that writes text, offline.

The page (`page.html`) holds everything: the form, the sampler in plain JavaScript
(`sampler.js`) and the model as JSON in a `<script type="application/json">` element:

    {"format": "charlstm-web", "format_version": 1, "model_config": {...},
     "vocab": {"chars": ..., "counts": [...]}, "quantize": null | "float16" | "int8",
     "source": {...}, "tensors": {name: {"shape": [...], "dtype": ..., "data": base64}}}

Each tensor is the state_dict's, row-major, little-endian: float32; float16 with
`--quantize float16`; or with `--quantize int8`, each matrix's rows as int8 with one float32
`scale` per row (value = q * scale; biases stay float32). `dequantized` gives the weights
the page computes with, so their validation loss can be measured (bench/export.py). The
page needs no network and no build step, so it works opened from disk (file://).
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from .safetensors import source_of

FORMAT = "charlstm-web"
FORMAT_VERSION = 1
MARK = b'<meta name="generator" content="charlstm-web">'
# V8 (Chrome, Node) holds strings of at most 2**29 - 24 characters: the page's model text
# must fit in one, to be parsed
MAX_MODEL_CHARS = 2**29 - 24


def quantized(weight: np.ndarray, quantize: str | None) -> dict:
    """One tensor as the page stores it: {"shape", "dtype", "data"[, "scale"]}."""
    weight = np.ascontiguousarray(weight, dtype="<f4")
    spec = {"shape": list(weight.shape)}
    if quantize == "int8" and weight.ndim == 2:
        peak = np.abs(weight).max(axis=1)
        scale = np.where(peak > 0, peak / 127, 1).astype("<f4")  # (rows,)
        q = np.clip(np.rint(weight / scale[:, None]), -127, 127).astype(np.int8)
        spec.update(dtype="int8", data=_b64(q), scale=_b64(scale))
    elif quantize == "float16":
        spec.update(dtype="float16", data=_b64(weight.astype("<f2")))
    else:
        spec.update(dtype="float32", data=_b64(weight))
    return spec


def dequantized_tensor(spec: dict) -> np.ndarray:
    """A stored tensor back as float32: what the page's sampler computes with."""
    raw = base64.b64decode(spec["data"])
    if spec["dtype"] == "int8":
        scale = np.frombuffer(base64.b64decode(spec["scale"]), "<f4")
        q = np.frombuffer(raw, np.int8).reshape(spec["shape"])
        return (q.astype(np.float32) * scale[:, None]).astype(np.float32)
    dtype = {"float16": "<f2", "float32": "<f4"}[spec["dtype"]]
    return np.frombuffer(raw, dtype).astype(np.float32).reshape(spec["shape"])


def dequantized(state_dict: dict[str, torch.Tensor], quantize: str | None
                ) -> dict[str, torch.Tensor]:
    """The weights as the page holds them after `quantize`, as float32 tensors."""
    return {name: torch.from_numpy(dequantized_tensor(quantized(t.cpu().numpy(), quantize)))
            for name, t in state_dict.items()}


def model_json(lm, quantize: str | None) -> str:
    """The page's model, as JSON safe inside a <script> element."""
    model = {"format": FORMAT, "format_version": FORMAT_VERSION,
             "model_config": lm.config.to_dict(), "vocab": lm.vocab.to_dict(),
             "quantize": quantize, "source": source_of(lm.checkpoint),
             "tensors": {name: quantized(t.detach().cpu().numpy(), quantize)
                         for name, t in lm.model.state_dict().items()}}
    # "<" appears only inside JSON strings: escaped, no "</script>" can end the element
    return json.dumps(model, separators=(",", ":")).replace("<", "\\u003c")


def build(lm, quantize: str | None = None) -> bytes:
    """The page of a loaded model (a charlstm.LanguageModel)."""
    text = model_json(lm, quantize)
    if len(text) > MAX_MODEL_CHARS:
        raise UsageError(
            f"the page's weights would take {len(text) / 1e6:,.0f} million characters, more "
            f"than a browser parses in one string ({MAX_MODEL_CHARS / 1e6:,.0f} million in "
            "Chrome): use --quantize int8 or float16, or --format onnx")
    config, source = lm.config, lm.checkpoint
    title = f"charlstm: {config.model.upper()} {config.num_layers} × {config.hidden_size}"
    corpus = (source.corpus or {}).get("name") if source.corpus else None
    facts = (f"{lm.model.num_parameters():,} parameters, {len(lm.vocab)} characters"
             + (f", trained on {corpus}" if corpus else "")
             + (f", step {source.step:,}" if source.step else "")
             + (f"; weights {quantize}" if quantize else "")
             + ". Runs in this page, offline.")
    fills = {"TITLE": html.escape(title), "FACTS": html.escape(facts),
             "SAMPLER_JS": _package_text("sampler.js"), "MODEL_JSON": text}
    # one pass, so that no filled-in text is read as a placeholder
    page = re.sub(r"__([A-Z_]+)__", lambda m: fills.get(m.group(1), m.group(0)),
                  _package_text("page.html"))
    return page.encode("utf-8")


def is_ours(path: Path) -> bool:
    """Whether `path` is a page charlstm's web export wrote (one an export may replace)."""
    try:
        with open(path, "rb") as file:
            return MARK in file.read(2048)
    except OSError:
        return False


def _package_text(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")
