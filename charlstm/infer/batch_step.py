"""Many independent generations stepped together as one batch, each with its own picks.

A server's concurrent requests are generations that start and end at different times.
`BatchStepper` steps all of them together through one `Stepper`: `join` primes a new
generation (its primes through the model on their own, as `generate` does) and adds its
rows at the next step; `leave` drops one; `step` picks and steps every row at once, a
block of up to `max_steps` characters in one call (`Stepper.run`), and returns each
generation's ids. Each generation keeps its own options and `torch.Generator` in its own
`Picker`, which draws the same noise, step for step, as it would alone.

Exactness. A seeded generation has to give the same text whoever else is in the batch,
so a row's arithmetic must not depend on the other rows or on their number. The
pointwise ops and the row gather act on each row alone; the matrix products need not:
MKL multiplies one to three rows with other kernels than four or more (a matrix-vector
product sums in another order), and at some sizes its last rows with others again, and
their last bits differ. So `safe_sizes` measures once per model, on this machine, at
which batch sizes every row of a few steps comes out bitwise the same as in a batch of
the largest size with the rows in reverse order; while an `exact` generation is in the
batch, it is padded with idle rows up to the next such size, so every exact generation,
alone or not, runs on the same arithmetic. Generations without a seed are not padded:
one of them alone steps at batch 1, by the fastest way there. (An exact generation's
text may differ from `generate`'s for the same seed, which steps a lone sample by
whichever way is fastest at batch 1.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..data.vocab import Vocabulary
from ..model.charrnn import CharRNN
from ..model.stepper import Stepper
from .generate import check_options, check_prime, prime_each
from .picking import Picker, pick
from .step_choice import SPLIT, chosen_step, fastest_step

log = logging.getLogger(__name__)

PROBE_STEPS = 3  # steps compared by safe_sizes


@dataclass(eq=False)
class Generation:
    """One generation's rows in the batch: `count` samples, its picker and its steps left
    (None: endless). `logits` and `state` hold its primed start until it is first
    stepped."""

    count: int
    picker: Picker
    left: int | None
    exact: bool  # its text must not depend on the others in the batch (it has a seed)
    logits: torch.Tensor | None = None  # (count, V) until first stepped
    state: object = None
    first_row: int = field(default=-1)  # where its rows start in the batch, once in it

    @property
    def greedy(self) -> bool:
        return self.picker.options[0] == 0


class BatchStepper:
    """The generations stepped together on one model, up to `max_rows` samples in all
    (use it from one thread). `lone` steps a single inexact sample; by default a
    `Stepper` with `split_inputs` where step_choice found that fastest at batch 1."""

    def __init__(self, model: CharRNN, vocab: Vocabulary, max_rows: int,
                 lone: Stepper | None = None):
        self.model, self.vocab, self.max_rows = model, vocab, max_rows
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            self.whole = Stepper(model)
            self.safe = safe_sizes(model, max_rows)
            self.lone = lone or _fastest_lone(model, self.whole)
        self.stepper = self.whole  # the one the last step ran on
        self.generations: list[Generation] = []
        self._changed = False  # generations joined or left since the last step

    @property
    def rows(self) -> int:
        """The rows of the generations in the batch (idle padding not counted)."""
        return sum(g.count for g in self.generations)

    def join(self, primes: list[str], length: int, temperature: float,
             top_p: float | None, generator: torch.Generator, exact: bool,
             top_k: int | None = None) -> Generation:
        """A new generation of one sample per prime, `length` characters each (0:
        endless), stepped from the next `step` on; `exact` ones give the same ids whoever
        else is in the batch. Raises UsageError for bad options, ValueError when the
        batch has no room for its rows."""
        check_options(temperature, top_k, top_p, length, len(primes))
        if self.rows + len(primes) > self.max_rows:
            raise ValueError(f"{len(primes)} more rows do not fit in a batch of "
                             f"{self.max_rows}")
        for prime in primes:
            check_prime(prime, self.vocab)
        with torch.inference_mode():
            logits, state = prime_each(self.model, self.vocab, primes)
            if state is None:
                state = self.model.initial_state(len(primes), self.device)
        generation = Generation(len(primes), Picker(temperature, top_k, top_p, generator,
                                                    length), length or None, exact,
                                logits, state)
        self.generations.append(generation)
        self._changed = True
        return generation

    def leave(self, generation: Generation) -> None:
        self.generations.remove(generation)
        self._changed = True

    def step(self, max_steps: int) -> list[list[list[int]]]:
        """Pick and step every generation up to `max_steps` times (fewer when one's
        length or noise ends sooner, one when one picks with top-p or top-k): for each
        generation, in order, the ids of each step, one per sample."""
        if not self.generations:
            return []
        with torch.inference_mode():
            logits, state = self._compose() if self._changed else (
                self.stepper.logits, self.stepper.state)
            steps = self._steps_now(logits, max_steps)
            if steps == 0:
                return [[] for _ in self.generations]
            noise = self._noise(logits, steps)  # (k, B, V)
            ids = self.stepper.run(noise, logits, state).tolist()  # (k, B)
        chosen = []
        for generation in self.generations:
            rows = slice(generation.first_row, generation.first_row + generation.count)
            chosen.append([step_ids[rows] for step_ids in ids])
            if generation.left is not None:
                generation.left -= steps
        return chosen

    def _steps_now(self, logits: torch.Tensor, max_steps: int) -> int:
        """As many steps as every generation can take now."""
        steps = max_steps
        for generation in self.generations:
            if generation.left is not None:
                steps = min(steps, generation.left)
            if generation.picker.fast:
                steps = min(steps, generation.picker.ready(self._rows_of(logits, generation)))
            elif not generation.greedy:
                steps = min(steps, 1)  # its pick needs each step's logits
        return steps

    def _noise(self, logits: torch.Tensor, steps: int) -> torch.Tensor:
        """What `Stepper.run` adds to each step's logits before its argmax: each
        generation's own Gumbel noise; zeros for greedy ones and idle rows; for a pick
        made here (top-p, top-k), 0 at the chosen id and -inf elsewhere."""
        noise = torch.zeros(steps, logits.size(0), logits.size(1), device=self.device)
        for generation in self.generations:
            rows = slice(generation.first_row, generation.first_row + generation.count)
            if generation.picker.fast:
                noise[:, rows] = generation.picker.take(logits[rows], steps)
            elif not generation.greedy:
                picked = pick(logits[rows], *generation.picker.options)  # (count,)
                noise[0, rows] = float("-inf")
                noise[0, rows].scatter_(1, picked[:, None], 0.0)
        return noise

    @staticmethod
    def _rows_of(logits: torch.Tensor, generation: Generation) -> torch.Tensor:
        return logits[generation.first_row:generation.first_row + generation.count]

    def _compose(self) -> tuple[torch.Tensor, object]:
        """The batch's logits (B, V) and state after joins and leaves: the rows of the
        generations still in it, as the last step left them, then the new ones' primed
        starts, then idle rows up to the size `_padded` gives."""
        logits_parts, state_parts, row = [], [], 0
        for generation in self.generations:
            if generation.logits is None:  # stepped before: its rows in the stepper
                rows = slice(generation.first_row, generation.first_row + generation.count)
                logits_parts.append(self.stepper.logits[rows])
                state_parts.append(_rows(self.stepper.state, rows))
            else:
                logits_parts.append(generation.logits)
                state_parts.append(generation.state)
                generation.logits = generation.state = None
            generation.first_row, row = row, row + generation.count
        idle = self._padded(row) - row
        if idle:
            logits_parts.append(torch.zeros(idle, logits_parts[0].size(1), device=self.device))
            state_parts.append(self.model.initial_state(idle, self.device))
        self._changed = False
        alone = row == 1 and not any(g.exact for g in self.generations)
        self.stepper = self.lone if alone else self.whole
        return torch.cat(logits_parts), _cat(state_parts)

    def _padded(self, rows: int) -> int:
        """The batch size for `rows` rows: with an exact generation in, the next safe
        size (see the module's docstring)."""
        if not any(g.exact for g in self.generations):
            return rows
        return next((size for size in self.safe if size >= rows), max(rows, self.max_rows))


def _rows(state, rows: slice):
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def _cat(states: list):
    """States (layers, n, hidden) per tensor, joined along their rows (copies)."""
    if isinstance(states[0], tuple):
        return tuple(torch.cat([s[i] for s in states], dim=1) for i in range(len(states[0])))
    return torch.cat(states, dim=1)


def safe_sizes(model: CharRNN, largest: int) -> list[int]:
    """The batch sizes up to `largest` at which each row's steps come out bitwise the
    same as at the other safe sizes, on this machine: each size's batch steps the first
    rows of a random state, and every row is compared with the same row stepped in a
    batch of `largest` rows in reverse order. Call it under `torch.inference_mode`."""
    stepper = Stepper(model)
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    shape = (model.config.num_layers, largest, model.config.hidden_size)
    parts = 2 if model.config.model == "lstm" else 1
    state = [torch.randn(shape, generator=generator).to(device) for _ in range(parts)]
    logits = torch.randn(largest, model.config.vocab_size, generator=generator).to(device)
    order = torch.arange(largest - 1, -1, -1, device=device)
    reference = _probe(stepper, logits[order], [s[:, order] for s in state])
    reference = [tensor[order] for tensor in reference]  # back in the probe's row order
    safe = [size for size in range(1, largest + 1)
            if _same_rows(_probe(stepper, logits[:size], [s[:, :size] for s in state]),
                          reference)]
    if not safe:
        log.warning("no batch size gives each row the same arithmetic here: seeded texts "
                    "may depend on the other requests being served")
    return safe


def _fastest_lone(model: CharRNN, whole: Stepper) -> Stepper:
    """The stepper for one sample alone: with its input products in halves where
    step_choice measures that fastest at batch 1, else `whole`."""
    fastest_step(model, 1)
    return Stepper(model, split_inputs=True) if chosen_step(model, 1) == SPLIT else whole


def _probe(stepper: Stepper, logits: torch.Tensor, state: list) -> list[torch.Tensor]:
    """PROBE_STEPS greedy steps from (logits, state): the ids, logits and each state
    tensor, rows first."""
    noise = torch.zeros(PROBE_STEPS, logits.size(0), logits.size(1), device=logits.device)
    given = tuple(state) if len(state) > 1 else state[0]
    ids = stepper.run(noise, logits, given)
    final = stepper.state if isinstance(stepper.state, tuple) else (stepper.state,)
    return [ids.t().clone(), stepper.logits.clone(),
            *(s.transpose(0, 1).clone() for s in final)]


def _same_rows(probed: list[torch.Tensor], reference: list[torch.Tensor]) -> bool:
    return all(torch.equal(p, r[:p.size(0)]) for p, r in zip(probed, reference))
