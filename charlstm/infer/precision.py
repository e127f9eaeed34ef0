"""The precision scoring runs in, fp32 or bf16 autocast, and on how many CPU threads.

As training does (device.measured_cpu_precision), precision `auto` on a CPU times the
work itself, here a few forward passes (output layer and loss included) at whole-text
scoring's layout, MEASURE_STREAMS streams side by side, in fp32 and in bf16, each on
one thread and on all of torch's threads, in turn, and compares their median passes;
bf16 is taken only if it is clearly faster (device.BF16_MIN_SPEEDUP), and then the
faster thread count for it. Threads
matter: an LSTM step is a barrier for every thread, and a small model's step is so
short that a second thread, or one that another process holds up, can cost more than
it gives (on a loaded 2-core machine, a 1x64 model scored 8x faster on one thread).
The choice is made once per model shape and device (and torch thread count) in a
process and kept: a model of the same shape on the same device runs at the same speed,
whatever its weights. On a CUDA GPU `auto` is bf16 (fp16 on GPUs without bf16), on
Apple MPS fp32, without measuring; a precision asked for is used on the threads as
they are, measuring nothing.

`auto` leaves short work in fp32, where a measurement would cost more than it saves:
a whole text with fewer than AUTO_MIN_CHARS predictions is read in fp32 and measures
nothing. Per-line scoring (`score_texts`) cannot know how many lines will come, so it
takes the measured choice for every line: a line's score then depends only on the
line and the machine, not on what was read with it. Reading exactly (`exact`) is
always fp32.

bf16 rounds the model's activations to 8 bits of mantissa, so its score differs a
little from fp32's: docs/sampling.md has the measured difference (tests hold it within
0.01 bits per character of the exact score on a small trained model).
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import threading
import time
from dataclasses import dataclass

import torch

from ..device import (autocast, bf16_if_faster, missing_bf16, precision_without_measuring,
                      timed_rounds)
from ..errors import UsageError
from ..model.charrnn import CharRNN

AUTO_MIN_CHARS = 1 << 20  # a whole text shorter than this is read in fp32 under auto
MEASURE_STREAMS = 128  # the streams of the timed passes: whole-text scoring's batch
MEASURE_STEPS = 64  # characters per stream of each timed pass
MEASURE_ROUNDS = 3  # timed passes of each precision and thread count, in turn, after one
# untimed pass of each: 16 passes of 8,192 characters, 1/8 of the shortest text that
# auto measures for

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    """How to run scoring's passes through the model."""
    precision: str  # fp32, bf16 or fp16 (autocast)
    threads: int | None = None  # torch's CPU threads meanwhile; None: as they are
    note: str = ""  # what was chosen and why

    def running(self, device: torch.device):
        """The context to run the passes in: autocast on `device`, and the thread count."""
        return _Running(self, device)


_chosen: dict[tuple, Choice] = {}  # (model shape, device, threads) -> the choice


