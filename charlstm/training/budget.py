"""Measuring this machine and fitting a run to it.

These choices are made by timing a few real training steps instead of guessing:

- **precision auto on a CPU**: bf16 autocast is only a win on CPUs with native bf16 matrix
  units, so it is chosen only when it measures clearly faster than fp32;
- **the model for a time budget**: given `--time` and no model size, each preset's speed
  here says how many characters it could learn from in that time, and the biggest preset
  that gets enough of them to beat the smaller ones, where the smaller ones would make
  so many passes over the corpus that they stop gaining, is chosen (see presets.py). A
  budget that gives it enough characters trains it with more streams a step (timed
  again at that batch), with the learning-rate schedule and momentum that suit them.
  A preset that widens the one chosen (`wide` for `small`) takes its place when the
  budget has grown the batch to its largest and gives the wider one enough steps of it.
  Its dropout and weight drop then follow from how many passes over the corpus the
  budget allows;
- **the rest of a model given with a time budget**: its size, batch and other settings
  stay, and its speed here sets the dropout and weight drop (those not given) and the
  evaluation interval the same way (for_model_given).

The trainer fits dropout, weight drop and the evaluation interval again once training has
shown its real speed (see Trainer._refit).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Collection

import torch

from ..device import (PRECISION_ROUNDS, autocast, measured_cpu_precision,
                      precision_without_measuring)
from ..model.charrnn import CharRNN
from .clock import eval_seconds
from .optim import make_optimizer
from .presets import PRESETS, regularisation_for
from ..settings import OPTION_OF, ModelConfig, TrainConfig, auto_head_rank

REFIT_AFTER = 0.1  # with a budget plan: the share of --time trained before refitting it
REFIT_MARGIN = 1.2  # ... if the speed is off by more than this factor either way
# a plan evaluates less often when its evaluations would take more than this share of
# --time (the final one is always made)
EVAL_SHARE = 0.1


def step_seconds(model: CharRNN, batch_size: int, seq_len: int, device: torch.device,
                 precision: str, optimizer: torch.optim.Optimizer | None = None,
                 repeats: int = 1, warmup: int = 1) -> float:
    """Seconds for one training step (forward, backward, and the optimizer if given).

    Runs `warmup` untimed steps first (the first ones are slower while oneDNN and the
    allocator settle), then times `repeats` steps one by one and keeps the fastest: on a
    shared machine a step is only ever slowed down, by whatever else runs. The caller's
    RNG is left as it was, and the gradients are cleared, so measuring does not change a
    run.
    """
    def one_step() -> None:
        with autocast(device, precision):
            _, loss, _ = model(x, None, x)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    with torch.random.fork_rng(devices=[]):
        x = torch.randint(model.config.vocab_size, (batch_size, seq_len), device=device)
        for _ in range(warmup):
            one_step()
        seconds = math.inf
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            one_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = min(seconds, time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    return seconds


def cpu_precision(model: CharRNN, batch_size: int, seq_len: int, device: torch.device,
                  rounds: int = PRECISION_ROUNDS) -> tuple[str, str]:
    """On a CPU, bf16 autocast only if a training step measures clearly faster in it than
    in fp32 (device.measured_cpu_precision: two warm-up steps of each, then `rounds`
    steps of each in turn, the fastest of each)."""
    def seconds_of(precision: str) -> float:
        return step_seconds(model, batch_size, seq_len, device, precision, warmup=0)

    def warm_up(precision: str) -> None:
        step_seconds(model, batch_size, seq_len, device, precision, repeats=0, warmup=2)

    return measured_cpu_precision(seconds_of, rounds, warm_up)


def choose_precision(requested: str, device: torch.device, saved: str | None = None,
                     plan: "BudgetPlan | None" = None,
                     measure: Callable[[], tuple[str, str]] | None = None) -> tuple[str, str]:
    """The precision a run trains in, and a note saying why: as asked; else (auto) as a
    resumed run was started (`saved`), as the budget plan measured, by the device, or
    on a CPU by `measure()` (timing bf16 against fp32, see cpu_precision)."""
    if requested != "auto":
        return precision_without_measuring(requested, device), f"{requested} (as asked)"
    if saved == "fp16" and device.type != "cuda":
        # started in fp16 on a GPU, which this device cannot do: choose again
        chosen = precision_without_measuring("auto", device)
        if chosen is not None:
            return chosen, f"{chosen} (auto; the run started in fp16)"
    elif saved:
        return saved, f"{saved} (as the run was started)"
    chosen = precision_without_measuring("auto", device)
    if chosen is not None:
        return chosen, f"{chosen} (auto, on {device.type})"
    if plan is not None:
        return plan.precision, plan.precision_note
    return measure()


@dataclass
class BudgetPlan:
    preset: str  # the preset chosen (for a model given: the one whose dropout it follows)
    model: dict  # ModelConfig settings (without the vocabulary size)
    train: dict  # TrainConfig settings, before explicit flags
    precision: str  # the precision the speeds were measured in
    precision_note: str
    chars_per_sec: float  # the chosen preset's training speed as measured here
    epochs: float  # passes over the training split the budget allows at that speed
    note: str  # what was chosen and why, in one line
    # the settings the trainer refits once it knows its real speed (those not given)
    refit: frozenset = field(default_factory=frozenset)
    eval_chars: int = 0  # the validation characters each evaluation reads


def evaluations_in(time_limit: float, each: float = 0.0) -> float:
    """Evaluations (and checkpoints) a plan makes in `time_limit` seconds when each takes
    about `each` seconds: four, and at least one every ten minutes, but no more than
    take EVAL_SHARE of the budget; always the final one. (Four whole-split evaluations
    of 10 MB, about 10 s each, would take 40 s of a 105 s budget.)"""
    wanted = max(4.0, time_limit / 600)
    if each <= 0:
        return wanted
    return max(1.0, min(wanted, math.floor(EVAL_SHARE * time_limit / each)))


def eval_interval(steps: float, time_limit: float, each: float = 0.0) -> int:
    """Steps between evaluations for a run of `steps` steps in `time_limit` seconds whose
    evaluations take about `each` seconds."""
    return max(1, round(steps / evaluations_in(time_limit, each)))


def training_seconds(time_limit: float, speed: float, eval_chars: int) -> float:
    """The seconds of `time_limit` left for training at `speed` chars/s once a plan's
    evaluations (evaluations_in, the last of them the final one) have each read
    `eval_chars` validation characters (eval_seconds); never less than half."""
    each = eval_seconds(eval_chars, speed)
    return max(time_limit / 2, time_limit - evaluations_in(time_limit, each) * each)


def plan(time_limit: float, train_chars: int, vocab_size: int, device: torch.device,
         precision: str = "auto", cell: str = "lstm",
         candidates: list[str] | None = None, eval_chars: int = 0) -> BudgetPlan:
    """The preset, and its dropout and weight drop, for `time_limit` seconds here.

    The candidates (by default every preset with a `min_chars`) are tried from the
    smallest up; each is timed by the fastest of three steps, and the biggest whose speed
    gives it at least its `min_chars` of training text in the budget wins, as long as
    the one below it would have made more than its `outgrown_epochs` passes over the
    corpus (a smaller model with text still to learn from beats a bigger one). A preset
    whose speed, predicted from the last one's by parameter count, falls far short is
    not timed. The preset chosen takes the larger batch its `batch_growth` gives a
    budget of that many characters (batch_for), and is timed again at it; unless it was
    named, a wider one may then take its place (_widened). The budget's characters are
    those of the time its evaluations leave (training_seconds).
    """
    chars_in = partial(_chars_at, time_limit, eval_chars)
    chosen, speed, size, measured, kept = None, 0.0, 0, [], ""
    names = candidates or [name for name, spec in PRESETS.items() if "min_chars" in spec]
    for name in names:
        if chosen is not None:
            outgrown = PRESETS[chosen].get("outgrown_epochs", math.inf)
            if chars_in(speed) / max(train_chars, 1) <= outgrown:
                kept = f" (no more than the {outgrown:g} after which a larger preset pays)"
                break  # the smaller preset has not run out of text to learn from
        spec = PRESETS[name]
        train = spec["train"]
        model = _untrained(name, vocab_size, cell, device)
        if chosen is not None and (chars_in(speed * size / model.num_parameters())
                                   < spec["min_chars"] / 2):
            break
        if chosen is None:  # the first candidate also decides precision auto
            precision, precision_note = _planned_precision(precision, model, train, device)
        timing = _timer(model, train, device, precision)
        rate = train["batch_size"] * train["seq_len"] / timing(train["batch_size"])
        measured.append(f"{name} {rate / 1000:.0f}k chars/s")
        if chosen is not None and chars_in(rate) < spec["min_chars"]:
            break  # the larger presets are slower still
        chosen, speed, size, timed_at = name, rate, model.num_parameters(), timing
    train, speed = _with_batch(chosen, PRESETS[chosen], speed, chars_in, train_chars,
                               timed_at, measured)
    if candidates is None:  # a preset named stays
        chosen, speed = _widened(chosen, train, speed, size, chars_in, measured,
                                 vocab_size, cell, device, precision)
    epochs, amounts, train["eval_every"] = _fitted(chosen, speed, TrainConfig(**train),
                                                   time_limit, eval_chars, train_chars)
    note = (f"{chosen} preset for the {time_limit:g} s budget: measured "
            f"{', '.join(measured)}, about {epochs:.1f} passes over the {train_chars:,} "
            f"training characters{kept}, so {_amounts(amounts)}"
            f"{_fewer_evaluations(time_limit, eval_chars, speed)}")
    return BudgetPlan(chosen, {**PRESETS[chosen]["model"], **amounts}, train, precision,
                      precision_note, speed, epochs, note, eval_chars=eval_chars)


def for_model_given(time_limit: float, train_chars: int, model_config: ModelConfig,
                    train_config: TrainConfig, device: torch.device, preset: str,
                    eval_chars: int = 0, given: Collection[str] = ()) -> BudgetPlan:
    """A plan for a model whose size was given: the model and its training settings stay,
    and from its speed here at its batch (timed like a preset's, precision auto decided
    the same way) come the passes the budget allows, the dropout and weight drop of
    `preset`'s schedule for them (those not `given`), and the evaluation interval."""
    model = CharRNN(model_config).to(device)
    train = train_config.to_dict()
    precision, precision_note = _planned_precision(train_config.precision, model, train,
                                                   device)
    batch = train_config.batch_size
    speed = batch * train_config.seq_len / _timer(model, train, device, precision)(batch)
    epochs, amounts, every = _fitted(preset, speed, train_config, time_limit, eval_chars,
                                     train_chars)
    amounts = {name: value for name, value in amounts.items() if name not in given}
    fitted = f"{_amounts(amounts)} ({preset} preset's schedule) and " if amounts else ""
    note = (f"the model given, for the {time_limit:g} s budget: measured {_speed(speed)} "
            f"chars/s at batch {batch}, about {epochs:.1f} passes over the "
            f"{train_chars:,} training characters, so {fitted}"
            + (_fewer_evaluations(time_limit, eval_chars, speed).removeprefix(", ")
               or f"evaluating every {every:,} steps"))
    return BudgetPlan(preset, amounts, {"eval_every": every}, precision, precision_note,
                      speed, epochs, note, eval_chars=eval_chars)


