"""Looking inside a model over a text: which units track which properties of the text
(`UnitCorrelations`), how often each gate saturates (`GateSaturation`), the value of
chosen units (`Unit`), and the likeliest next characters (`top_guesses`).

All of them take the chunks of a `states.StateWalk` one after another and keep running
sums only, so a text of any length costs bounded memory. A unit is one number of one
layer's state: `Unit(layer, index, kind)`, with layers and units counted from 0 as torch
names them (`weight_ih_l0`), kind "hidden" or "cell" (the LSTM's only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..model.charrnn import ModelConfig
from .properties import NAMES, PROPERTIES
from .states import SIGMOID_GATES, STATE_KINDS, Chunk

MIN_FIND_CHARS = 100  # the shortest text whose correlations --find reports
EXCERPT_CHARS = 400  # characters kept from the start to show the best units on
SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9  # the paper's thresholds


@dataclass(frozen=True)
class Unit:
    layer: int
    index: int
    kind: str = "hidden"  # or "cell"

    def __str__(self) -> str:
        return f"{self.layer}:{self.index} ({self.kind})"


def parse_unit(spec: str, kind: str, config: ModelConfig) -> Unit:
    """'LAYER:UNIT' (from 0) as a Unit of `kind`, checked against the model's shape."""
    check_state_kind(kind, config)
    layer, colon, index = spec.partition(":")
    try:
        unit = Unit(int(layer), int(index), kind)
    except ValueError:
        raise UsageError(f"a unit is LAYER:UNIT, counted from 0, e.g. 0:17, not {spec!r}")
    if not colon:
        raise UsageError(f"a unit is LAYER:UNIT, counted from 0, e.g. 0:17, not {spec!r}")
    shape = (f"the model is {config.model.upper()} {config.num_layers}x{config.hidden_size}: "
             f"layers 0-{config.num_layers - 1}, units 0-{config.hidden_size - 1}")
    if not 0 <= unit.layer < config.num_layers:
        raise UsageError(f"no layer {unit.layer}: {shape}")
    if not 0 <= unit.index < config.hidden_size:
        raise UsageError(f"no unit {unit.index}: {shape}")
    return unit


def check_state_kind(kind: str, config: ModelConfig) -> None:
    if kind not in STATE_KINDS[config.model]:
        only = " and ".join(STATE_KINDS[config.model])
        raise UsageError(f"a {config.model.upper()} has no {kind} state, only {only}"
                         if kind in ("hidden", "cell") else
                         f"the state is hidden or cell, not {kind!r}")


def unit_values(chunk: Chunk, unit: Unit) -> np.ndarray:
    """The unit's value at each character of the chunk (T,)."""
    return chunk.layers[unit.layer].state(unit.kind)[:, unit.index]


def top_guesses(log_probs: np.ndarray, vocab_chars: str, k: int) -> list[list[tuple]]:
    """For each row of log-probabilities (T, V), the k likeliest characters as
    (char, probability), likeliest first."""
    k = min(k, log_probs.shape[1])
    best = np.argpartition(-log_probs, k - 1, axis=1)[:, :k]  # (T, k), unordered
    picked = np.take_along_axis(log_probs, best, axis=1)
    order = np.argsort(-picked, axis=1, kind="stable")
    best, picked = (np.take_along_axis(a, order, axis=1) for a in (best, picked))
    probabilities = np.exp(picked.astype(np.float64))
    return [[(vocab_chars[i], float(p)) for i, p in zip(row, prob)]
            for row, prob in zip(best.tolist(), probabilities)]


# ------------------------------------------------------------------- correlations


@dataclass
class Finding:
    """One property's best units, best first, with their correlation over the text."""
    property: str
    description: str
    units: list[tuple[Unit, float]]  # (unit, Pearson correlation), by |correlation|
    constant: bool = False  # the property never changed in the text: nothing to correlate


