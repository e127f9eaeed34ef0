"""Training-loss bookkeeping: what the loop sums between its reports and evaluations.

Each step's loss stays on the device, summed in a `ReportWindow`; every LOG_EVERY steps
the window is read (one device sync) and folded into a `LossTally`, which holds the sums
for the next evaluation's training loss and for the plot curve's next point. Both sums
are part of the checkpoint, so a resumed run reports exactly what an unbroken one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import clock
from ..infer.streams import sum_dtype

LOG_EVERY = 10  # steps between progress reports (each one reads the loss off the device)
CURVE_POINTS = 20  # about this many training-loss points per evaluation, for plots


def curve_every(eval_every: int) -> int:
    """Steps between the training-loss curve's points: a multiple of LOG_EVERY."""
    return LOG_EVERY * max(1, eval_every // (CURVE_POINTS * LOG_EVERY))


@dataclass
class LossTally:
    """Training loss summed on the host: since the last evaluation (for its record) and
    for the plot curve's next point, with the curve's points since the evaluation."""
    eval_sum: float = 0.0
    eval_steps: int = 0
    curve: list = field(default_factory=list)  # [step, mean loss] points
    curve_sum: float = 0.0
    curve_steps: int = 0

    def add(self, loss_sum: float, steps: int) -> None:
        self.eval_sum += loss_sum
        self.eval_steps += steps
        self.curve_sum += loss_sum
        self.curve_steps += steps

    def add_curve_point(self, step: int) -> None:
        """The curve's next point: the mean loss since the last one (if any steps)."""
        if self.curve_steps:
            self.curve.append([step, self.curve_sum / self.curve_steps])
            self.curve_sum, self.curve_steps = 0.0, 0

    def take_eval_mean(self) -> float:
        """The mean loss since the last evaluation, for this one; the sum starts again."""
        mean = self.eval_sum / max(self.eval_steps, 1)
        self.eval_sum, self.eval_steps = 0.0, 0
        return mean

    def take_curve(self) -> list:
        """The curve's points since the last evaluation, for this one; a new curve starts."""
        curve, self.curve = self.curve, []
        return curve


class ReportWindow:
    """Training loss summed on the device since the last report, and the steps it is over
    (skipped ones included), with the characters they trained. float64 sums of float32
    losses are exact, so a window split by a resume adds up to the same bits as an
    uninterrupted one."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=sum_dtype(device), device=device)
        self.steps, self.chars, self.started = 0, 0, clock.now()

    def add(self, loss: torch.Tensor, bad: torch.Tensor, chars: int = 0) -> None:
        self.loss += loss.masked_fill(bad, 0.0)  # a skipped step's loss counts for nothing
        self.steps += 1
        self.chars += chars

    def fold_into(self, tally: LossTally, skipped: int) -> tuple[float, int]:
        """The summed loss and its good steps (`skipped` of the window's were not), read
        off the device and added to `tally`; the window empties."""
        loss, good = self.loss.item(), self.steps - skipped
        self.discard()
        tally.add(loss, good)
        return loss, good

    def discard(self) -> None:
        self.loss.zero_()
        self.steps = self.chars = 0
