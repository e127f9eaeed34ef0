"""Generating text from a trained model, one character at a time.

`generate` primes the model with some text, then repeatedly picks the next character from
the model's distribution (scaled by temperature, optionally cut to the top k characters or
the smallest set whose probability reaches top p) and feeds it back in. It yields the new
characters as they come, so callers can stream them. All randomness comes from an explicit
`torch.Generator`, so a seed reproduces a sample and sampling never disturbs other RNGs.

The prime runs through the model's fused recurrent module in one call; the new characters,
one at a time, go through `stepping.Stepper` on a CPU (many times faster there for a single
step) and through the module itself on GPUs, where cuDNN steps fast enough.
"""

from __future__ import annotations

import math
import time
from typing import Iterator

import torch

from .errors import UsageError
from .model import CharRNN
from .stepping import StepFunction, Stepper, fastest_step, module_step
from .vocab import Vocabulary


MAX_SAMPLE_CHARS = 10_000_000  # samples x length per call: beyond it, a loop is better


def check_options(temperature: float, top_k: int | None, top_p: float | None,
                  length: int, num_samples: int) -> None:
    if not temperature >= 0:  # also catches NaN
        raise UsageError(f"temperature must be 0 or more, not {temperature}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"top-k must be at least 1, not {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UsageError(f"top-p must be in (0, 1], not {top_p}")
    if length < 0:
        raise UsageError(f"length must be 0 (endless) or more, not {length}")
    if num_samples < 1:
        raise UsageError(f"the number of samples must be at least 1, not {num_samples}")
    if num_samples > 1 and num_samples * (length or 1) > MAX_SAMPLE_CHARS:
        raise UsageError(
            f"{num_samples:,} samples of {length:,} characters is more than "
            f"{MAX_SAMPLE_CHARS:,} characters in one call; use fewer --num-samples or a "
            "shorter --length, and run it more than once")


def check_prime(prime: str, vocab: Vocabulary) -> None:
    unknown = vocab.unknown(prime)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" …" if len(unknown) > 10 else "")
        raise UsageError(f"the prime has {len(unknown)} character(s) the model never saw: "
                         f"{shown}")


def pick(logits: torch.Tensor, temperature: float, top_k: int | None = None,
         top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (N, V) -> the chosen id of each row (N,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    # all finite exactly when the least and the greatest are (NaN propagates): one
    # reduction, where isfinite().all() costs three, for a check made at every character
    lowest, highest = torch.aminmax(scaled)
    if not (math.isfinite(lowest.item()) and math.isfinite(highest.item())):
        return logits.argmax(dim=-1)  # a temperature so small it overflows: greedy
    logits = scaled
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # drop a character once the more likely ones already reach top_p on their own
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    # An exponential race: with q ~ Exp(1) per entry, argmax(p / q) is drawn from p (what
    # torch.multinomial does for one sample, without its checks on probs, which cost more
    # than the draw at batch 1). q is -log(u) for u uniform in [0, 1): on a CPU that is
    # about four times faster than exponential_, which matters at batch 64. u = 0 makes
    # q infinite and p / q zero: that character just loses the race.
    race = torch.empty_like(probs).uniform_(generator=generator).log_().neg_()
    return torch.div(probs, race, out=race).argmax(dim=-1)


NOISE_ELEMENTS = 1 << 20  # the race's noise is drawn for many steps at once, up to this


class Picker:
    """`pick` for one generation, one step at a time, in two calls into torch per step.

    In the common case (a positive finite temperature, no top-k or top-p) the race needs
    no softmax: with G = -log(-log u) (Gumbel noise), argmax(p / q) above is argmax(l / T
    + G), which is argmax(l + T * G) and never overflows at small T. The noise T * G is
    drawn for up to 64 steps at once, so a step costs an add and an argmax. A logit of
    +inf or NaN is still picked greedily, and a -inf one, probability 0, never. The chunks
    depend only on the steps drawn so far, never on how the steps are grouped into
    blocks, and a finite `length` draws no more than it uses, so a seed gives the same
    text however it is streamed. Otherwise each step goes through `pick`.
    """

    def __init__(self, temperature: float, top_k: int | None, top_p: float | None,
                 generator: torch.Generator | None, length: int):
        self.options = (temperature, top_k, top_p, generator)
        self.fast = (top_k is None and (top_p is None or top_p >= 1)
                     and 0 < temperature < 1e6)  # T * G stays finite below about 1e36
        self.left = length or None  # steps still to draw for; None: endless
        self.chunk = torch.empty(0)  # (steps, N, V) float32
        self.noise: list[torch.Tensor] = []  # its steps, (N, V) each
        self.used = 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (N, V) -> the chosen id of each row (N,)."""
        if not self.fast:
            return pick(logits, *self.options)
        if self.used == len(self.noise):
            self._draw(logits)
        noise = self.noise[self.used]
        self.used += 1
        return noise.add_(logits).argmax(dim=-1)

    def take(self, logits: torch.Tensor, steps: int) -> torch.Tensor:
        """The noise of the next steps (k, N, V), 1 <= k <= steps, to add to the logits
        of each of them (see `Stepper.run`): what as many calls would have used."""
        if self.used == len(self.noise):
            self._draw(logits)
        taken = self.chunk[self.used:self.used + steps]
        self.used += taken.size(0)
        return taken

    def _draw(self, logits: torch.Tensor) -> None:
        temperature, _, _, generator = self.options
        rows, vocab_size = logits.shape
        steps = max(1, min(64, NOISE_ELEMENTS // (rows * vocab_size)))
        if self.left is not None:
            steps = min(steps, self.left)
            self.left -= steps
        noise = torch.empty(steps, rows, vocab_size, device=logits.device)
        # -log(-log u) for u uniform in [0, 1); u = 0 gives -inf: that entry loses
        noise.uniform_(generator=generator).log_().neg_().log_().mul_(-temperature)
        self.chunk, self.noise, self.used = noise, list(noise.unbind(0)), 0


BLOCK_STEPS = 64  # at most this many steps are computed per trip into inference mode ...
BLOCK_SECONDS = 0.02  # ... or this much time, so that text still streams as it is made


def generate(model: CharRNN, vocab: Vocabulary, prime: str | list[str] = "",
             length: int = 1000, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, num_samples: int = 1,
             generator: torch.Generator | None = None, stop_at: str | None = None,
             fast: bool | None = None) -> Iterator[list[str]]:
    """Yield one list of `num_samples` new characters per step; `length` 0 is endless.

    `prime` is one text for every sample, or a list with one prime per sample (then
    `num_samples` is its length); each prime runs through the model on its own, and the
    samples are then generated together as one batch. Without a prime, the first character
    is drawn from the corpus's character frequencies. With `stop_at`, a sample ends once
    its text ends with that string (which is included); an ended sample yields "" until
    all have ended, and then generation stops. `fast` steps the model with
    `stepping.Stepper` (True) or calls it (False); None, the default, steps on a CPU.

    Steps are computed in short blocks (up to BLOCK_STEPS, or BLOCK_SECONDS), each in one
    trip into inference mode, and then yielded one by one: entering inference mode for
    every character would cost about as much as a small model's step, and the caller's
    code between characters runs outside it.
    """
    primes = prime if isinstance(prime, list) else None
    if primes is not None:
        num_samples = len(primes)
    check_options(temperature, top_k, top_p, length,
                  max(num_samples, 1) if primes is not None else num_samples)
    for text in primes if primes is not None else [prime]:
        check_prime(text, vocab)
    if stop_at == "":
        raise UsageError("the stop string must not be empty")
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
                starts = [_start(model, vocab, text, device) for text in primes]
                logits = torch.cat([lg for lg, _ in starts])
                state = _stack([st for _, st in starts], model, device)
            step = _step_function(model, device, fast, num_samples)
        picker = Picker(temperature, top_k, top_p, generator, length)
        tails = [""] * num_samples  # the last characters of each sample, to spot stop_at
        done = [False] * num_samples
        produced = 0
        run = getattr(step, "run", None) if picker.fast else None  # whole blocks at once
        steps_per_run = 1  # grows while a block takes less than BLOCK_SECONDS

        def add(chars: list[str]) -> bool:
            """Count a step's characters (blanking those of ended samples): True once
            generation has ended."""
            nonlocal produced
            if stop_at is not None:
                for n, char in enumerate(chars):
                    if done[n]:
                        chars[n] = ""
                        continue
                    tails[n] = (tails[n] + char)[-len(stop_at):]
                    done[n] = tails[n] == stop_at
            produced += 1
            return bool((length and produced == length) or (stop_at is not None and all(done)))

        @torch.inference_mode()
        def block() -> tuple[list[list[str]], bool]:
            """The next few steps' characters, and whether generation has ended."""
            nonlocal logits, state
            rows, started = [], time.perf_counter()
            while True:
                next_ids = picker(logits)  # (N,)
                rows.append([vocab.chars[i] for i in next_ids.tolist()])
                if add(rows[-1]):
                    return rows, True
                logits, state = step(next_ids, state)
                if (len(rows) >= BLOCK_STEPS
                        or time.perf_counter() - started >= BLOCK_SECONDS):
                    return rows, False

        @torch.inference_mode()
        def run_block() -> tuple[list[list[str]], bool]:
            """The same, picked and stepped by `Stepper.run` in one call. Its last step is
            taken even when generation then ends: one step spare, the text the same."""
            nonlocal logits, state, steps_per_run
            started = time.perf_counter()
            wanted = min(steps_per_run, length - produced) if length else steps_per_run
            ids = run(picker.take(logits, wanted), logits, state)  # (k, N)
            logits, state = step.logits, step.state
            took = time.perf_counter() - started
            if took < BLOCK_SECONDS / 2:
                steps_per_run = min(2 * steps_per_run, BLOCK_STEPS)
            elif took > BLOCK_SECONDS:
                steps_per_run = max(1, steps_per_run // 2)
            rows = []
            for row in ids.tolist():
                rows.append([vocab.chars[i] for i in row])
                if add(rows[-1]):
                    return rows, True
            return rows, False

        finished = False
        while not finished:
            rows, finished = run_block() if run is not None else block()
            yield from rows
    finally:
        model.train(was_training)


def _step_function(model: CharRNN, device: torch.device, fast: bool | None,
                   batch_size: int) -> StepFunction:
    """(ids (N,), state) -> (logits (N, V), state): one character through the model."""
    if fast is None:
        if device.type != "cpu":
            return module_step(model)
        return fastest_step(model, batch_size)
    return Stepper(model) if fast else module_step(model)


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
