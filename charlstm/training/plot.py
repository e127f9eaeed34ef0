"""The training plot: loss in bits per character against step, as a PNG in the run folder.

Training loss is drawn from the curve points each evaluation record carries (a mean over
every few steps), validation loss from the evaluations themselves, with a marker at each
evaluation (where a checkpoint and a milestone sample were written), a star at each new
best, and a dotted line at each pass over the corpus; below, the gradient norm before
clipping and the clipping threshold (for runs that record them). matplotlib is an optional extra
(`pip install matplotlib`, or the `[plot]` extra); it is imported only here, without
pyplot's global state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import BinaryIO

from ..errors import CharlstmError, UsageError
from ..data.files import atomic_writer

PLOT_NAME = "loss.png"
# the PNG's Software text: how charlstm knows a plot it may write over is its own
SOFTWARE = "charlstm"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
INSTALL_HINT = "pip install matplotlib (charlstm's [plot] extra)"
LN2 = math.log(2)


class PlottingUnavailable(CharlstmError):
    """matplotlib is not installed."""


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def title(run_name: str, model_config: dict, corpus_name: str | None, step: int) -> str:
    """A run's plot title: its folder, model, corpus and step."""
    return (f"{run_name}: {model_config['model'].upper()} {model_config['num_layers']}x"
            f"{model_config['hidden_size']} on {corpus_name or '?'}, step {step:,}")


def software(path: Path) -> str | None:
    """The Software text of a PNG file (what wrote it), None if it has none or is no
    PNG: read from its text chunks, which come before the image data."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != PNG_SIGNATURE:
                return None
            while True:
                header = f.read(8)
                if len(header) < 8 or header[4:] in (b"IDAT", b"IEND"):
                    return None
                length, kind = int.from_bytes(header[:4], "big"), header[4:]
                if length > 1 << 20:
                    return None
                data = f.read(length)
                f.seek(4, 1)  # the chunk's CRC
                if kind == b"tEXt" and data.startswith(b"Software\0"):
                    return data[len(b"Software\0"):].decode("latin-1")
    except OSError:
        return None


def is_own(path: Path) -> bool:
    """Whether the PNG at `path` is a plot charlstm wrote: it says so, or it was drawn by
    matplotlib beside a charlstm checkpoint (a plot from before charlstm marked them)."""
    made_by = software(path) or ""
    if made_by == SOFTWARE:
        return True
    from ..checkpoint import looks_like

    return made_by.startswith("Matplotlib") and any(
        looks_like(Path(path).parent / name) for name in ("last.pt", "best.pt"))


def save(history: list[dict], target: Path, title: str = "") -> None:
    """Write the plot to `target` atomically (the old file stays whole on a failure).
    A file already there is replaced only if it is a plot of charlstm's (`is_own`)."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not is_own(target)):
        raise UsageError(f"{target} exists and charlstm did not write it: it is left as "
                         "it is")
    try:
        with atomic_writer(target) as f:
            plot_history(history, f, title)
    except OSError as exc:
        raise CharlstmError(f"cannot write {target}: {exc.strerror or exc}") from exc


def plot_history(history: list[dict], path: Path | BinaryIO, title: str = "") -> None:
    """Write the plot of an evaluation history (metrics.jsonl records) to a file."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlottingUnavailable(f"plotting needs matplotlib: {INSTALL_HINT}") from None
    if not history:
        raise CharlstmError("nothing to plot: the run has no evaluations yet")
    gradients = _gradient_curve(history)
    figure = Figure(figsize=(8, 6.5 if gradients else 4.5), dpi=100)
    FigureCanvasAgg(figure)
    if gradients:
        axes, below = figure.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
        _plot_gradients(below, gradients, history)
    else:
        axes = figure.add_subplot()
    train = _training_curve(history)
    if train:
        axes.plot(*zip(*train), color="tab:blue", linewidth=1.2, label="training")
    evaluated = [r for r in history if r.get("val_loss") is not None]
    if evaluated:
        steps = [r["step"] for r in evaluated]
        axes.plot(steps, [r["val_loss"] / LN2 for r in evaluated], color="tab:orange",
                  marker="o", markersize=4, linewidth=1.6,
                  label="validation (at each evaluation and checkpoint)")
        best = [r for r in evaluated if r.get("best")]
        axes.plot([r["step"] for r in best], [r["val_loss"] / LN2 for r in best],
                  linestyle="none", marker="*", markersize=11, color="tab:red",
                  label="new best (best.pt)")
        last = evaluated[-1]
        axes.annotate(f"{last['val_loss'] / LN2:.3f}", (last["step"], last["val_loss"] / LN2),
                      textcoords="offset points", xytext=(4, 6), fontsize=8)
    for step in _epoch_starts(history):
        axes.axvline(step, color="grey", linestyle=":", linewidth=0.8)
    (below if gradients else axes).set_xlabel(
        "step (dotted lines: passes over the training text)")
    axes.set_ylabel("loss, bits per character")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": SOFTWARE})


def _training_curve(history: list[dict]) -> list[tuple[int, float]]:
    """(step, bits/char) points: the fine curve where records have one, else one point
    per evaluation (its mean training loss)."""
    points = []
    for record in history:
        curve = record.get("train_curve")
        if curve:
            points.extend((step, loss / LN2) for step, loss in curve)
        elif record.get("train_loss") is not None:
            points.append((record["step"], record["train_loss"] / LN2))
    return points


def _gradient_curve(history: list[dict]) -> list[tuple[int, float]]:
    """(step, mean gradient norm before clipping) points, from each record's curve."""
    return [(step, norm) for record in history
            for step, norm in record.get("grad_curve") or []]


def _plot_gradients(axes, points: list[tuple[int, float]], history: list[dict]) -> None:
    """The gradient norm before clipping, and the clipping threshold where it was on."""
    axes.plot(*zip(*points), color="tab:green", linewidth=1.0, label="gradient norm "
              "(before clipping)")
    thresholds = [(r["step"], r.get("grad_clip")) for r in history]
    if any(clip for _, clip in thresholds):
        steps = [0] + [step for step, _ in thresholds]
        clips = [thresholds[0][1]] + [clip for _, clip in thresholds]
        axes.step(steps, [c if c else float("nan") for c in clips], where="pre",
                  color="tab:red", linestyle="--", linewidth=1.0,
                  label="clipping threshold (--grad-clip)")
    clipped = sum(r.get("grad_clipped") or 0 for r in history)
    steps = sum(r.get("grad_steps") or 0 for r in history)
    if steps:
        axes.set_title(f"clipping acted on {clipped:,} of {steps:,} steps", fontsize=9)
    axes.set_yscale("log")
    axes.set_ylabel("gradient norm")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)


def _epoch_starts(history: list[dict]) -> list[float]:
    """Steps (interpolated between evaluations) at which each whole pass was completed."""
    starts, previous = [], (0, 0.0)
    for record in history:
        step, epoch = record["step"], record.get("epoch") or 0.0
        for whole in range(math.floor(previous[1]) + 1, math.floor(epoch) + 1):
            fraction = (whole - previous[1]) / (epoch - previous[1])
            starts.append(previous[0] + fraction * (step - previous[0]))
        previous = (step, epoch)
    return starts
