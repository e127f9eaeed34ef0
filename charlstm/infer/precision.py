"""The precision scoring runs in: fp32, or bf16 autocast where it is measured faster.

As training does (device.measured_cpu_precision), precision `auto` on a CPU times the
work itself, here a few forward passes (output layer and loss included) at whole-text
scoring's layout, SCORE_STREAMS streams side by side, once in bf16 and once in fp32 in
turn, and takes bf16 only if it is clearly faster. The choice is made once per model
shape and device (and torch thread count) in a process and kept: a model of the same
shape on the same device runs at the same speed, whatever its weights. On a CUDA GPU
`auto` is bf16 (fp16 on GPUs without bf16), on Apple MPS fp32, without measuring.

`auto` leaves short work in fp32, where a measurement would cost more than bf16 saves:
a whole text with fewer than AUTO_MIN_CHARS predictions is read in fp32 and measures
nothing. Per-line scoring (`score_texts`) cannot know how many lines will come, so it
takes the measured choice for every line: a line's score then depends only on the
line and the machine, not on what was read with it. Reading exactly (`exact`) is
always fp32.

bf16 rounds the model's activations to 8 bits of mantissa, so its score differs a
little from fp32's: docs/sampling.md has the measured difference.
"""

from __future__ import annotations

import logging
import time

import torch

from ..device import autocast, measured_cpu_precision, precision_without_measuring
from ..errors import UsageError
from ..model.charrnn import CharRNN

AUTO_MIN_CHARS = 1 << 18  # a whole text shorter than this is read in fp32 under auto
MEASURE_STREAMS = 128  # the streams of the timed passes: whole-text scoring's batch
MEASURE_STEPS = 32  # characters per stream of each timed pass
MEASURE_ROUNDS = 3  # timed passes of each precision, in turn

logger = logging.getLogger(__name__)
_chosen: dict[tuple, tuple[str, str]] = {}  # (model shape, device, threads) -> choice


def check_precision(precision: str, exact: bool) -> None:
    """A usage error for a precision that does not exist, or for exact reading in
    anything but fp32."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise UsageError.naming(f"{{precision}} must be auto, fp32, bf16 or fp16, "
                                f"not {precision!r}")
    if exact and precision not in ("auto", "fp32"):
        raise UsageError.naming(f"{{exact}} reads in fp32; drop {{precision}} {precision}")


def scoring_precision(model: CharRNN, requested: str = "auto") -> str:
    """The precision to score in on the model's device: as asked, or for auto, by the
    device, or on a CPU by a measurement made once per model shape and device."""
    device = next(model.parameters()).device
    decided = precision_without_measuring(requested, device)
    if decided is not None:
        return decided
    key = (*_shape(model), str(device), torch.get_num_threads())
    if key not in _chosen:
        _chosen[key] = measured_cpu_precision(lambda p: forward_seconds(model, p),
                                              MEASURE_ROUNDS)
        logger.info("scoring in %s", _chosen[key][1])
    return _chosen[key][0]


def text_precision(model: CharRNN, requested: str, predictions: int) -> str:
    """The precision of a whole text with (at least) `predictions` predictions: under
    auto, fp32 for fewer than AUTO_MIN_CHARS, else `scoring_precision`."""
    if requested == "auto" and predictions < AUTO_MIN_CHARS:
        return "fp32"
    return scoring_precision(model, requested)


def forward_seconds(model: CharRNN, precision: str, streams: int = MEASURE_STREAMS,
                    steps: int = MEASURE_STEPS) -> float:
    """Seconds of one forward pass with the loss over (streams, steps) random ids, in
    `precision`; the caller's random numbers are left as they were."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            ids = torch.randint(model.config.vocab_size, (streams, steps + 1), device=device)
            started = time.perf_counter()
            with autocast(device, precision):
                logits, _, _ = model(ids[:, :-1])  # (S, T, V)
                torch.nn.functional.cross_entropy(logits.float().flatten(0, 1),
                                                  ids[:, 1:].flatten(), reduction="sum")
            return time.perf_counter() - started
    finally:
        model.train(was_training)


def forget_choices() -> None:
    """Drop the kept choices, so that the next score measures again (for tests)."""
    _chosen.clear()


def _shape(model: CharRNN) -> tuple:
    c = model.config
    return (c.model, c.num_layers, c.hidden_size, c.embed_size, c.vocab_size)
