"""Measuring this machine and fitting a run to it.

Two choices are made by timing a few real training steps instead of guessing:

- **precision auto on a CPU**: bf16 autocast is only a win on CPUs with native bf16 matrix
  units, so it is chosen only when it measures clearly faster than fp32;
- **the model for a time budget**: given `--time` and no model size, each preset's speed
  here says how many characters it could learn from in that time, and the biggest preset
  that gets enough of them to beat the smaller ones is chosen (see presets.py). Its
  dropout then follows from how many passes over the corpus the budget allows. (The
  trainer fits the dropout and the evaluation interval again once training has shown its
  real speed: see Trainer._refit.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .device import autocast, precision_without_measuring
from .model import CharRNN, ModelConfig
from .presets import PRESETS, dropout_for

BF16_MIN_SPEEDUP = 1.3  # bf16 must be this much faster than fp32 to be chosen


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   device: torch.device, beta1: float = 0.9) -> torch.optim.Optimizer:
    """AdamW with decay on matrices and embeddings only, fused where torch has the kernel."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel saves several milliseconds a step over the foreach one
        return torch.optim.AdamW(groups, lr=lr, betas=(beta1, 0.99),
                                 fused=device.type in ("cpu", "cuda") or None)
    except RuntimeError:  # torch before 2.4 fuses AdamW only on CUDA
        return torch.optim.AdamW(groups, lr=lr, betas=(beta1, 0.99))


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


def cpu_precision(model: CharRNN, batch_size: int, seq_len: int,
                  device: torch.device) -> tuple[str, str]:
    """On a CPU, bf16 autocast only if it measures clearly faster than fp32 here.

    CPUs without AVX-512 or SVE have no native bf16 arithmetic, so bf16 is not tried there;
    elsewhere a warm-up and a timed step of each decide.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith(("AVX512", "SVE")):
        return "fp32", f"fp32 (this CPU, {capability}, has no native bf16)"
    fp32 = step_seconds(model, batch_size, seq_len, device, "fp32")
    bf16 = step_seconds(model, batch_size, seq_len, device, "bf16")
    speedup = fp32 / bf16
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"bf16 (measured {speedup:.1f}x faster than fp32 on this CPU)"
    return "fp32", f"fp32 (bf16 measured {speedup:.1f}x the speed of fp32 on this CPU)"


@dataclass
class BudgetPlan:
    preset: str  # the preset chosen
    model: dict  # ModelConfig settings (without the vocabulary size)
    train: dict  # TrainConfig settings, before explicit flags
    precision: str  # the precision the speeds were measured in
    precision_note: str
    chars_per_sec: float  # the chosen preset's training speed as measured here
    epochs: float  # passes over the training split the budget allows at that speed
    note: str  # what was chosen and why, in one line
    # the settings the trainer refits once it knows its real speed (those not given)
    refit: frozenset = field(default_factory=frozenset)


def eval_interval(steps: float, time_limit: float) -> int:
    """Steps between evaluations for a run of `steps` steps in `time_limit` seconds: four
    evaluations (and checkpoints) in the budget, and at least one every ten minutes."""
    return max(1, round(steps * min(0.25, 600 / time_limit)))


def plan(time_limit: float, train_chars: int, vocab_size: int, device: torch.device,
         precision: str = "auto", cell: str = "lstm",
         candidates: list[str] | None = None) -> BudgetPlan:
    """The preset, and its dropout, for `time_limit` seconds of training here.

    The candidates (by default every preset with a `min_chars`) are tried from the
    smallest up; each is timed by the fastest of three steps, and the biggest whose speed
    gives it at least its `min_chars` of training text in the budget wins. A preset whose
    speed, predicted from the last one's by parameter count, falls far short is not timed.
    """
    precision_note = f"{precision} (as asked)"
    chosen, speed, size, measured = None, 0.0, 0, []
    names = candidates or [name for name, spec in PRESETS.items() if "min_chars" in spec]
    for name in names:
        spec = PRESETS[name]
        train = spec["train"]
        model = CharRNN(ModelConfig(vocab_size=vocab_size, model=cell,
                                    **spec["model"])).to(device)
        if chosen is not None and (speed * size / model.num_parameters() * time_limit
                                   < spec["min_chars"] / 2):
            break
        if chosen is None:  # the first candidate also decides precision auto
            decided = precision_without_measuring(precision, device)
            if decided is None:
                precision, precision_note = cpu_precision(model, train["batch_size"],
                                                          train["seq_len"], device)
            else:
                precision, precision_note = decided, f"{decided} (auto, on {device.type})"
        optimizer = make_optimizer(model, train["lr"], 0.0, device)
        seconds = step_seconds(model, train["batch_size"], train["seq_len"], device,
                               precision, optimizer, repeats=3, warmup=2)
        rate = train["batch_size"] * train["seq_len"] / seconds
        measured.append(f"{name} {rate / 1000:.0f}k chars/s")
        if chosen is not None and rate * time_limit < spec["min_chars"]:
            break  # the larger presets are slower still
        chosen, speed, size = name, rate, model.num_parameters()
    spec = PRESETS[chosen]
    epochs = speed * time_limit / max(train_chars, 1)
    dropout = dropout_for(spec, epochs)
    train = dict(spec["train"])
    steps = speed * time_limit / (train["batch_size"] * train["seq_len"])
    train["eval_every"] = eval_interval(steps, time_limit)
    note = (f"{chosen} preset for the {time_limit:g} s budget: measured "
            f"{', '.join(measured)}, about {epochs:.1f} passes over the "
            f"{train_chars:,} training characters, so dropout {dropout:g}")
    return BudgetPlan(chosen, {**spec["model"], "dropout": dropout}, train, precision,
                      precision_note, speed, epochs, note)
