"""Tests for charlstm.data.batches: truncated-BPTT training batches and evaluation batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import charlstm.data.batches as data_module
from charlstm.data.batches import TrainBatches
from charlstm.model.charrnn import IGNORE_INDEX
from charlstm.infer.streams import eval_batches
from charlstm.errors import UsageError

# tokens whose value is their own position, so every id in a batch says exactly where in
# the array it came from
N = 3000
POSITIONS = np.arange(N, dtype=np.int64)


def positions(tensor: torch.Tensor) -> np.ndarray:
    return tensor.numpy()


def random_tokens(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50, size=n).astype(np.uint8)


# --------------------------------------------------------------------- contiguous mode


def test_targets_are_inputs_shifted_by_one():
    tokens = random_tokens(2000)
    batches = TrainBatches(tokens, 2000, batch_size=4, seq_len=10, seed=3)
    pos = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, seed=3)
    for _ in range(batches.steps_per_epoch + 3):
        b, p = batches.next(), pos.next()
        assert b.inputs.shape == b.targets.shape == (4, 10)
        assert b.inputs.dtype == b.targets.dtype == torch.int64
        where = positions(p.inputs)
        assert np.array_equal(b.inputs.numpy(), tokens[where])
        assert np.array_equal(b.targets.numpy(), tokens[where + 1])


def test_steps_continue_each_stream_and_streams_are_disjoint():
    end, B, T = 2000, 5, 12
    batches = TrainBatches(POSITIONS, end, batch_size=B, seq_len=T, seed=7)
    steps = batches.steps_per_epoch
    assert steps >= 3
    seen = [batches.next() for _ in range(steps)]
    streams = np.concatenate([positions(b.inputs) for b in seen], axis=1)  # (B, steps*T)
    for b in range(B):
        # each stream is one contiguous run: step k+1 starts where step k ended
        assert np.array_equal(np.diff(streams[b]), np.ones(steps * T - 1))
    # streams are in order and do not overlap
    starts = streams[:, 0]
    assert np.all(np.diff(starts) >= steps * T)
    assert len(np.unique(streams)) == streams.size
    # everything stays inside the training split (targets included)
    assert streams.min() >= 0
    assert max(positions(b.targets).max() for b in seen) < end
    # the epoch covers nearly all of the split: at most one step per stream plus the
    # epoch offset is left out
    assert streams.size >= end - B * T - T


def test_fresh_only_at_epoch_start_and_rolls_over():
    batches = TrainBatches(POSITIONS, 1500, batch_size=4, seq_len=10, seed=1)
    steps = batches.steps_per_epoch
    first_epoch = [batches.next() for _ in range(steps)]
    assert [b.fresh for b in first_epoch] == [True] + [False] * (steps - 1)
    assert batches.epoch == 0 and batches.epochs_done == pytest.approx(1.0)
    rolled = batches.next()
    assert rolled.fresh
    assert batches.epoch == 1 and batches.step_in_epoch == 1
    assert not batches.next().fresh
    # epochs start at offsets drawn from the seed; different epochs may differ, but every
    # epoch start is within seq_len of the split start
    assert 0 <= positions(rolled.inputs)[0, 0] < 10
    assert 0 <= positions(first_epoch[0].inputs)[0, 0] < 10


def test_epoch_offsets_vary_with_epoch():
    batches = TrainBatches(POSITIONS, 1500, batch_size=4, seq_len=16, seed=1)
    firsts = set()
    for _ in range(8 * batches.steps_per_epoch):
        b = batches.next()
        if b.fresh:
            firsts.add(int(positions(b.inputs)[0, 0]))
    assert len(firsts) > 1


def test_warmup_is_context_before_each_stream():
    W = 6
    batches = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, bptt_warmup=W, seed=2)
    for _ in range(2 * batches.steps_per_epoch + 1):
        b = batches.next()
        if not b.fresh:
            assert b.warmup is None
            continue
        assert b.warmup.shape == (4, W)
        first = positions(b.inputs)[:, :1]
        assert np.array_equal(positions(b.warmup), first - W + np.arange(W))
        assert positions(b.warmup).min() >= 0


def test_no_warmup_by_default():
    b = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10).next()
    assert b.fresh and b.warmup is None


# ------------------------------------------------------------------ shuffled blocks


def test_blocks_are_read_whole_in_a_shuffled_order_that_changes_each_epoch():
    end, B, T, block = 3000, 4, 10, 45  # blocks of 45 characters become 50: whole steps
    batches = TrainBatches(POSITIONS, end, batch_size=B, seq_len=T, seed=7, block=block)
    steps = batches.steps_per_epoch
    per_stream = steps * T // 50
    assert per_stream == (end - 1 - (T - 1)) // 50 // B  # every whole block a stream can take
    orders = []
    for _ in range(2):
        seen = [batches.next() for _ in range(steps)]
        assert [b.fresh for b in seen] == [True] + [False] * (steps - 1)
        streams = np.concatenate([positions(b.inputs) for b in seen], axis=1)
        blocks = streams.reshape(B * per_stream, 50)  # each stream's blocks, in turn
        assert np.array_equal(np.diff(blocks, axis=1), np.ones((B * per_stream, 49)))
        starts = blocks[:, 0]
        assert len(set(starts)) == len(starts)  # no block twice in an epoch
        assert len({int(start) % 50 for start in starts}) == 1  # cut at one epoch offset
        assert max(positions(b.targets).max() for b in seen) < end
        assert not np.all(np.diff(starts) > 0)  # not in the text's order
        orders.append(starts)
    assert not np.array_equal(orders[0], orders[1])


def test_a_block_is_at_least_one_step():
    batches = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, seed=1, block=3)
    assert batches.block == 10
    streams = np.concatenate([positions(batches.next().inputs) for _ in range(3)], axis=1)
    assert not np.array_equal(np.diff(streams[0]), np.ones(29))  # a new block each step


def test_too_short_corpus_for_the_blocks_names_sizes():
    with pytest.raises(UsageError, match="too few"):
        TrainBatches(POSITIONS, 1000, batch_size=4, seq_len=10, block=300)
    TrainBatches(POSITIONS, 1300, batch_size=4, seq_len=10, block=300)


def test_blocks_and_random_windows_do_not_go_together():
    with pytest.raises(UsageError, match="give one of them"):
        TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, shuffle=True, block=100)


@pytest.mark.parametrize("shuffle, block", [(False, 0), (True, 0), (False, 24)])
def test_state_dict_resumes_identically(shuffle, block):
    kwargs = dict(batch_size=3, seq_len=8, bptt_warmup=4, shuffle=shuffle, seed=11,
                  block=block)
    tokens = random_tokens(1000, seed=5)
    straight = TrainBatches(tokens, 1000, **kwargs)
    stopped = TrainBatches(tokens, 1000, **kwargs)
    for k in range(stopped.steps_per_epoch + 5):  # past an epoch boundary
        straight.next()
        stopped.next()
    state = stopped.state_dict()
    resumed = TrainBatches(tokens, 1000, **kwargs)
    resumed.load_state_dict(dict(state))
    for _ in range(resumed.steps_per_epoch + 2):
        a, b = straight.next(), resumed.next()
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
        assert a.fresh == b.fresh
        assert (a.warmup is None) == (b.warmup is None)
        if a.warmup is not None:
            assert torch.equal(a.warmup, b.warmup)


def test_same_seed_same_batches_other_seed_differs():
    a = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, shuffle=True, seed=1)
    b = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, shuffle=True, seed=1)
    c = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, shuffle=True, seed=2)
    xa, xb, xc = a.next(), b.next(), c.next()
    assert torch.equal(xa.inputs, xb.inputs)
    assert not torch.equal(xa.inputs, xc.inputs)


def test_too_short_corpus_names_sizes():
    needed = TrainBatches.min_characters(8, 16, 0, False)
    with pytest.raises(UsageError) as info:
        TrainBatches(POSITIONS, needed - 1, batch_size=8, seq_len=16)
    message = str(info.value)
    assert f"{needed - 1:,}" in message and f"{needed:,}" in message
    assert "batch size 8" in message and "sequence length 16" in message
    # exactly the minimum works, and its batches stay inside the split
    batches = TrainBatches(POSITIONS, needed, batch_size=8, seq_len=16)
    for _ in range(3 * batches.steps_per_epoch):
        assert positions(batches.next().targets).max() < needed


def test_too_short_corpus_shuffle_mode():
    with pytest.raises(UsageError, match="warm-up"):
        TrainBatches(POSITIONS, 20, batch_size=2, seq_len=16, bptt_warmup=4, shuffle=True)
    TrainBatches(POSITIONS, 21, batch_size=2, seq_len=16, bptt_warmup=4, shuffle=True).next()


# ------------------------------------------------------------------------ shuffle mode


def test_shuffle_windows():
    end, B, T, W = 2000, 6, 10, 5
    batches = TrainBatches(POSITIONS, end, batch_size=B, seq_len=T, bptt_warmup=W,
                           shuffle=True, seed=4)
    starts = []
    for _ in range(50):
        b = batches.next()
        assert b.fresh
        assert b.inputs.shape == b.targets.shape == (B, T)
        assert b.warmup.shape == (B, W)
        window = np.concatenate([positions(b.warmup), positions(b.inputs),
                                 positions(b.targets)[:, -1:]], axis=1)  # (B, W+T+1)
        first = window[:, :1]
        assert np.array_equal(window, first + np.arange(W + T + 1))
        assert np.array_equal(positions(b.targets), positions(b.inputs) + 1)
        assert window.min() >= 0 and window.max() < end
        starts.extend(first[:, 0].tolist())
    assert len(set(starts)) > 100  # windows really are drawn at random


def test_shuffle_is_a_function_of_seed_and_step():
    kwargs = dict(batch_size=4, seq_len=10, bptt_warmup=3, shuffle=True, seed=9)
    one = TrainBatches(POSITIONS, 2000, **kwargs)
    run = [one.next() for _ in range(12)]
    # jump straight to step 7
    other = TrainBatches(POSITIONS, 2000, **kwargs)
    for _ in range(7):
        other.next()
    assert torch.equal(other.next().inputs, run[7].inputs)
    # consecutive steps differ
    assert not torch.equal(run[0].inputs, run[1].inputs)


def test_shuffle_without_warmup():
    b = TrainBatches(POSITIONS, 2000, batch_size=4, seq_len=10, shuffle=True).next()
    assert b.warmup is None and b.fresh


# ------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("start, end, streams, seq_len", [
    (100, 1000, 8, 16),
    (1, 50, 64, 7),  # more streams than characters
    (500, 537, 6, 4),  # uneven stream lengths
    (300, 301, 4, 8),  # a single character
    (10, 1000, 1, 1000),
    (10, 110, 6, 5),  # streams * length > n: the last stream is shorter
    (10, 20, 6, 5),  # the last stream is empty
])
def test_eval_batches_cover_every_target_once(start, end, streams, seq_len):
    _, chunks = eval_batches(POSITIONS, start, end, streams, seq_len)
    counts = np.zeros(N, dtype=int)
    stream_positions = None
    for inputs, targets in chunks:
        assert inputs.shape == targets.shape and inputs.shape[1] <= seq_len
        t, x = targets.numpy(), inputs.numpy()
        valid = t != IGNORE_INDEX
        np.add.at(counts, t[valid], 1)
        assert np.array_equal(x[valid], t[valid] - 1)  # input is the char before target
        cols = np.where(valid, t, -1)
        stream_positions = cols if stream_positions is None else np.concatenate(
            [stream_positions, cols], axis=1)
    assert np.all(counts[start:end] == 1)
    assert counts.sum() == end - start
    # within each stream, the targets are contiguous and increasing (state carries over)
    for row in stream_positions:
        row = row[row >= 0]
        if len(row) > 1:
            assert np.all(np.diff(row) == 1)


def test_eval_batches_ignore_index_pads_with_real_tokens():
    tokens = random_tokens(600, seed=3)
    _, chunks = eval_batches(tokens, 100, 577, 5, 20)
    ref_warm, ref_chunks = eval_batches(POSITIONS, 100, 577, 5, 20)
    for (x, t), (px, pt) in zip(chunks, ref_chunks):
        valid = pt.numpy() != IGNORE_INDEX
        assert np.array_equal(t.numpy()[valid], tokens[pt.numpy()[valid]])
        assert np.array_equal(x.numpy()[valid], tokens[px.numpy()[valid]])
        assert np.all(t.numpy()[~valid] == IGNORE_INDEX)
        # padding inputs are still valid ids (the model runs on them)
        assert x.numpy().min() >= 0


def test_eval_warmup_is_the_text_before_each_stream():
    start, end, streams, W = 400, 1000, 6, 32
    warmup, chunks = eval_batches(POSITIONS, start, end, streams, 16, warmup=W)
    first_inputs = next(iter(chunks))[0].numpy()[:, :1]
    assert warmup.shape == (streams, W)
    assert np.array_equal(warmup.numpy(), first_inputs - W + np.arange(W))


def test_eval_warmup_with_an_empty_last_stream():
    warmup, chunks = eval_batches(POSITIONS, 10, 20, 6, 5, warmup=4)
    assert warmup.shape == (6, 4)
    assert warmup.numpy().min() >= 0 and warmup.numpy().max() < 20
    first_inputs = next(iter(chunks))[0].numpy()[:5, :1]
    assert np.array_equal(warmup.numpy()[:5], first_inputs - 4 + np.arange(4))


def test_eval_warmup_limited_by_text_before_split():
    warmup, _ = eval_batches(POSITIONS, 10, 100, 2, 8, warmup=128)
    assert warmup.shape == (2, 9)  # only start - 1 characters exist before the first input
    assert warmup.numpy().min() >= 0
    none, _ = eval_batches(POSITIONS, 1, 100, 2, 8, warmup=128)
    assert none is None


def test_eval_batches_rejects_empty_span():
    with pytest.raises(ValueError):
        eval_batches(POSITIONS, 0, 10, 2, 4)
    with pytest.raises(ValueError):
        eval_batches(POSITIONS, 10, 10, 2, 4)


# ---------------------------------------------------------------- several processes


@pytest.mark.parametrize("world", [2, 3, 6])
@pytest.mark.parametrize("mode", [dict(), dict(bptt_warmup=4), dict(shuffle=True),
                                  dict(shuffle=True, bptt_warmup=3),
                                  dict(block=24, bptt_warmup=2)],
                         ids=["contiguous", "contiguous-warmup", "shuffle", "shuffle-warmup",
                              "blocks"])
def test_processes_share_out_the_global_streams(world, mode):
    """Each process's batch is its contiguous slice of the one-process batch, at every
    step and across epochs, so N processes together train the same streams as one."""
    B, T = 6, 8
    whole = TrainBatches(POSITIONS, 800, batch_size=B, seq_len=T, seed=5, **mode)
    shares = [TrainBatches(POSITIONS, 800, batch_size=B, seq_len=T, seed=5, rank=rank,
                           world_size=world, **mode) for rank in range(world)]
    assert [s.streams for s in shares] == [slice(r * B // world, (r + 1) * B // world)
                                          for r in range(world)]
    for _ in range(2 * whole.steps_per_epoch + 3):
        expected, parts = whole.next(), [s.next() for s in shares]
        assert all(part.fresh == expected.fresh for part in parts)
        for field in ("inputs", "targets", "warmup"):
            if getattr(expected, field) is None:
                assert all(getattr(part, field) is None for part in parts)
            else:
                joined = torch.cat([getattr(part, field) for part in parts])  # (B, ...)
                assert torch.equal(joined, getattr(expected, field)), field
        # the position is global: the same on every process and in one
        assert all(s.state_dict() == whole.state_dict() for s in shares)
        assert all(s.epochs_done == whole.epochs_done for s in shares)


def test_batch_size_must_divide_among_processes():
    with pytest.raises(UsageError, match=r"batch_size 6 must be a multiple of the number "
                                         r"of processes \(4\)"):
        TrainBatches(POSITIONS, 2000, batch_size=6, seq_len=8, rank=1, world_size=4)


# ------------------------------------------------------------------ memory on big corpora


def test_training_batches_hand_pages_back_every_so_often(monkeypatch):
    released = []
    monkeypatch.setattr(data_module, "RELEASE_EVERY", 5)
    monkeypatch.setattr(data_module, "release_pages", released.append)
    tokens = np.arange(2_000) % 50
    for shuffle in (False, True):
        released.clear()
        batches = TrainBatches(tokens, 1_800, 4, 8, shuffle=shuffle)
        for _ in range(12):
            batches.next()
        assert len(released) == 2 and all(t is tokens for t in released)