def _fitted(preset: str, speed: float, config: TrainConfig, time_limit: float,
            eval_chars: int, train_chars: int) -> tuple[float, dict[str, float], int]:
    """For a run of `config` at `speed` chars/s: the passes over its `train_chars` that
    the budget allows, `preset`'s dropout and weight drop for them, and the evaluation
    interval (evaluations_in)."""
    chars = _chars_at(time_limit, eval_chars, speed)
    epochs = chars / max(train_chars, 1)
    every = eval_interval(steps_for(chars, config), time_limit,
                          eval_seconds(eval_chars, speed))
    return epochs, regularisation_for(PRESETS[preset], epochs), every


def _chars_at(time_limit: float, eval_chars: int, rate: float) -> float:
    """The characters trained at `rate` chars/s in the budget (training_seconds)."""
    return rate * training_seconds(time_limit, rate, eval_chars)


def _planned_precision(precision: str, model: CharRNN, train: dict,
                       device: torch.device) -> tuple[str, str]:
    """`precision`, decided if auto (by timing `model` at `train`'s shape on a CPU that
    may have bf16 units: cpu_precision), and the note saying how."""
    decided = precision_without_measuring(precision, device)
    if decided is None:
        return cpu_precision(model, train["batch_size"], train["seq_len"], device)
    how = "as asked" if precision != "auto" else f"auto, on {device.type}"
    return decided, f"{decided} ({how})"


