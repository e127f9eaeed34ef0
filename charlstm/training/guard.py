"""The divergence guard: what training does when a step's loss is not finite.

A bad step (a loss or gradient that is not finite) updates nothing and is skipped. A few
in a row mean the run is diverging: it rolls back to the state of its last save (the same
record the save wrote, kept in memory: see `keep`) with half the learning rate. After MAX_ROLLBACKS of those it gives up
with TrainingDiverged, pointing at the last good checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch

from ..checkpoint import Checkpoint
from ..errors import TrainingDiverged

BAD_STEPS_BEFORE_ROLLBACK = 3  # non-finite steps in a row that are skipped before rolling back
MAX_ROLLBACKS = 5  # rollbacks (each halving the learning rate) before giving up


class DivergenceGuard:
    def __init__(self, notice: Callable[[str], None], last_checkpoint: Path,
                 lr_scale: float = 1.0, rollbacks: int = 0):
        """`notice` tells the user of each skip and rollback; `last_checkpoint` is where
        the run's last save goes (named when giving up)."""
        self.notice, self.last_checkpoint = notice, last_checkpoint
        self.lr_scale, self.rollbacks = lr_scale, rollbacks  # saved in checkpoints
        self.bad_steps = 0  # bad steps in a row
        self._kept: Checkpoint | None = None

    def keep(self, saved: Checkpoint) -> None:
        """Keep a copy in memory of the run's state as a save wrote it (state.capture):
        what a rollback restores."""
        self._kept = copy.deepcopy(saved)

    def kept(self) -> Checkpoint:
        """A copy of the state kept last, to restore (the kept one stays usable for a
        further rollback)."""
        return copy.deepcopy(self._kept)

    def settle(self, pending: list[tuple[int, torch.Tensor]]) -> int | None:
        """Read the bad-step flags of the steps since the last report (one device sync)
        and judge each bad step in order: how many were skipped, or None if the run must
        roll back (see `roll_back`), which undoes the later steps too."""
        if not pending:
            return 0
        flags = torch.stack([bad for _, bad in pending]).tolist()
        steps = [step for step, _ in pending]
        pending.clear()
        for step, bad in zip(steps, flags):
            if not bad:
                self.bad_steps = 0
            elif self._rolls_back(step):
                return None
        return sum(flags)

    def _rolls_back(self, step: int) -> bool:
        self.bad_steps += 1
        if self.bad_steps < BAD_STEPS_BEFORE_ROLLBACK:
            self.notice(f"step {step:,}: the loss or a gradient was not finite; "
                        "skipped the update")
            return False
        if self.rollbacks >= MAX_ROLLBACKS:
            last = self.last_checkpoint
            kept = (f"the last good checkpoint is {last}" if last.exists() else
                    "nothing was saved, as it diverged before its first evaluation")
            raise TrainingDiverged.naming(
                f"training diverged: the loss was not finite at step {step:,} even "
                f"after {self.rollbacks} rollbacks, with the learning rate down to "
                f"{self.lr_scale:g} of its schedule; {kept} (try a lower {{lr}} or "
                "{grad_clip})")
        self.rollbacks += 1
        self.lr_scale *= 0.5
        self.notice(f"step {step:,}: {self.bad_steps} non-finite steps in a row; rolled "
                    f"back to step {self._kept.step:,} with the learning rate at "
                    f"{self.lr_scale:g} of its schedule (rollback {self.rollbacks} of at "
                    f"most {MAX_ROLLBACKS})")
        self.bad_steps = 0
        return True
