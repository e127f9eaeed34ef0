"""What a training run reports: the callback it calls and the records it passes.

`TrainingCallback` receives the run's start, its progress (`StepStats`), evaluations,
milestone samples, notices and its end (`TrainResult`); the trainer never prints.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("charlstm.training")


@dataclass
class StepStats:
    step: int
    epoch: float  # passes over the training split so far
    loss: float  # mean training loss (nats per character) since the last report
    lr: float
    chars_per_sec: float
    elapsed: float  # wall-clock seconds of the run so far, evaluations and resumes included
    grad_norm: float = math.nan  # mean gradient norm before clipping since the last report
    clipped: int = 0  # steps since the last report whose gradient was clipped
    grad_steps: int = 0  # steps since the last report with a finite gradient norm


@dataclass
class TrainResult:
    step: int
    reason: str  # "max_steps", "epochs", "time", "interrupted" or "already finished"
    run_dir: Path
    best_val_loss: float | None
    history: list[dict] = field(default_factory=list)

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path | None:
        path = self.run_dir / "best.pt"
        return path if path.exists() else None


class TrainingCallback:
    """Receives what a run does; override what you need (the default ignores all)."""

    def on_start(self, info: dict) -> None: ...

    def on_step(self, stats: StepStats) -> None: ...

    def on_eval(self, record: dict) -> None: ...

    def on_sample(self, step: int, text: str) -> None: ...

    def on_notice(self, message: str) -> None:
        """Something the user should know that does not stop the run (a skipped step);
        logged as a warning unless overridden."""
        log.warning("%s", message)

    def on_end(self, result: TrainResult) -> None: ...


class Quiet(TrainingCallback):
    """What the processes other than the main one report to: nothing at all."""

    def on_notice(self, message: str) -> None: ...