def _untrained(name: str, vocab_size: int, cell: str, device: torch.device) -> CharRNN:
    """Preset `name`'s model for this vocabulary and cell, as a new run starts it."""
    spec = PRESETS[name]["model"]
    head_rank = auto_head_rank(vocab_size, spec["hidden_size"])
    return CharRNN(ModelConfig(vocab_size=vocab_size, model=cell, head_rank=head_rank,
                               **spec)).to(device)


def _timer(model: CharRNN, train: dict, device: torch.device,
           precision: str) -> Callable[[int], float]:
    """Seconds a training step of `model` with the settings `train` takes at a given
    batch: the fastest of three, after two to warm up (step_seconds)."""
    optimizer = make_optimizer(model, train["lr"], 0.0, device)
    return partial(step_seconds, model, seq_len=train["seq_len"], device=device,
                   precision=precision, optimizer=optimizer, repeats=3, warmup=2)


def _widened(chosen: str, train: dict, speed: float, size: int,
             chars_in: Callable[[float], float], measured: list[str], vocab_size: int,
             cell: str, device: torch.device, precision: str) -> tuple[str, float]:
    """`chosen`, or the preset that takes its place (the one whose `instead_of` it is,
    presets.py) when the budget has grown chosen's batch to its largest and gives that
    wider preset at least its `min_steps` steps of it, with the speed of the one returned.
    `train` holds chosen's settings with the grown batch, which the wider preset shares;
    `speed` and `size` are chosen's speed at that batch and its parameter count. The
    wider preset is timed at that batch, with its verdict in `measured`, unless its speed
    estimated by parameter count gives it less than half its `min_steps`."""
    wider = next((name for name, spec in PRESETS.items()
                  if spec.get("instead_of") == chosen), None)
    batch = train["batch_size"]
    if wider is None or batch < PRESETS[wider]["batch_growth"]["max_batch"]:
        return chosen, speed  # a batch that grew less: far fewer steps than measured
    needed, step_chars = PRESETS[wider]["min_steps"], batch * train["seq_len"]
    model = _untrained(wider, vocab_size, cell, device)
    if chars_in(speed * size / model.num_parameters()) < needed / 2 * step_chars:
        return chosen, speed
    rate = step_chars / _timer(model, train, device, precision)(batch)
    steps = chars_in(rate) / step_chars
    taken = steps >= needed
    measured.append(f"{wider} at {batch} streams a step {rate / 1000:.0f}k chars/s "
                    f"({steps:,.0f} steps of {batch}, {'at least' if taken else 'fewer than'}"
                    f" the {needed:,} from which it beats {chosen})")
    return (wider, rate) if taken else (chosen, speed)


