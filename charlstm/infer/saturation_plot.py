"""The gate saturation plot of `inspect --gates -o FILE.png`, after Karpathy, Johnson and
Fei-Fei's Figure 4: for each layer, one point per unit and gate, at the fraction of steps
the gate spent left-saturated (below 0.1, x) and right-saturated (above 0.9, y).
matplotlib is the optional `[plot]` extra, imported only here, without pyplot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.files import atomic_writer
from ..errors import CharlstmError

COLOURS = {"input": "tab:blue", "forget": "tab:green", "output": "tab:red",
           "reset": "tab:purple", "update": "tab:orange"}


def save_saturation_plot(left: np.ndarray, right: np.ndarray, gates: tuple[str, ...],
                         target: Path, title: str = "") -> None:
    """left, right (layers, gates, units): fractions of steps; the PNG written
    atomically to `target`."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CharlstmError("the plot needs matplotlib: pip install matplotlib "
                            "(charlstm's [plot] extra)") from None
    layers = left.shape[0]
    figure = Figure(figsize=(3.6 * layers + 0.6, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    for n in range(layers):
        axes = figure.add_subplot(1, layers, n + 1)
        for g, gate in enumerate(gates):
            axes.scatter(left[n, g], right[n, g], s=8, alpha=0.5, label=gate,
                         color=COLOURS.get(gate))
        axes.plot([0, 1], [1, 0], color="grey", linewidth=0.6, linestyle=":")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_aspect("equal")
        axes.set_title(f"layer {n}", fontsize=10)
        axes.set_xlabel("fraction left-saturated (< 0.1)")
        if n == 0:
            axes.set_ylabel("fraction right-saturated (> 0.9)")
        axes.legend(fontsize=7, markerscale=2)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    try:
        with atomic_writer(target) as out:
            figure.savefig(out, format="png")
    except OSError as exc:
        raise CharlstmError(f"cannot write {target}: {exc.strerror or exc}") from None
