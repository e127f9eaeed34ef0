"""The models a server serves: each loaded once, named after its run folder, with its card.

A request names a model by `id`: the run folder's name (`checkpoints/shakespeare-lstm`
serves as "shakespeare-lstm"), or a checkpoint file's stem when the file is not a run's
best.pt / last.pt; a second model of the same name gets "-2", and so on. Each model has
an asyncio lock: scores (and completions, with batching off) take turns at it, one time
slice each (see `app`); completions are otherwise stepped together (see `batcher`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .. import checkpoint
from ..api import LanguageModel, load

RUN_FILES = ("best.pt", "last.pt")


@dataclass
class ServedModel:
    name: str
    lm: LanguageModel
    card: dict  # what `charlstm info --json` prints, plus OpenAI's id, object, created
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def model_name(path: Path) -> str:
    """A run folder's name, or a loose checkpoint file's stem."""
    path = Path(path).expanduser().resolve()
    if path.is_file() and path.name in RUN_FILES:
        return path.parent.name
    return path.stem if path.is_file() else path.name


def load_models(paths: list[Path], device: str) -> dict[str, ServedModel]:
    """Each checkpoint at `paths`, by unique name, in the order given."""
    served: dict[str, ServedModel] = {}
    for given in paths:
        path = checkpoint.find(Path(given))
        base = name = model_name(Path(given))
        suffix = 2
        while name in served:
            name, suffix = f"{base}-{suffix}", suffix + 1
        lm = load(path, device)
        record = lm.checkpoint  # read once, by load
        served[name] = ServedModel(name, lm, {"id": name, "object": "model",
                                              "created": _created(record.saved_at),
                                              "owned_by": "charlstm", **record.summary(path)})
    return served


def _created(saved_at: str | None) -> int:
    """The checkpoint's save time as Unix seconds (OpenAI's `created`), else 0."""
    try:
        return int(datetime.fromisoformat(saved_at).timestamp()) if saved_at else 0
    except (TypeError, ValueError):
        return 0