def _fewer_evaluations(time_limit: float, eval_chars: int, speed: float) -> str:
    """The start line's word on the evaluations, when there are fewer than the four a
    budget usually gets because each would take long (evaluations_in)."""
    each = eval_seconds(eval_chars, speed)
    count = evaluations_in(time_limit, each)
    if count >= evaluations_in(time_limit):
        return ""
    times = "only at the end" if count == 1 else f"{count:.0f} times"
    return (f", evaluating {times}, as each reads {eval_chars:,} validation characters "
            f"(about {each:.0f} s) and more would take over {EVAL_SHARE:.0%} of the budget")


def _with_batch(name: str, spec: dict, speed: float, chars_in: Callable[[float], float],
                train_chars: int, timed_at: Callable[[int], float],
                measured: list[str]) -> tuple[dict, float]:
    """The preset's training settings with the batch the budget gives it (batch_for) and
    the settings that come with a grown batch (`batch_growth`'s `train`), and its speed
    at that batch: timed again (`timed_at(batch)`, seconds a step) if it grew, which
    `measured` then says. `chars_in(speed)`: the characters the budget gives."""
    train = dict(spec["train"])
    batch, why = batch_for(spec, chars_in(speed), train_chars)
    if batch != train["batch_size"]:
        train.update(spec["batch_growth"].get("train", {}), batch_size=batch)
        speed = batch * train["seq_len"] / timed_at(batch)
        measured.append(f"{name} at {batch} streams a step {speed / 1000:.0f}k chars/s "
                        f"({why})")
    return train, speed


