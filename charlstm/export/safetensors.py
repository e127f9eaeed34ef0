"""A model as safetensors: its weights, with its architecture and vocabulary as JSON.

One file that any language with a safetensors reader (Rust, C++, JavaScript, Python) can
open without running code from it: an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the raw little-endian bytes.
charlstm's part is what the header's `__metadata__` holds (all values are strings):

    format          "charlstm-safetensors"
    format_version  "1"
    model_config    JSON: ModelConfig (model, num_layers, hidden_size, embed_size, ...)
    vocab           JSON: {"chars": "...", "counts": [...]}: id i is chars[i]
    source          JSON: the checkpoint's charlstm version, step, best validation loss,
                    corpus, training settings and precision (for `charlstm info`)

and the tensors are the model's state_dict, float32, under torch's names and gate order
(docs/export.md spells out the equations). `charlstm.load` reads such a file back, through
`charlstm.checkpoint`, the one place where model files are read.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CheckpointError

FORMAT = "charlstm-safetensors"
FORMAT_VERSION = 1


def is_safetensors(path: Path) -> bool:
    """Whether the file starts as a safetensors file does: a header length, then '{'.
    (torch.save's files start with a zip header, 'PK', or a pickle's 0x80.)"""
    try:
        with open(path, "rb") as file:
            start = file.read(9)
    except OSError:  # unreadable: the checkpoint reader says so
        return False
    return len(start) == 9 and start[8:9] == b"{" and not start.startswith(b"PK")


def encode(model_config: dict, vocab: dict, tensors: dict[str, torch.Tensor],
           source: dict) -> bytes:
    """The file's bytes: float32 `tensors` (a state_dict) with charlstm's metadata."""
    from safetensors.torch import save

    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
                "model_config": json.dumps(model_config), "vocab": json.dumps(vocab),
                "source": json.dumps(source)}
    weights = {name: t.detach().to("cpu", torch.float32).contiguous()
               for name, t in tensors.items()}
    return save(weights, metadata=metadata)


def decode(path: Path) -> dict:
    """A checkpoint-shaped dict (model_config, vocab, model, ...) from an export, checked;
    a CheckpointError names what is wrong with a damaged or foreign file."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        data = Path(path).read_bytes()
        tensors = load(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated, "
                              f"corrupt, or not safetensors): {_first_line(exc)}") from exc
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file, but not a charlstm export "
                              "(its metadata names no charlstm format)")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > FORMAT_VERSION:
        raise CheckpointError(f"{path} has export format {version!r}, newer than this "
                              f"charlstm reads (up to {FORMAT_VERSION}); upgrade charlstm")
    try:
        fields = {key: json.loads(metadata[key])
                  for key in ("model_config", "vocab", "source")}
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is an incomplete charlstm export: its metadata "
                              f"lacks or garbles {_first_line(exc)}") from exc
    source = fields["source"] if isinstance(fields["source"], dict) else {}
    return {"model_config": fields["model_config"], "vocab": fields["vocab"],
            "model": tensors, "charlstm_version": source.get("charlstm_version"),
            "corpus": source.get("corpus"), "step": source.get("step"),
            "best_val_loss": source.get("best_val_loss"),
            "train_config": source.get("train_config") or {},
            "precision": source.get("precision")}


def is_ours(path: Path) -> bool:
    """Whether `path` is a charlstm safetensors export (one an export may replace)."""
    if not is_safetensors(path):
        return False
    try:
        with open(path, "rb") as file:
            size = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(min(size, 1 << 26)))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(header, dict) and \
        (header.get("__metadata__") or {}).get("format") == FORMAT


def source_of(record) -> dict:
    """What an export says about the checkpoint it came from (a checkpoint.Checkpoint)."""
    return {"charlstm_version": record.charlstm_version, "step": record.step,
            "best_val_loss": record.best_val_loss, "corpus": record.corpus,
            "train_config": record.train_config, "precision": record.precision}


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def build(lm, quantize: str | None = None) -> bytes:
    """The export of a loaded model (a charlstm.LanguageModel)."""
    return encode(lm.config.to_dict(), lm.vocab.to_dict(), lm.model.state_dict(),
                  source_of(lm.checkpoint))
