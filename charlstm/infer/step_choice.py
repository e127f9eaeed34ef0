"""Which way sampling steps a model on a CPU: a `Stepper` or the model's own module.

Whether the hand-written stepper (model/stepper.py) beats calling the fused `nn.LSTM` (GRU,
RNN) depends on the CPU at large batches (oneDNN's RNN kernel against the BLAS matrix
product), and at batch 1 whether its input products in halves beat them whole depends on
how the BLAS threads a small product. So `fastest_step` times the ways once per model and
batch size, as generation runs them, and keeps the fastest.
"""

from __future__ import annotations

import time
import weakref
from typing import Callable

import torch

from ..model.charrnn import CharRNN
from ..model.stepper import Stepper

StepFunction = Callable[[torch.Tensor, object], tuple[torch.Tensor, object]]

MEASURE_ROUNDS = 5  # each way is timed this many times, in turn; the best time counts
MEASURE_STEPS = 2  # characters picked and stepped per timing of the module ...
MEASURE_STREAM_STEPS = 16  # ... and of a stepper, this many characters in all (at least
# MEASURE_STEPS per stream): at batch 1 two steps take some 0.1 ms, too short to time the
# two steppers apart on a busy machine
_chosen: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key: name}
# the names of the ways: a Stepper with split_inputs, one without, the module's call
SPLIT, WHOLE, MODULE = "stepper, input products in halves", "stepper", "module"


def module_step(model: CharRNN) -> StepFunction:
    """One character through the model's own fused module: (ids (B,), state) ->
    (logits (B, V), state)."""
    def call_model(ids, state):
        logits, _, state = model(ids[:, None], state)
        return logits[:, -1], state

    return call_model


def fastest_step(model: CharRNN, batch_size: int) -> StepFunction:
    """A `Stepper` (at batch 1 with and without `split_inputs`, where that splits
    anything) or the module's own call, whichever picks and steps `batch_size` streams
    fastest on this machine. The first call for a model, batch size, dtype and device
    times a few characters of each, in turn (milliseconds to a fifth of a second; which
    one wins depends on the CPU's BLAS and oneDNN kernels, not on its name); later calls
    reuse that choice. Call it, and the step it returns, under `torch.inference_mode`."""
    weight = next(model.parameters())
    key = (batch_size, weight.dtype, weight.device)
    choices = _chosen.setdefault(model, {})
    steppers = {}
    if key not in choices:
        whole = Stepper(model)
        if batch_size == 1 and whole.can_split:  # the first, kept unless clearly slower
            steppers[SPLIT] = Stepper(model, split_inputs=True)
        steppers[WHOLE] = whole
        choices[key] = _fastest(_ways_to_time(model, steppers, batch_size))
    chosen = choices[key]
    if chosen == MODULE:
        return module_step(model)
    return steppers.get(chosen) or Stepper(model, split_inputs=chosen == SPLIT)


def _ways_to_time(model: CharRNN, steppers: dict[str, Stepper], batch_size: int
                  ) -> dict[str, Callable[[], int]]:
    """Picks and steps as generation makes them once under way, each way going on from
    the state its last call left and returning how many steps it made: by `Stepper.run`
    of each of `steppers` (MEASURE_STREAM_STEPS characters), and by a pick and a call of
    the module per step (MEASURE_STEPS). (A run from a new state makes one batched
    product more than it has steps: at two steps, from the zero state, that once made
    the module look as fast as a stepper a fifth faster than it.)"""
    weight = next(model.parameters())
    vocab_size, device = model.config.vocab_size, weight.device
    stepper_steps = max(MEASURE_STEPS, MEASURE_STREAM_STEPS // batch_size)
    stepper_noise = torch.zeros(stepper_steps, batch_size, vocab_size, device=device)
    noise = torch.zeros(MEASURE_STEPS, batch_size, vocab_size, device=device)
    start = torch.zeros(batch_size, vocab_size, device=device)
    call_model = module_step(model)

    def by(stepper: Stepper) -> Callable[[], int]:
        stepper.run(stepper_noise.zero_(), start, None)  # from here on, it goes on
        return lambda: len(stepper.run(stepper_noise.zero_(), stepper.logits,
                                       stepper.state))

    logits, state = start, None  # the module's, carried from call to call

    def by_module() -> int:
        nonlocal logits, state
        for step_noise in noise.zero_():
            logits, state = call_model(step_noise.add_(logits).argmax(-1), state)
        return len(noise)

    return {**{name: by(stepper) for name, stepper in steppers.items()}, MODULE: by_module}


def _fastest(ways: dict[str, Callable[[], int]], margin: float = 0.9) -> str:
    """The name of the fastest of `ways` (each returns how many steps it made): each is
    called once to warm up, then timed MEASURE_ROUNDS times in turn, and its best time
    per step counts; a way twice as slow as the fastest in the first round is timed no
    more (it will not catch up, and at batch 1 the module's steps are most of the cost).
    The first way is kept unless another takes under `margin` of its time: a near tie
    is noise, not a reason to change."""
    for way in ways.values():
        way()
    first = next(iter(ways))
    best = {name: float("inf") for name in ways}
    timed = dict(ways)
    for round_number in range(MEASURE_ROUNDS):
        for name, way in timed.items():
            started = time.perf_counter()
            steps = way()
            best[name] = min(best[name], (time.perf_counter() - started) / steps)
        if round_number == 0:
            quickest = min(best.values())
            timed = {name: way for name, way in timed.items() if best[name] <= 2 * quickest}
    fastest = min(best, key=best.get)
    return fastest if best[fastest] < margin * best[first] else first


def chosen_step(model: CharRNN, batch_size: int) -> str | None:
    """What `fastest_step` chose for this model and batch size: SPLIT, WHOLE or MODULE
    (None: not measured yet)."""
    weight = next(model.parameters())
    return _chosen.get(model, {}).get((batch_size, weight.dtype, weight.device))
