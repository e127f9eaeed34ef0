"""Checkpoints: one self-contained file per saved state of a run.

A checkpoint is a dict of tensors and plain Python data (no pickled classes), saved with
`torch.save` and read with `torch.load(..., weights_only=True)`, so loading one never runs
code from the file. It holds everything needed to sample from the model (config,
vocabulary, weights) and to resume training exactly (optimizer, step, data position,
carried hidden state, random number generator states, metrics history). Writes are atomic
(see `files`): a crash leaves the previous checkpoint in place, never half of a new one.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError, UsageError
from .files import write_atomically

FORMAT = "charlstm-checkpoint"
FORMAT_VERSION = 1


def save(payload: dict, *paths: Path) -> None:
    """Write the same checkpoint to each path, each atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    for path in paths:
        try:
            write_atomically(path, data)
        except OSError as exc:
            raise CheckpointError(
                f"could not write checkpoint {path}: {exc.strerror or exc}; "
                "the previous checkpoint there is unchanged"
            ) from exc


def find(path: Path) -> Path:
    """The checkpoint a path names: a file, or a run folder (its best.pt, else last.pt)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise UsageError(f"{path} holds no checkpoint (no best.pt or last.pt)")
    if not path.exists():
        raise UsageError(f"no such checkpoint: {path}")
    return path


def load(path: Path) -> dict:
    """Read and check a checkpoint; tensors land on the CPU whatever device saved them."""
    path = find(path)
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles; we explain
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):
            raise CheckpointError(
                f"{path} was refused: it asks to import Python code when loaded, which "
                "a checkpoint never needs (not a charlstm checkpoint, or a malicious one)"
            ) from exc
        raise CheckpointError(f"{path} is not a checkpoint (not a file torch.save wrote, "
                              "or damaged)") from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, TypeError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, corrupt, "
                              "or not a checkpoint at all)") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a charlstm checkpoint (it looks like a plain state_dict or "
            "another tool's file)"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, newer than this charlstm reads "
            f"(up to {FORMAT_VERSION}); upgrade charlstm to use it"
        )
    for key in ("model_config", "vocab", "model"):
        if key not in payload:
            raise CheckpointError(f"{path} is an incomplete charlstm checkpoint (no {key!r})")
    return payload