def check_precision(precision: str, exact: bool) -> None:
    """A usage error for a precision that does not exist, or for exact reading in
    anything but fp32."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UsageError.naming(f"{{precision}} must be auto, fp32, bf16 or fp16, "
                                f"not {precision!r}")
    if exact and precision not in ("auto", "fp32"):
        raise UsageError.naming(f"{{exact}} reads in fp32; drop {{precision}} {precision}")


def scoring_choice(model: CharRNN, requested: str = "auto") -> Choice:
    """How to score on the model's device: the precision as asked, or for auto, by the
    device, or on a CPU by a measurement made once per model shape and device."""
    device = next(model.parameters()).device
    decided = precision_without_measuring(requested, device)
    if decided is not None:
        return Choice(decided, note=f"{decided} (as asked)" if requested != "auto"
                      else f"{decided} (auto, on {device.type})")
    key = (*_shape(model), str(device), _process_threads())
    if key not in _chosen:
        _chosen[key] = measured_choice(model)
        logger.info("scoring in %s", _chosen[key].note)
    return _chosen[key]


def measured_choice(model: CharRNN) -> Choice:
    """fp32 or bf16, on one thread or all, as forward passes measure them here."""
    everyone = _process_threads()
    precisions = ["fp32"] if missing_bf16() else ["fp32", "bf16"]
    options = [(p, t) for p in precisions for t in sorted({1, everyone})]
    # the median pass, not the fastest: another process that holds a core up now and
    # then slows a second thread's passes only now and then, and the fastest of a few
    # short passes would miss what it costs a long text
    times = timed_rounds(lambda option: forward_seconds(model, *option), options,
                         MEASURE_ROUNDS, warm_up=lambda option: forward_seconds(model, *option))
    best = {option: statistics.median(seconds) for option, seconds in times.items()}
    fastest = {p: min((best[(p, t)], t) for t in sorted({1, everyone})) for p in precisions}
    if "bf16" in fastest:
        precision, note = bf16_if_faster(fastest["fp32"][0], fastest["bf16"][0])
    else:
        precision, note = "fp32", missing_bf16()
    threads = fastest[precision][1]
    return Choice(precision, threads,
                  f"{note}, on {threads} of {everyone} thread{'s' * (everyone > 1)}")


def measured_note(model: CharRNN) -> str | None:
    """What auto's measurement chose for this model here and why, if it has measured."""
    device = next(model.parameters()).device
    kept = _chosen.get((*_shape(model), str(device), _process_threads()))
    return kept.note if kept else None


def text_choice(model: CharRNN, requested: str, predictions: int) -> Choice:
    """How to read a whole text with (at least) `predictions` predictions: under auto,
    fp32 for fewer than AUTO_MIN_CHARS, else `scoring_choice`."""
    if requested == "auto" and predictions < AUTO_MIN_CHARS:
        return Choice("fp32", note="fp32 (auto, a short text)")
    return scoring_choice(model, requested)


class _Running(contextlib.AbstractContextManager):
    """Autocast in the choice's precision, on its thread count: torch's thread count is
    the process's, so passes that overlap (serve's threads) share one change, and the
    last to leave puts the count back."""

    lock = threading.Lock()
    inside = 0  # passes running on a changed thread count
    restore_to: int | None = None  # the count before the first of them

    def __init__(self, choice: Choice, device: torch.device):
        self.choice, self.device, self.stack = choice, device, contextlib.ExitStack()

    def __enter__(self):
        if self.choice.threads is not None:
            with _Running.lock:
                if _Running.inside == 0:
                    _Running.restore_to = torch.get_num_threads()
                if self.choice.threads != torch.get_num_threads():
                    torch.set_num_threads(self.choice.threads)
                _Running.inside += 1
            self.stack.callback(self._leave)
        return self.stack.enter_context(autocast(self.device, self.choice.precision))

    @staticmethod
    def _leave() -> None:
        with _Running.lock:
            _Running.inside -= 1
            if _Running.inside == 0 and _Running.restore_to != torch.get_num_threads():
                torch.set_num_threads(_Running.restore_to)

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)


def forward_seconds(model: CharRNN, precision: str, threads: int | None = None,
                    streams: int = MEASURE_STREAMS, steps: int = MEASURE_STEPS) -> float:
    """Seconds of one forward pass with the loss over (streams, steps) random ids, in
    `precision` on `threads`; the caller's random numbers are left as they were."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode(), \
                Choice(precision, threads).running(device):
            ids = torch.randint(model.config.vocab_size, (streams, steps + 1), device=device)
            started = time.perf_counter()
            logits, _, _ = model(ids[:, :-1])  # (S, T, V)
            torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                              ids[:, 1:].flatten(), reduction="sum")
            return time.perf_counter() - started
    finally:
        model.train(was_training)


def forget_choices() -> None:
    """Drop the kept choices, so that the next score measures again (for tests)."""
    _chosen.clear()


def _process_threads() -> int:
    """torch's thread count, as it is outside scoring's passes."""
    with _Running.lock:
        return _Running.restore_to if _Running.inside else torch.get_num_threads()


def _shape(model: CharRNN) -> tuple:
    c = model.config
    return (c.model, c.num_layers, c.hidden_size, c.embed_size, c.vocab_size)