class UnitCorrelations:
    """Pearson's correlation of every unit (every layer, hidden and cell) with every
    property of `properties.NAMES`, from running sums over the chunks (float64, each
    centred on its first chunk's mean, so long texts keep their precision). It keeps the
    start of the text and its states, to colour an excerpt with a unit found."""

    def __init__(self, config: ModelConfig):
        self.units = [Unit(layer, index, kind) for layer in range(config.num_layers)
                      for kind in STATE_KINDS[config.model]
                      for index in range(config.hidden_size)]
        self.count = 0
        self.shift_x = self.shift_y = None
        self.sum_x = self.sum_xx = self.sum_y = self.sum_yy = self.sum_xy = None
        self.excerpt_text, self._excerpt_rows = "", []

    @staticmethod
    def _columns(chunk: Chunk) -> np.ndarray:
        """Every unit's values over the chunk (T, N), in `units` order."""
        return np.concatenate([layer.state(kind) for layer in chunk.layers
                               for kind in ("hidden", "cell")
                               if layer.state(kind) is not None], axis=1)

    def add(self, chunk: Chunk, properties: np.ndarray) -> None:
        """Take in a chunk and its (T, P) text properties."""
        x = self._columns(chunk).astype(np.float64)  # (T, N)
        y = properties  # (T, P)
        if not len(x):
            return
        if self.shift_x is None:
            self.shift_x, self.shift_y = x.mean(axis=0), y.mean(axis=0)
            self.sum_x, self.sum_xx = np.zeros(x.shape[1]), np.zeros(x.shape[1])
            self.sum_y, self.sum_yy = np.zeros(y.shape[1]), np.zeros(y.shape[1])
            self.sum_xy = np.zeros((x.shape[1], y.shape[1]))
        x, y = x - self.shift_x, y - self.shift_y
        self.count += len(x)
        self.sum_x += x.sum(axis=0)
        self.sum_xx += (x * x).sum(axis=0)
        self.sum_y += y.sum(axis=0)
        self.sum_yy += (y * y).sum(axis=0)
        self.sum_xy += x.T @ y  # (N, P)
        if len(self.excerpt_text) < EXCERPT_CHARS:
            room = EXCERPT_CHARS - len(self.excerpt_text)
            self.excerpt_text += chunk.text[:room]
            self._excerpt_rows.append(self._columns(chunk)[:room])

    def correlations(self) -> np.ndarray:
        """(N, P): each unit's correlation with each property; nan where either never
        changed over the text."""
        if self.count < MIN_FIND_CHARS:
            raise UsageError(f"the text is too short to correlate: {self.count} "
                             f"character(s), and --find needs at least {MIN_FIND_CHARS}")
        n = self.count
        covariance = self.sum_xy - np.outer(self.sum_x, self.sum_y) / n
        var_x = np.maximum(self.sum_xx - self.sum_x ** 2 / n, 0.0)
        var_y = np.maximum(self.sum_yy - self.sum_y ** 2 / n, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.sqrt(np.outer(var_x, var_y))
            return np.where(scale > 1e-12 * n, covariance / scale, np.nan)

    def findings(self, best: int = 5) -> list[Finding]:
        """For each property, its `best` units by the size of their correlation."""
        table = self.correlations()
        found = []
        for p, name in enumerate(NAMES):
            column = table[:, p]
            if np.isnan(column).all():
                found.append(Finding(name, PROPERTIES[name], [], constant=True))
                continue
            order = np.argsort(-np.nan_to_num(np.abs(column), nan=-1.0), kind="stable")
            found.append(Finding(name, PROPERTIES[name],
                                 [(self.units[i], float(column[i])) for i in order[:best]]))
        return found

    def excerpt(self, unit: Unit) -> tuple[str, np.ndarray]:
        """The start of the text and the unit's value at each of its characters."""
        rows = np.concatenate(self._excerpt_rows) if self._excerpt_rows else np.zeros((0, 0))
        column = self.units.index(unit)
        return self.excerpt_text, rows[:, column] if rows.size else np.zeros(0)


# ------------------------------------------------------------------- saturation


class GateSaturation:
    """For each layer, gate and unit: the fraction of steps the gate spent below 0.1
    (left-saturated) and above 0.9 (right-saturated), as Karpathy et al.'s Figure 4
    plots them. Counted over the chunks; the chunks must carry the gates."""

    def __init__(self, config: ModelConfig):
        self.gates = SIGMOID_GATES[config.model]
        if not self.gates:
            raise UsageError(f"a {config.model.upper()} has no gates to saturate (an LSTM "
                             "or a GRU has)")
        shape = (config.num_layers, len(self.gates), config.hidden_size)
        self.low, self.high = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        self.count = 0

    def add(self, chunk: Chunk) -> None:
        for n, layer in enumerate(chunk.layers):
            for g, name in enumerate(self.gates):
                values = layer.gates[name]  # (T, H)
                self.low[n, g] += (values < SATURATION_LOW).sum(axis=0)
                self.high[n, g] += (values > SATURATION_HIGH).sum(axis=0)
        self.count += len(chunk.text)

    def fractions(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right): each (layers, gates, units), fractions of the steps."""
        if not self.count:
            raise UsageError("the text is empty: there are no steps to count")
        return self.low / self.count, self.high / self.count

    def table(self) -> list[dict]:
        """One row per layer and gate: the mean fractions over its units, and how many
        units spend most of the text saturated on each side."""
        left, right = self.fractions()
        rows = []
        for n in range(left.shape[0]):
            for g, name in enumerate(self.gates):
                rows.append({"layer": n, "gate": name,
                             "left": float(left[n, g].mean()),
                             "right": float(right[n, g].mean()),
                             "mostly_left": int((left[n, g] > 0.5).sum()),
                             "mostly_right": int((right[n, g] > 0.5).sum()),
                             "units": int(left.shape[2])})
        return rows
