"""The gradient's size during training: each step's norm before clipping and whether
clipping acted, summed on the device (no extra sync) and read at each progress report
and evaluation.

Exploding gradients are what `--grad-clip` tames: with it, a step whose gradient norm
(the L2 norm over all parameters, as `clip_grad_norm_` returns it) exceeds the threshold
is scaled down to it. The display shows how often that happened since its last report;
each metrics.jsonl record gets the mean and largest norm since the evaluation before,
the steps clipped, the threshold, and a curve of norms for the plot. A step whose
gradient is not finite (skipped by the divergence guard) counts in none of the norms.
"""

from __future__ import annotations

import torch


class GradientWindow:
    """Norms and clips summed on the device since the last report; what the reports
    read, summed on the host until the next evaluation."""

    def __init__(self, device: torch.device, grad_clip: float):
        self.grad_clip = grad_clip  # 0: no clipping
        # norm sum, finite steps, clipped steps: one (3,) float64 tensor, read at once
        self._sums = torch.zeros(3, dtype=torch.float64 if device.type != "mps"
                                 else torch.float32, device=device)
        self._max = torch.zeros((), dtype=self._sums.dtype, device=device)
        # norm sum, finite steps, clipped steps, largest norm: of the report window
        # read off the device so far, and since the last evaluation
        self._window = [0.0, 0, 0, 0.0]
        self._since_eval = [0.0, 0, 0, 0.0]
        self._curve: list[list[float]] = []

    def add(self, norm: torch.Tensor) -> None:
        """One step's norm before clipping (0-d, on the device)."""
        norm = norm.detach().to(self._sums.dtype)
        finite = torch.isfinite(norm)
        clipped = finite & (norm > self.grad_clip) if self.grad_clip > 0 else \
            torch.zeros((), dtype=torch.bool, device=norm.device)
        self._sums += torch.stack([torch.where(finite, norm, 0.0), finite.to(norm.dtype),
                                   clipped.to(norm.dtype)])
        torch.maximum(self._max, torch.where(finite, norm, 0.0), out=self._max)

    def _fold(self) -> None:
        """Move the device's sums into the host's part of the report window."""
        total, steps, clipped = self._sums.tolist()
        largest = self._max.item()
        self._sums.zero_()
        self._max.zero_()
        window = self._window
        self._window = [window[0] + total, window[1] + int(steps),
                        window[2] + int(clipped), max(window[3], largest)]

    def take_report(self, step: int) -> tuple[float, int, int]:
        """(mean norm, steps clipped, steps with a finite norm) since the last report,
        read off the device (the report syncs anyway); kept for the next evaluation."""
        self._fold()
        total, steps, clipped, largest = self._window
        self._window = [0.0, 0, 0, 0.0]
        kept = self._since_eval
        self._since_eval = [kept[0] + total, kept[1] + steps, kept[2] + clipped,
                            max(kept[3], largest)]
        mean = total / steps if steps else float("nan")
        if steps:
            self._curve.append([step, mean])
        return mean, clipped, steps

    def take_eval(self, step: int) -> dict:
        """The evaluation record's gradient fields, for the steps since the one before."""
        self.take_report(step)
        total, steps, clipped, largest = self._since_eval
        self._since_eval = [0.0, 0, 0, 0.0]
        curve, self._curve = self._curve, []
        return {"grad_norm": total / steps if steps else None,
                "grad_norm_max": largest if steps else None,
                "grad_clipped": clipped, "grad_steps": steps,
                "grad_clip": self.grad_clip or None, "grad_curve": curve}

    def discard(self) -> None:
        """Forget the steps since the last evaluation (a rollback undid them)."""
        self._fold()
        self._window, self._since_eval, self._curve = [0.0, 0, 0, 0.0], [0.0, 0, 0, 0.0], []

    def state_dict(self) -> dict:
        """What a checkpoint keeps, so that a resumed run reports as an uninterrupted
        one would (float64 sums of float32 norms are exact)."""
        self._fold()
        return {"window": list(self._window), "since_eval": list(self._since_eval),
                "curve": [list(point) for point in self._curve]}

    def load_state_dict(self, state: dict) -> None:
        self._window = list(state["window"])
        self._since_eval = list(state["since_eval"])
        self._curve = [list(point) for point in state["curve"]]
