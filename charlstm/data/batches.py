"""Batches for truncated backpropagation through time (TBPTT).

Training runs in one of two modes.

Contiguous streams (the default, as in char-rnn, torch-rnn and word_language_model): the
training split is cut into `batch_size` contiguous streams; step k feeds characters
[k*seq_len, (k+1)*seq_len) of every stream, and the trainer carries each stream's hidden
state from one step to the next (detached), so the model sees context far beyond
`seq_len`. The carried state is missing at the start of each epoch; there, when
`bptt_warmup` > 0, the `bptt_warmup` characters just before each stream's start are run
without gradient to build it. Each epoch shifts the streams by an offset drawn from the
seed, so epochs do not cut the text at the same places.

Shuffled blocks (`block` > 0, a variant of the contiguous streams): the training split is
cut into blocks of `block` characters (rounded up to whole steps) and each epoch deals
them out to the streams in an order drawn from the seed, each stream reading its blocks
one after another with its state carried across, as across a file's end. Contiguous
streams keep a step's streams in the same few files for hundreds of steps, so that the
model drifts towards whatever they hold; blocks change them every `block` characters.

Random windows (`shuffle`): every step draws `batch_size` windows of `bptt_warmup +
seq_len + 1` characters at random; the first `bptt_warmup` only build the hidden state
(no gradient), the next `seq_len` are trained on. This is TBPTT(k1, k2) with
k1 = bptt_warmup + seq_len steps run and only the last k2 = seq_len backpropagated.

Every draw comes from a generator seeded by (seed, epoch) or (seed, step), so the batch
sequence is a pure function of the position and a resume continues it exactly.

With several processes (see `distributed`), `batch_size` stays the global number of
streams: every process lays them out the same way and takes its own contiguous share,
streams [rank * B/N, (rank + 1) * B/N). The layout and the position do not depend on the
number of processes, so a checkpoint means the same thing for any N that divides B.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .encoding import release_pages
from ..errors import UsageError
from .vocab import ids_tensor

RELEASE_EVERY = 1000  # batches between handing the corpus pages read back to the OS


@dataclass
class Batch:
    inputs: torch.Tensor  # (b, T) token ids; b = B, or B/N for each of N processes
    targets: torch.Tensor  # (b, T) the next token of each input
    warmup: torch.Tensor | None  # (b, W) context to run without gradient first, or None
    fresh: bool  # True when the carried hidden state must be dropped before this batch


class TrainBatches:
    """The training batch sequence over tokens[:end], resumable from `state_dict`."""

    def __init__(self, tokens: np.ndarray, end: int, batch_size: int, seq_len: int,
                 bptt_warmup: int = 0, shuffle: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, block: int = 0):
        self.tokens, self.end = tokens, end
        self.batch_size, self.seq_len, self.warmup = batch_size, seq_len, bptt_warmup
        self.shuffle, self.seed = shuffle, seed
        self.block = -(-block // seq_len) * seq_len  # whole steps; 0 = one block a stream
        if shuffle and block:
            raise UsageError.naming("{shuffle} trains on random windows, not streams, so "
                                    "{stream_block} has nothing to cut: give one of them")
        needed = self.min_characters(batch_size, seq_len, bptt_warmup, shuffle, self.block)
        if end < needed:
            raise UsageError.naming(
                f"the training split has {end:,} characters, too few for batch size "
                f"{batch_size} x " + (f"stream blocks of {self.block:,}" if self.block
                                      else f"sequence length {seq_len}")
                + (f" with {bptt_warmup} warm-up characters" if bptt_warmup else "")
                + f" (needs at least {needed:,}); use a longer corpus or lower "
                "{batch_size} / " + ("{stream_block}" if self.block else "{seq_len}")
            )
        if batch_size % world_size:
            raise UsageError.naming(
                f"{{batch_size}} {batch_size} must be a multiple of the number of processes "
                f"({world_size}): each process trains an equal share of the streams")
        share = batch_size // world_size
        self.streams = slice(rank * share, (rank + 1) * share)  # this process's streams
        self.epoch = 0
        self.step_in_epoch = 0
        self._starts = self._stream_starts(0)
        self._batches_read = 0  # in this process (not part of the position)

    @staticmethod
    def min_characters(batch_size: int, seq_len: int, bptt_warmup: int, shuffle: bool,
                       block: int = 0) -> int:
        if shuffle:
            return bptt_warmup + seq_len + 1
        # the largest epoch offset is seq_len - 1; every stream needs one full step (block)
        return bptt_warmup + (seq_len - 1) + batch_size * max(seq_len, block) + 1

    @property
    def steps_per_epoch(self) -> int:
        """Steps in one pass over the training split (in shuffle mode, in characters)."""
        if self.shuffle:
            return max(1, self.end // (self.batch_size * self.seq_len))
        if self.block:
            return self._blocks_per_stream * self.block // self.seq_len
        return self._stream_len(self.seq_len - 1) // self.seq_len

    def _blocks(self, offset: int) -> int:
        """Whole blocks in the split after the warm-up and the epoch's `offset`."""
        return (self.end - 1 - self.warmup - offset) // self.block

    @property
    def _blocks_per_stream(self) -> int:
        """The same in every epoch: as many as the largest offset leaves each stream."""
        return self._blocks(self.seq_len - 1) // self.batch_size

    def _stream_len(self, offset: int) -> int:
        return (self.end - 1 - self.warmup - offset) // self.batch_size

    def _stream_starts(self, epoch: int) -> np.ndarray:
        offset = int(np.random.default_rng([self.seed, epoch]).integers(self.seq_len))
        base = self.warmup + offset
        if self.block:  # (B, blocks a stream): where each of a stream's blocks starts
            order = np.random.default_rng([self.seed, 2, epoch]).permutation(
                self._blocks(offset))
            per_stream = self._blocks_per_stream
            return base + order[:self.batch_size * per_stream].reshape(
                self.batch_size, per_stream) * self.block
        return base + np.arange(self.batch_size) * self._stream_len(offset)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        self._starts = self._stream_starts(self.epoch)

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.step_in_epoch / self.steps_per_epoch

    def next(self) -> Batch:
        self._batches_read += 1
        if self._batches_read % RELEASE_EVERY == 0:  # memory stays flat on a huge corpus
            release_pages(self.tokens)
        if self.shuffle:
            return self._random_windows()
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch += 1
            self.step_in_epoch = 0
            self._starts = self._stream_starts(self.epoch)
        fresh = self.step_in_epoch == 0
        offsets = np.arange(self.seq_len + 1)
        starts = self._starts[self.streams]  # (b,) this process's streams: all of B in one
        read = self.step_in_epoch * self.seq_len  # characters into each stream
        if self.block:  # the block being read, and where in it
            starts, read = starts[:, read // self.block], read % self.block
        positions = starts[:, None] + read + offsets
        chunk = self.tokens[positions]  # (b, T+1)
        warmup = None
        if fresh and self.warmup:
            warmup = ids_tensor(self.tokens[starts[:, None] - self.warmup + np.arange(self.warmup)])
        self.step_in_epoch += 1
        return Batch(ids_tensor(chunk[:, :-1]), ids_tensor(chunk[:, 1:]), warmup, fresh)

    def _random_windows(self) -> Batch:
        step = self.epoch * self.steps_per_epoch + self.step_in_epoch
        rng = np.random.default_rng([self.seed, 1, step])
        span = self.warmup + self.seq_len + 1
        starts = rng.integers(0, self.end - span + 1, size=self.batch_size)[self.streams]
        chunk = self.tokens[starts[:, None] + np.arange(span)]  # (b, W+T+1)
        self.step_in_epoch += 1
        if self.step_in_epoch >= self.steps_per_epoch:
            self.epoch += 1
            self.step_in_epoch = 0
        warmup = ids_tensor(chunk[:, :self.warmup]) if self.warmup else None
        body = chunk[:, self.warmup:]
        return Batch(ids_tensor(body[:, :-1]), ids_tensor(body[:, 1:]), warmup, True)

