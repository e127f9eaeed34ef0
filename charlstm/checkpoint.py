"""Checkpoints: one self-contained file per saved state of a run.

A checkpoint is a dict of tensors and plain Python data (no pickled classes), saved with
`torch.save` and read with `torch.load(..., weights_only=True)`, so loading one never runs
code from the file. It holds everything needed to sample from the model (config,
vocabulary, weights) and to resume training exactly (optimizer, step, data position,
carried hidden state, random number generator states, metrics history). Writes are atomic
(see `files`): a crash leaves the previous checkpoint in place, never half of a new one.

`Checkpoint` is the one typed record of a checkpoint's keys: built from the file in one
place (`read`), written from one place (`Checkpoint.save`), and used by every reader
(resuming, `charlstm.load`, `charlstm info` and `plot`). `load` returns the file's plain
dict, checked, for tools that want it as it is stored.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .errors import CheckpointError, UsageError
from .data.files import write_atomically
from .settings import MODEL_SAVED_BEFORE, ModelConfig
from .data.vocab import Vocabulary
from .export.safetensors import decode, is_safetensors

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


def looks_like(path: Path) -> bool:
    """Whether `path` is a file charlstm saved as a checkpoint, told cheaply: a torch zip
    whose pickle names charlstm's format (its tensors are not read). For deciding whose
    a file is before writing over it; `load` still checks a checkpoint in full."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            return len(pickles) == 1 and FORMAT.encode() in archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        return False


def load(path: Path) -> dict:
    """Read and check a checkpoint; tensors land on the CPU whatever device saved them.
    A safetensors export (`charlstm export --format safetensors`) is read as a checkpoint
    that holds only what sampling needs."""
    path = find(path)
    if path.suffix == ".safetensors" or is_safetensors(path):
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **decode(path)}
        return _checked(payload, path)
    if path.suffix in (".onnx", ".html") and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} looks like an ONNX or web export, which charlstm "
                              "does not read back; give its checkpoint or a safetensors "
                              "export")
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
    return _checked(payload, path)


def _checked(payload, path: Path) -> dict:
    """The payload, if it is a charlstm checkpoint this version reads."""
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


# What resuming needs beyond what sampling needs (a checkpoint without them only samples)
RESUME_KEYS = ("optimizer", "step", "elapsed", "data", "hidden", "rng", "history",
               "eval_loss")


@dataclass
class Checkpoint:
    """One checkpoint's contents, as plain data and tensors; each field is the file's key
    of the same name (format version 1). Those after `model` may be absent from a file
    written by hand or by an early charlstm; they then hold their defaults."""

    model_config: dict  # ModelConfig.to_dict()
    vocab: dict  # Vocabulary.to_dict()
    model: dict  # the model's state_dict
    charlstm_version: str | None = None
    saved_at: str | None = None  # ISO 8601, UTC
    train_config: dict = field(default_factory=dict)  # TrainConfig.to_dict()
    corpus: dict | None = None  # Corpus.describe(): name, source, characters, sha256
    precision: str | None = None  # the precision the run trained in
    optimizer: dict | None = None
    step: int | None = None
    elapsed: float | None = None  # seconds of the run so far, evaluations included
    data: dict | None = None  # TrainBatches.state_dict(): the data position
    hidden: list | None = None  # the carried state of all B streams, [(L, B, H), ...]
    processes: int | None = None  # processes that trained it (torchrun)
    eval_loss: list | None = None  # [sum, steps] of training loss since the evaluation
    curve: list = field(default_factory=list)  # [step, loss] points since the evaluation
    curve_window: list = field(default_factory=lambda: [0.0, 0])  # [sum, steps] of the next
    rng: dict | None = None  # generator states ("processes": each process's)
    history: list = field(default_factory=list)  # one metrics record per evaluation
    best_val_loss: float | None = None
    time_spent: float | None = None  # the --time used up, once a run has ended by it
    lr_scale: float = 1.0  # the divergence guard's learning-rate factor
    rollbacks: int = 0  # the divergence guard's rollbacks so far
    scaler: dict | None = None  # the fp16 loss scaler's state
    parent: dict | None = None  # a fine-tuning run's start: {path, sha256, step}
    gradients: dict | None = None  # GradientWindow.state_dict(): norms since the evaluation
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, payload: dict) -> "Checkpoint":
        """The record of a dict `load` checked (keys it does not know are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})

    def to_dict(self) -> dict:
        """The file's dict, keys in the order charlstm has always written them."""
        payload = {f.name: getattr(self, f.name) for f in fields(self)}
        del payload["format_version"]  # save puts it first, with the format's name
        first = ("charlstm_version", "saved_at", "model_config", "train_config", "vocab",
                 "corpus", "precision", "model")
        return {**{k: payload.pop(k) for k in first}, **payload}

    def save(self, *paths: Path) -> None:
        save(self.to_dict(), *paths)

    def check_resumable(self) -> None:
        """A CheckpointError unless this checkpoint holds what resuming needs."""
        for key in RESUME_KEYS:
            if getattr(self, key) is None:
                raise CheckpointError(f"the checkpoint cannot resume this run: {key!r}")

    def model_settings(self) -> ModelConfig:
        return ModelConfig.from_dict({**MODEL_SAVED_BEFORE, **self.model_config})

    def vocabulary(self) -> Vocabulary:
        return Vocabulary.from_dict(self.vocab)

    def best_step(self) -> int | None:
        """The step of the evaluation with the best validation loss, if any."""
        best = self.best_val_loss
        return next((r["step"] for r in self.history
                     if best is not None and r.get("val_loss") == best), None)

    def summary(self, path: Path) -> dict:
        """What `charlstm info --json` prints: everything but the tensors."""
        return {
            "path": str(path), "format_version": self.format_version,
            "charlstm_version": self.charlstm_version, "model": self.model_config,
            "parameters": sum(t.numel() for t in self.model.values()),
            "vocab_size": len(self.vocab["chars"]), "vocab": self.vocab["chars"],
            "corpus": self.corpus, "train": self.train_config, "step": self.step,
            "elapsed": self.elapsed, "precision": self.precision,
            "best_val_loss": self.best_val_loss, "best_step": self.best_step(),
            "parent": self.parent, "history": self.history,
        }


def read(path: Path) -> Checkpoint:
    """The checkpoint a path names (see `find`), read and checked (see `load`)."""
    return Checkpoint.from_dict(load(path))
