"""Generating text from a trained model, one character at a time.

`generate` primes the model with some text, then repeatedly picks the next character from
the model's distribution (scaled by temperature, optionally cut to the top k characters or
the smallest set whose probability reaches top p) and feeds it back in. It yields the new
characters as they come, so callers can stream them. All randomness comes from an explicit
`torch.Generator`, so a seed reproduces a sample and sampling never disturbs other RNGs.

The prime runs through the model's fused recurrent module in one call; the new characters,
one at a time, go on a CPU through `stepping.Stepper` or the module, whichever a short
measurement found faster for this model and batch size (`step_choice`), and
through the module itself on GPUs, where cuDNN steps fast enough. How each character is
chosen is `picking.py`'s.
"""

from __future__ import annotations

import time
from typing import Callable, Iterator, NamedTuple

import torch

from ..errors import UsageError
from ..ranges import MAX_COUNT, SAMPLES, SEED, TEMPERATURE, TOP_K, TOP_P, Range
from ..model.charrnn import CharRNN
from .novelty import CopyGuard
from .penalties import Penalties
from .penalty_state import PenaltyState
from .picking import Picker, pick  # noqa: F401  (pick: part of this module's API)
from ..model.stepper import Stepper
from .step_choice import StepFunction, fastest_step, module_step
from ..data.vocab import Vocabulary


MAX_SAMPLE_CHARS = 10_000_000  # samples x length per call: beyond it, a loop is better
LENGTH = Range(0, MAX_COUNT)  # characters per sample; 0 = endless
MAX_BEAM = 64  # beams kept by beam search at most
BEAM = Range(1, MAX_BEAM)
MAX_COPY = Range(1, MAX_COUNT)


def check_options(temperature: float, top_k: int | None, top_p: float | None,
                  length: int, num_samples: int, *, penalties: Penalties | None = None,
                  max_copy: int | None = None, beam: int | None = None,
                  seed: int | None = None, stop_at: str | None = None) -> None:
    """Every generation option's range, and which go together, checked here and only here:
    one UsageError each, naming the options as the Python API does ({temperature}); the
    command line spells them as its flags, the server as its fields."""
    for name, value, allowed in (("temperature", temperature, TEMPERATURE),
                                 ("top_k", top_k, TOP_K), ("top_p", top_p, TOP_P),
                                 ("length", length, LENGTH),
                                 ("num_samples", num_samples, SAMPLES),
                                 ("max_copy", max_copy, MAX_COPY), ("beam", beam, BEAM),
                                 ("seed", seed, SEED)):
        if value is not None and value not in allowed:
            raise UsageError.naming(allowed.refusal("{%s}" % name, value))
    if stop_at == "":
        raise UsageError.naming("{stop_at} must not be empty: a sample would end at once")
    if num_samples > 1 and num_samples * (length or 1) > MAX_SAMPLE_CHARS:
        raise UsageError.naming(
            f"{num_samples:,} samples of {length:,} characters is more than "
            f"{MAX_SAMPLE_CHARS:,} characters in one call; use fewer {{num_samples}} or a "
            "shorter {length}, and run it more than once")
    if penalties is not None:
        penalties.check()
    if max_copy is not None and penalties is not None and penalties.no_repeat > max_copy:
        raise UsageError.naming(
            f"{{max_copy}} {max_copy} is shorter than {{no_repeat}} {penalties.no_repeat}: "
            "that lets a sample repeat its own text for longer than it may copy the "
            "training text, most likely the two numbers swapped")
    if beam is not None:
        check_beam(beam, num_samples, length, temperature, top_k, top_p, penalties, max_copy)


