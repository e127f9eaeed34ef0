"""infer/batch_step.py: generations that join and leave one batch at any step, each with
its own options and generator, give exactly the ids they give alone."""

from __future__ import annotations

import pytest
import torch

from charlstm.data.vocab import Vocabulary
from charlstm.errors import UsageError
from charlstm.infer.batch_step import BatchStepper, safe_sizes
from charlstm.model.charrnn import CharRNN, ModelConfig

VOCAB = Vocabulary.from_text("".join(chr(c) for c in range(32, 127)) + "\n")


def tiny(kind: str, layers: int = 2, hidden: int = 32) -> CharRNN:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=len(VOCAB), num_layers=layers, hidden_size=hidden,
                         embed_size=16, dropout=0.0, model=kind)
    return CharRNN(config).eval()


def options(seed: int) -> dict:
    """Sampled, greedy, and top-p generations (top-p picks one step at a time)."""
    return {"temperature": 0.0 if seed % 4 == 1 else 0.8,
            "top_p": 0.9 if seed % 3 == 0 else None}


def join(batch: BatchStepper, seed: int, length: int, exact: bool = True):
    return batch.join(["The ", "a"] if seed == 2 else ["The "], length,
                      generator=torch.Generator().manual_seed(seed), exact=exact,
                      **options(seed))


def alone(model: CharRNN, seed: int, length: int) -> list[list[int]]:
    batch = BatchStepper(model, VOCAB, max_rows=32)
    generation, ids = join(batch, seed, length), []
    while generation.left:
        ids += batch.step(5)[0]
    return ids


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_a_seeded_generation_gives_its_ids_alone_whoever_joins_and_leaves(kind):
    model, length = tiny(kind), 60
    expected = {seed: alone(model, seed, length) for seed in range(6)}
    batch = BatchStepper(model, VOCAB, max_rows=32)
    running, got, round_number = {}, {}, 0
    while round_number < 9 or running:
        if round_number < 9:  # seeds 6..8 unseeded company, joining between the others
            seed = round_number
            running[seed] = join(batch, seed, length + 7 * seed, exact=seed < 6)
            got[seed] = []
        for (seed, generation), ids in zip(list(running.items()),
                                           batch.step(3 + round_number % 7)):
            got[seed] += ids
            if generation.left == 0:
                batch.leave(generation)
                del running[seed]
        round_number += 1
    for seed in range(6):
        assert got[seed][:length] == expected[seed], seed
    assert len(got[2][0]) == 2  # two primes: two samples per step


def test_each_safe_size_is_one_where_rows_agree():
    sizes = safe_sizes(tiny("lstm"), 24)
    assert sizes and sizes[-1] == 24  # the reference's own size, its rows reversed
    assert all(a < b for a, b in zip(sizes, sizes[1:]))


def test_bad_options_or_too_many_rows_are_refused():
    batch = BatchStepper(tiny("lstm", layers=1), VOCAB, max_rows=2)
    with pytest.raises(UsageError):
        batch.join(["x"], 10, -1.0, None, torch.Generator(), exact=False)
    with pytest.raises(UsageError):
        batch.join(["\x01"], 10, 1.0, None, torch.Generator(), exact=False)
    batch.join(["a", "b"], 10, 1.0, None, torch.Generator(), exact=False)
    with pytest.raises(ValueError):
        batch.join(["c"], 10, 1.0, None, torch.Generator(), exact=False)
    assert batch.rows == 2