def batch_for(spec: dict, budget_chars: float, train_chars: int) -> tuple[int, str]:
    """The streams a step for a run of the preset `spec` to which the budget gives
    `budget_chars` characters of training on `train_chars`, and why (presets.py,
    `batch_growth`): on a corpus the run passes over no more than `max_passes` times, its
    batch doubles, up to `max_batch`, as long as the budget still gives `min_steps`
    steps. The why names the settings that come with the grown batch."""
    train, growth = spec["train"], spec.get("batch_growth")
    batch = train["batch_size"]
    if growth is None or budget_chars > growth["max_passes"] * train_chars:
        return batch, ""
    step_chars = train["seq_len"]
    while (batch * 2 <= growth["max_batch"]
           and budget_chars / (batch * 2 * step_chars) >= growth["min_steps"]):
        batch *= 2
    if batch == train["batch_size"]:
        return batch, ""
    settings = _listed([f"{OPTION_OF[name].flag} {value:g}"
                        for name, value in growth.get("train", {}).items()])
    return batch, (f"{budget_chars / 1e6:.0f}M characters in the budget, "
                   f"{budget_chars / (batch * step_chars):,.0f} steps of {batch}: on a "
                   f"corpus seen at most {growth['max_passes']:g} times the batch "
                   f"doubles while {growth['min_steps']:,} steps are left"
                   + (f", with {settings}" if settings else ""))


def _listed(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'"""
    return " and ".join(filter(None, [", ".join(items[:-1]), *items[-1:]]))


def _amounts(amounts: dict[str, float]) -> str:
    """'dropout 0.1 and weight drop 0.15'"""
    return _listed([f"{name.replace('_', ' ')} {value:g}"
                    for name, value in amounts.items()])


@dataclass
class Refit:
    """The plan's settings fitted again to the speed training has shown."""
    speed: float  # the speed seen, chars/s
    planned_speed: float  # the speed the plan measured
    epochs: float  # passes over the training split the budget allows at the speed seen
    # the new dropout and weight drop, those that change
    regularisation: dict[str, float] = field(default_factory=dict)
    eval_every: int | None = None  # the new evaluation interval, if it changes

    def notice(self) -> str:
        changed = [_amounts(self.regularisation)] if self.regularisation else []
        if self.eval_every is not None:
            changed.append(f"an evaluation every {self.eval_every:,} steps")
        return (f"training runs at {_speed(self.speed)} chars/s, not the "
                f"{_speed(self.planned_speed)} measured at the start: about "
                f"{self.epochs:.1f} passes in the budget, so {' and '.join(changed)}")


def steps_for(chars: float, config: TrainConfig, start: float = 0.0) -> float:
    """Steps that train `chars` characters from `start` (a share of the run) to the
    run's end: those before its --early-share of --early-batch streams each, the rest
    of --batch-size."""
    whole = config.batch_size * config.seq_len
    if not 0 < config.early_batch < config.batch_size:
        return chars / whole
    early = max(0.0, config.early_share - start) / max(1.0 - start, 1e-9)
    return chars * (early / (config.early_batch * config.seq_len) + (1 - early) / whole)


def refit(plan: BudgetPlan, config: TrainConfig, amounts: dict[str, float], speed: float,
          step: int, time_left: float, train_chars: int, trained: int | None = None,
          progress: float = 0.0) -> Refit | None:
    """The plan's dropout, weight drop and evaluation interval (those nobody gave:
    `plan.refit`) for the speed training has shown, `speed` chars/s at `step` with
    `time_left` seconds to go, instead of the few steps timed before it: a measurement
    disturbed by whatever else ran on the machine would otherwise set them for the wrong
    number of passes.
    None unless the speed is off by more than REFIT_MARGIN and a setting changes.
    `amounts` (dropout and weight drop) and `config` hold the settings in force;
    `trained` is the characters trained so far (by default `step` whole steps' worth),
    `progress` the share of the run done."""
    if 1 / REFIT_MARGIN < speed / plan.chars_per_sec < REFIT_MARGIN:
        return None
    ahead = speed * max(0.0, time_left)
    steps = step + steps_for(ahead, config, progress)
    if trained is None:
        trained = step * config.batch_size * config.seq_len
    epochs = (trained + ahead) / max(train_chars, 1)
    result = Refit(speed, plan.chars_per_sec, epochs)
    fitted = regularisation_for(PRESETS[plan.preset], epochs)
    result.regularisation = {name: value for name, value in fitted.items()
                             if name in plan.refit and value != amounts[name]}
    if "eval_every" in plan.refit:
        every = eval_interval(steps, config.time_limit,
                              eval_seconds(plan.eval_chars, speed))
        result.eval_every = every if every != config.eval_every else None
    return result if result.regularisation or result.eval_every is not None else None


def _speed(chars_per_sec: float) -> str:
    return (f"{chars_per_sec / 1000:.0f}k" if chars_per_sec >= 10_000
            else f"{chars_per_sec:,.0f}")