def check_beam(beam: int, num_samples: int, length: int, temperature: float,
               top_k: int | None, top_p: float | None, penalties: Penalties | None,
               max_copy: int | None) -> None:
    """Beam search keeps the likeliest texts: it draws nothing, so the options that
    shape a draw (temperature, top-k, top-p), the penalties and max-copy are refused
    with it, and so is an endless length."""
    if num_samples > beam:
        raise UsageError.naming(f"beam search of width {beam} returns at most {beam} "
                                f"samples, not {num_samples} ({{num_samples}})")
    if length == 0:
        raise UsageError.naming("beam search needs a finite {length}")
    ignored = [name for name, unused in (
        ("{temperature}", temperature != 1.0), ("{top_k}", top_k is not None),
        ("{top_p}", top_p is not None and top_p < 1),
        ("penalties", penalties is not None and penalties.active),
        ("{max_copy}", max_copy is not None)) if unused]
    if ignored:
        raise UsageError.naming(f"{{beam}} search does not sample, so it takes no "
                                f"{', '.join(ignored)}")


def check_prime(prime: str, vocab: Vocabulary) -> None:
    unknown = vocab.unknown(prime)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" …" if len(unknown) > 10 else "")
        raise UsageError(f"the prime has {len(unknown)} character(s) the model never saw: "
                         f"{shown}")


BLOCK_STEPS = 64  # at most this many steps are computed per trip into inference mode ...
BLOCK_SECONDS = 0.02  # ... or this much time, so that text still streams as it is made


def generate(model: CharRNN, vocab: Vocabulary, prime: str | list[str] = "",
             length: int = 1000, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, num_samples: int = 1,
             generator: torch.Generator | None = None, stop_at: str | None = None,
             fast: bool | None = None, penalties: Penalties | None = None,
             copy_guard: Callable[[int], CopyGuard] | None = None
             ) -> Iterator[list[str]]:
    """Yield one list of `num_samples` new characters per step; `length` 0 is endless.

    `prime` is one text for every sample, or a list with one prime per sample (then
    `num_samples` is its length); each prime runs through the model on its own, and the
    samples are then generated together as one batch. Without a prime, the first character
    is drawn from the corpus's character frequencies. With `stop_at`, a sample ends once
    its text ends with that string (which is included); an ended sample yields "" until
    all have ended, and then generation stops. `fast` steps the model with
    `stepping.Stepper` (True) or calls it (False); None, the default, takes the faster
    of the two on a CPU (measured once per model and batch size) and calls it on a GPU.
    `penalties` (see penalties.py) lower the logits of characters used lately;
    `copy_guard(num_samples)` makes the `novelty.CopyGuard` that keeps copies of the
    training text short (a sample it can keep no further ends, as at a stop string).

    Steps are computed in short blocks (up to BLOCK_STEPS, or BLOCK_SECONDS), each in one
    trip into inference mode, and then yielded one by one: entering inference mode for
    every character would cost about as much as a small model's step, and the caller's
    code between characters runs outside it.
    """
    primes = prime if isinstance(prime, list) else None
    if primes is not None:
        num_samples = len(primes)
    check_options(temperature, top_k, top_p, length,
                  max(num_samples, 1) if primes is not None else num_samples,
                  penalties=penalties, stop_at=stop_at)
    for text in primes if primes is not None else [prime]:
        check_prime(text, vocab)
    if num_samples == 0:
        return
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if primes is None:
                logits, state = _start(model, vocab, prime, device)
                logits = logits.expand(num_samples, -1)
                state = _expand(state, num_samples)
            else:
                logits, state = prime_each(model, vocab, primes)
            step = _step_function(model, device, fast, num_samples)
            recent = [vocab.encode(text) for text in (primes or [prime] * num_samples)]
            controls = _Controls(
                PenaltyState(penalties, len(vocab), recent, device)
                if penalties is not None and penalties.active else None,
                copy_guard(num_samples) if copy_guard is not None else None)
        blocks = _Blocks(step, Picker(temperature, top_k, top_p, generator, length),
                         logits, state, vocab, length, stop_at, num_samples, controls)
        finished = False
        while not finished:
            rows, finished = blocks.next()
            yield from rows
    finally:
        model.train(was_training)


