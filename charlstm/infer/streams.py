"""Predicting every character of a long text at the speed of batched forward passes: the
text is read as parallel streams, each warmed up on the characters before it.

Read exactly, a text is one stream: a single state carried from its first character to
its last, one (1, t) slice after another, which leaves a CPU's matrix units mostly idle.
Here the characters to predict are cut into S contiguous streams read side by side as
one (S, t) batch, each with its own carried state. Stream s starts where stream s-1
ends, without s-1's state; instead its state is built by running the model (without
the output layer) over the W characters before its first input. A recurrent model's
memory fades, so the state after W characters is nearly the state after all of them,
and each stream's predictions are nearly the exact ones (docs/sampling.md has the
measured difference for several W; W costs S x W extra characters per span).

Training's evaluation reads the validation split this way (`span_loss` over
tokens[start:end]); whole-text scoring (`text_loss`) reads an input of any length in
windows of at most `window` characters, each a span laid out the same way, keeping only
the window being read and the W + 1 characters before it: memory stays bounded however
long the input is. At the very start of a text, where no W characters precede it, the
first W characters are read as one exact stream, so a text shorter than two streams'
worth is read exactly.

Both run in the precision they are given (fp32, or bf16 autocast where measured faster:
see precision.py); whole-text scoring decides it once per text, at its first window.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from ..device import autocast
from ..model.charrnn import IGNORE_INDEX, CharRNN
from ..data.vocab import ids_tensor
from .precision import text_choice

SCORE_STREAMS = 128  # parallel streams when scoring a whole text: a big batch
SCORE_WARMUP = 256  # characters before each scoring stream that build its state
MIN_STREAM = 4 * SCORE_WARMUP  # shortest scoring stream: warm-ups cost at most 1/4 more
SCORE_WINDOW = 1 << 22  # characters predicted per window (8 bytes each as int64 ids)
MAX_ELEMENTS = 1 << 22  # activations per time slice, (S x t x max(hidden, vocab))


def sum_dtype(device: torch.device) -> torch.dtype:
    """float64 for sums of losses, except on Apple MPS, which has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def eval_batches(tokens: np.ndarray, start: int, end: int, num_streams: int,
                 seq_len: int, warmup: int = 0
                 ) -> tuple[torch.Tensor | None, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """Batches that predict every character of tokens[start:end] exactly once.

    The span is cut into `num_streams` contiguous streams, each read in `seq_len` slices
    with its hidden state carried along; the `warmup` characters before each stream
    (from the text before it, which may be the training split) build its first state.
    Returns (warmup (S, W) or None, iterator of (inputs (S, T), targets (S, T))); targets
    past the end of a stream are IGNORE_INDEX.
    """
    if start < 1 or end <= start:
        raise ValueError("evaluation needs at least one character before and in the span")
    n = end - start
    streams = max(1, min(num_streams, n))
    length = -(-n // streams)
    first_target = start + np.arange(streams) * length  # (S,)
    stream_end = np.minimum(first_target + length, end)
    warm = min(warmup, start - 1)
    context = None
    if warm > 0:
        first_input = np.minimum(first_target, end - 1) - 1
        context = ids_tensor(tokens[first_input[:, None] - warm + np.arange(warm)])

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for k in range(0, length, seq_len):
            positions = first_target[:, None] + k + np.arange(min(seq_len, length - k))
            valid = positions < stream_end[:, None]
            clamped = np.minimum(positions, end - 1)
            targets = np.where(valid, tokens[clamped].astype(np.int64), IGNORE_INDEX)
            yield ids_tensor(tokens[clamped - 1]), ids_tensor(targets)

    return context, chunks()


@torch.inference_mode()
def span_loss(model: CharRNN, tokens: np.ndarray, start: int, end: int, num_streams: int,
              seq_len: int, warmup: int, precision: str = "fp32"
              ) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy in nats (a 0-d tensor on the model's device) of
    predicting each of tokens[start:end] from the text before it, read as `eval_batches`
    lays it out, and how many were predicted (end - start); the model in eval mode, and
    back in its mode after."""
    device = next(model.parameters()).device
    warm, chunks = eval_batches(tokens, start, end, num_streams, seq_len, warmup)
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=sum_dtype(device), device=device)
    try:
        with autocast(device, precision):
            state = None
            if warm is not None:
                state = model.advance(warm.to(device))
            for inputs, targets in chunks:
                targets = targets.to(device)
                logits, _, state = model(inputs.to(device), state)  # (S, t, V)
                total += torch.nn.functional.cross_entropy(
                    logits.float().flatten(0, 1), targets.flatten(),
                    ignore_index=IGNORE_INDEX, reduction="sum")
    finally:
        model.train(was_training)
    return total, end - start


def text_loss(model: CharRNN, id_blocks: Iterable[np.ndarray],
              num_streams: int = SCORE_STREAMS, warmup: int = SCORE_WARMUP,
              min_stream: int = MIN_STREAM, window: int = SCORE_WINDOW,
              max_elements: int = MAX_ELEMENTS, precision: str = "auto"
              ) -> tuple[float, int]:
    """The summed cross-entropy in nats of predicting characters 1.. of one text, given
    as consecutive blocks of ids, each from the text before it (character 0 has none),
    and how many were predicted. The result does not depend on where the blocks are cut:
    the text is read in windows of `window` predictions, each as up to `num_streams`
    streams of at least `min_stream` characters, each warmed on `warmup` characters.
    `precision` auto is decided at the first window (precision.text_choice) from the
    predictions arrived by then: all of them, unless there are more than a window's."""
    reader = _Windows(model, num_streams, warmup, min_stream, max_elements, precision)
    held = np.empty(0, dtype=np.int64)  # the context (ids before `first`) and pending ids
    arrived: list[np.ndarray] = []
    size, first = 0, 1  # ids held and arrived; the index in `held` of the next prediction
    for block in id_blocks:
        arrived.append(block)
        size += block.size
        if size - first < window:
            continue
        held, arrived = np.concatenate([held, *arrived]), []
        while held.size - first >= window:
            reader.read(held, first, first + window, arrived=held.size - first)
            # keep the next window's warm-up and first input (all from the text's start,
            # while it is shorter than that)
            keep = max(0, first + window - 1 - warmup)
            held, first = held[keep:].copy(), first + window - keep
        size = held.size
    held = np.concatenate([held, *arrived])
    if held.size > first:
        reader.read(held, first, held.size, arrived=held.size - first)
    return reader.total, reader.count


class _Windows:
    """Reads windows of a text as parallel warmed streams and keeps the running sums."""

    def __init__(self, model: CharRNN, num_streams: int, warmup: int, min_stream: int,
                 max_elements: int, precision: str):
        if min(num_streams, min_stream, max_elements) < 1 or warmup < 0:
            raise ValueError("streams, stream length and slices must be positive")
        self.model, self.num_streams, self.warmup = model, num_streams, warmup
        self.min_stream, self.max_elements = min_stream, max_elements
        self.requested, self.choice = precision, None  # the latter at the first read
        self.total, self.count = 0.0, 0

    def read(self, ids: np.ndarray, start: int, end: int, arrived: int) -> None:
        """Add the predictions of ids[start:end]; ids[:start] is their context. `arrived`:
        the predictions of the text arrived so far from `start` on."""
        if self.choice is None:
            self.choice = text_choice(self.model, self.requested, arrived)
        if start - 1 < self.warmup:
            # the text's start (`ids` begins with its first character): read as one
            # stream warmed on all of ids[:start], which is the exact reading, up to
            # where the text is long enough for a warm-up of its own
            head_end = end if self._streams(start, end) == 1 else min(end, self.warmup + 1)
            self._add(ids, start, head_end, 1)
            start = head_end
        if start < end:
            self._add(ids, start, end, self._streams(start, end))

    def _streams(self, start: int, end: int) -> int:
        return min(self.num_streams, max(1, (end - start) // self.min_stream))

    def _add(self, ids: np.ndarray, start: int, end: int, streams: int) -> None:
        config = self.model.config
        seq_len = max(1, self.max_elements // (streams * max(config.hidden_size,
                                                             config.vocab_size)))
        device = next(self.model.parameters()).device
        with self.choice.running(device):  # its thread count (span_loss autocasts)
            total, count = span_loss(self.model, ids, start, end, streams, seq_len,
                                     self.warmup, self.choice.precision)
        self.total += total.item()
        self.count += count