class _Controls(NamedTuple):
    """What a generation does to the logits besides the picker: penalties, copy limit."""

    penalty: PenaltyState | None
    guard: CopyGuard | None

    def adjusted(self, logits: torch.Tensor, done: list[bool]) -> torch.Tensor:
        """The logits with the penalties, and -inf where the copy guard rules a
        character out; a sample with every character ruled out is marked done."""
        if self.penalty is not None:
            logits = self.penalty.apply(logits)
        if self.guard is not None:
            logits = logits.clone() if self.penalty is None else logits
            for row in range(logits.size(0)):
                banned = self.guard.banned(row)
                if banned.size:
                    logits[row, torch.from_numpy(banned).to(logits.device)] = float("-inf")
                    if bool(torch.isneginf(logits[row]).all()):
                        done[row] = True  # nothing may follow: the sample ends here
        return logits

    def record(self, ids: torch.Tensor, done: list[bool]) -> None:
        if self.penalty is not None:
            self.penalty.record(ids)
        if self.guard is not None:
            for row, i in enumerate(ids.tolist()):
                if not done[row]:
                    self.guard.push(row, i)


class _Blocks:
    """The characters of one generation, a block of steps at a time, each block in one
    trip into inference mode: `rows, finished = blocks.next()`."""

    def __init__(self, step: StepFunction, picker: Picker, logits: torch.Tensor, state,
                 vocab: Vocabulary, length: int, stop_at: str | None, num_samples: int,
                 controls: _Controls):
        self.step, self.picker, self.logits, self.state = step, picker, logits, state
        self.vocab, self.length, self.stop_at = vocab, length, stop_at
        self.tails = [""] * num_samples  # the last characters of each sample, for stop_at
        self.done = [False] * num_samples
        self.produced = 0
        self.controls = controls
        # samples can end before the length: at a stop string, or by the copy guard
        self.can_end = stop_at is not None or controls.guard is not None
        # a Stepper picks and steps whole blocks in one call when the pick allows it;
        # penalties go into that block, no-repeat and the copy guard need Python
        fused = picker.fast and controls.guard is None and (
            controls.penalty is None or not controls.penalty.ngrams)
        self.run = getattr(step, "run", None) if fused else None
        self.penalty = controls.penalty.tensors() if controls.penalty is not None and \
            controls.penalty.penalties.scoring else None
        self.steps_per_run = 1  # grows while a block takes under BLOCK_SECONDS / 2

    def next(self) -> tuple[list[list[str]], bool]:
        """The next few steps' characters, and whether generation has ended."""
        with torch.inference_mode():
            return self._in_one_call() if self.run is not None else self._one_by_one()

    def _one_by_one(self) -> tuple[list[list[str]], bool]:
        rows, started = [], time.perf_counter()
        while True:
            logits = self.logits
            if self.controls.penalty is not None or self.controls.guard is not None:
                logits = self.controls.adjusted(logits, self.done)
            next_ids = self.picker(logits)  # (N,)
            self.controls.record(next_ids, self.done)
            rows.append(self._chars(next_ids.tolist()))
            if self._ended():
                return rows, True
            self.logits, self.state = self.step(next_ids, self.state)
            if len(rows) >= BLOCK_STEPS or time.perf_counter() - started >= BLOCK_SECONDS:
                return rows, False

    def _in_one_call(self) -> tuple[list[list[str]], bool]:
        """Picked and stepped by `Stepper.run`. Its last step is taken even when
        generation then ends: one step spare, the text the same."""
        started = time.perf_counter()
        wanted = self.steps_per_run
        if self.length:
            wanted = min(wanted, self.length - self.produced)
        noise = self.picker.take(self.logits, wanted)  # (k, N, V)
        if self.penalty is None:
            ids = self.run(noise, self.logits, self.state)  # (k, N)
        else:
            position = self.controls.penalty.position
            ids = self.run(noise, self.logits, self.state, self.penalty, position)
            self.controls.penalty.position += ids.size(0)
        self.logits, self.state = self.step.logits, self.step.state
        took = time.perf_counter() - started
        if took < BLOCK_SECONDS / 2:
            self.steps_per_run = min(2 * self.steps_per_run, BLOCK_STEPS)
        elif took > BLOCK_SECONDS:
            self.steps_per_run = max(1, self.steps_per_run // 2)
        if not self.can_end:  # the block ends where the length does: no check per step
            chars = self.vocab.chars
            rows = [[chars[i] for i in row] for row in ids.tolist()]
            self.produced += len(rows)
            return rows, self._ended()
        rows = []
        for row in ids.tolist():
            rows.append(self._chars(row))
            if self._ended():
                return rows, True
        return rows, False

    def _chars(self, ids: list[int]) -> list[str]:
        """One step's characters, "" for the samples that have ended."""
        chars = [self.vocab.chars[i] for i in ids]
        stop_at = self.stop_at
        if self.can_end:
            for n, char in enumerate(chars):
                if self.done[n]:
                    chars[n] = ""
                    continue
                if stop_at is not None:
                    self.tails[n] = (self.tails[n] + char)[-len(stop_at):]
                    self.done[n] = self.tails[n] == stop_at
        self.produced += 1
        return chars

    def _ended(self) -> bool:
        return bool((self.length and self.produced == self.length)
                    or (self.can_end and all(self.done)))


def _step_function(model: CharRNN, device: torch.device, fast: bool | None,
                   batch_size: int) -> StepFunction:
    """(ids (N,), state) -> (logits (N, V), state): one character through the model."""
    if fast is None:
        if device.type != "cpu":
            return module_step(model)
        return fastest_step(model, batch_size)
    return Stepper(model) if fast else module_step(model)


def prime_each(model: CharRNN, vocab: Vocabulary, primes: list[str]):
    """Each of `primes` through the model on its own: the logits (N, V) of the first new
    character of each, and the state, (layers, N, hidden) per tensor (None: all empty).
    Call it under `torch.inference_mode`."""
    device = next(model.parameters()).device
    starts = [_start(model, vocab, text, device) for text in primes]
    logits = torch.cat([lg for lg, _ in starts])
    return logits, _stack([st for _, st in starts], model, device)


def _start(model: CharRNN, vocab: Vocabulary, prime: str, device):
    """The logits (1, V) for the first new character after `prime`, and the state."""
    if not prime:
        counts = torch.tensor(vocab.counts or [1] * len(vocab), dtype=torch.float,
                              device=device)
        return counts.log()[None], None
    ids = torch.tensor([vocab.encode(prime)], device=device)  # (1, P)
    state = model.advance(ids[:, :-1]) if ids.size(1) > 1 else None  # long primes in pieces
    logits, _, state = model(ids[:, -1:], state)
    return logits[:, -1], state


def _expand(state, n: int):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.expand(-1, n, -1).contiguous() for s in state)
    return state.expand(-1, n, -1).contiguous()


def _stack(states: list, model: CharRNN, device):
    """Per-sample states (or None for no prime) as one batch: (layers, N, hidden) each."""
    if all(s is None for s in states):
        return None
    zero = model.initial_state(1, device)
    filled = [zero if s is None else s for s in states]
    if isinstance(zero, tuple):
        return tuple(torch.cat([s[i] for s in filled], dim=1) for i in range(len(zero)))
    return torch.cat(filled, dim=1)


def sample(model: CharRNN, vocab: Vocabulary, prime: str = "", length: int = 200,
           **options) -> list[str]:
    """The whole text of each sample (prime excluded), as a list of strings."""
    if length == 0:
        raise UsageError("sample() needs a finite length; use generate() to stream")
    columns = list(generate(model, vocab, prime, length, **options))  # (length, N)
    return ["".join(chars) for chars in zip(*columns)]
