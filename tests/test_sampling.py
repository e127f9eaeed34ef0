"""Tests for charlstm.infer.generate: temperature, top-k, top-p, seeds and primes."""

from __future__ import annotations

import math

import pytest
import torch

from charlstm.api import LanguageModel
from charlstm.errors import UsageError
from charlstm.model.charrnn import CharRNN
from charlstm.settings import ModelConfig
from charlstm.infer import generate as sampling
from charlstm.infer.picking import Picker
from charlstm.infer.generate import generate, pick, sample
from charlstm.data.vocab import Vocabulary

TEXT = "the quick brown fox jumps over the lazy dog. 0123456789!"


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.from_text(TEXT)


@pytest.fixture(scope="module")
def model(vocab) -> CharRNN:
    """An untrained model: its next-character distributions are broad, as seeds need."""
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=len(vocab), num_layers=2, hidden_size=32,
                               embed_size=8, dropout=0.0)).eval()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- seeds


def test_same_seed_same_text(model, vocab):
    a = sample(model, vocab, "the ", 100, generator=gen(5))
    b = sample(model, vocab, "the ", 100, generator=gen(5))
    assert a == b
    assert len(a) == 1 and len(a[0]) == 100
    assert set(a[0]) <= set(vocab.chars)


def test_different_seeds_different_text(model, vocab):
    texts = {sample(model, vocab, "the ", 100, generator=gen(seed))[0] for seed in range(5)}
    assert len(texts) == 5


def test_language_model_seed(model, vocab):
    lm = LanguageModel(model, vocab)
    assert lm.sample("fox", 50, seed=3) == lm.sample("fox", 50, seed=3)
    assert lm.sample("fox", 50, seed=3) != lm.sample("fox", 50, seed=4)
    assert "".join(lm.generate("fox", 50, seed=3)) == lm.sample("fox", 50, seed=3)


def test_sampling_leaves_global_rng_alone(model, vocab):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sample(model, vocab, "the ", 50, temperature=0.9, top_k=5, generator=gen(1))
    sample(model, vocab, "", 50, top_p=0.9, num_samples=2, generator=gen(2))
    lm = LanguageModel(model, vocab)
    lm.sample("the", 30, seed=7)
    lm.sample("the", 30, seed=None)
    assert torch.equal(torch.get_rng_state(), before)


def test_seed_none_gives_varied_text(model, vocab):
    lm = LanguageModel(model, vocab)
    assert len({lm.sample("the", 60) for _ in range(3)}) == 3


# --------------------------------------------------------------------- temperature


def test_temperature_zero_is_greedy(model, vocab):
    prime, length = "the qu", 40
    got = sample(model, vocab, prime, length, temperature=0.0, generator=gen(0))[0]
    # reference: rerun the whole text from the zero state and take the argmax each time
    text = prime
    with torch.no_grad():
        for _ in range(length):
            logits, _, _ = model(torch.tensor([vocab.encode(text)]))
            text += vocab.chars[int(logits[0, -1].argmax())]
    assert got == text[len(prime):]
    # greedy needs no randomness: the seed does not matter
    assert sample(model, vocab, prime, length, temperature=0.0, generator=gen(9))[0] == got


def test_temperature_zero_without_prime_starts_with_most_frequent_char(model, vocab):
    got = sample(model, vocab, "", 5, temperature=0.0)[0]
    most_common = max(zip(vocab.counts, vocab.chars))[1]
    assert got[0] == most_common


@pytest.mark.parametrize("temperature", [1e-6, 100.0])
def test_extreme_temperatures(model, vocab, temperature):
    texts = sample(model, vocab, "the ", 30, temperature=temperature, num_samples=4,
                   generator=gen(1))
    assert all(len(t) == 30 and set(t) <= set(vocab.chars) for t in texts)
    logits = torch.randn(2000, 10, generator=gen(3)) * 5
    ids = pick(logits, temperature, generator=gen(4))
    assert ids.min() >= 0 and ids.max() < 10
    if temperature < 1:
        assert torch.equal(ids, logits.argmax(-1))
    else:  # nearly uniform: every id shows up
        assert len(ids.unique()) == 10


def test_logits_not_finite_once_scaled_fall_back_to_greedy():
    logits = torch.tensor([[1e30, 3e30, -2e30, 2e30], [0.0, 1.0, 3.0, 2.0]])
    # / 1e-20 overflows; a -inf or a NaN logit is not finite at any temperature
    with_inf = torch.tensor([[1.0, 3.0, -2.0, 2.0], [-math.inf, 1.0, 3.0, 2.0]])
    for seed in range(20):  # sampling would pick something else now and then
        assert pick(logits, 1e-20, generator=gen(seed)).tolist() == [1, 2]
        assert pick(with_inf, 1.0, generator=gen(seed)).tolist() == [1, 2]
    with_nan = torch.tensor([[0.0, math.nan, 1.0]])
    assert pick(with_nan, 1.0, generator=gen(0)).tolist() == with_nan.argmax(-1).tolist()


def test_tiny_temperature_matches_greedy(model, vocab):
    cold = sample(model, vocab, "over ", 30, temperature=1e-6, generator=gen(1))[0]
    greedy = sample(model, vocab, "over ", 30, temperature=0.0)[0]
    assert cold == greedy


# ------------------------------------------------------------------- top-k, top-p


def test_top_k_only_returns_the_k_largest():
    logits = torch.randn(1, 20, generator=gen(0))
    for k in (1, 3, 7):
        ids = pick(logits.expand(5000, -1), 1.0, top_k=k, generator=gen(k))
        allowed = set(torch.topk(logits[0], k).indices.tolist())
        assert set(ids.tolist()) == allowed  # only those, and (many draws) all of them


def test_top_k_larger_than_vocab():
    logits = torch.zeros(4000, 6)
    ids = pick(logits, 1.0, top_k=1000, generator=gen(0))
    assert set(ids.tolist()) == set(range(6))


PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


@pytest.mark.parametrize("top_p, allowed", [
    (0.7, {0, 1}), (0.4, {0}), (0.9, {0, 1, 2}), (0.97, {0, 1, 2, 3}), (1.0, {0, 1, 2, 3}),
])
def test_top_p_keeps_the_smallest_nucleus(top_p, allowed):
    order = [2, 0, 3, 1]  # shuffled, so the order of ids does not help
    logits = PROBS.log()[order]
    rank_of = dict(enumerate(order))  # id -> its rank by probability
    draws = pick(logits.expand(20000, -1), 1.0, top_p=top_p, generator=gen(1))
    ranks = {rank_of[i] for i in draws.unique().tolist()}
    assert ranks == allowed


def test_top_p_renormalises_within_the_nucleus():
    draws = pick(PROBS.log().expand(20000, -1), 1.0, top_p=0.7, generator=gen(2))
    share = (draws == 0).float().mean().item()
    assert share == pytest.approx(0.5 / 0.8, abs=0.02)


def test_plain_sampling_follows_the_distribution():
    draws = pick(PROBS.log().expand(40000, -1), 1.0, generator=gen(3))
    freqs = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freqs, PROBS, atol=0.01, rtol=0)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_the_step_by_step_picker_follows_the_tempered_distribution(temperature):
    """Picker's race on Gumbel noise drawn for many steps at once draws what pick does."""
    picker = Picker(temperature, None, None, gen(5), length=0)
    logits = PROBS.log().expand(500, -1)
    draws = torch.cat([picker(logits) for _ in range(80)])  # 40,000 draws, several chunks
    tempered = PROBS ** (1 / temperature) / (PROBS ** (1 / temperature)).sum()
    freqs = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freqs, tempered, atol=0.01, rtol=0)


def test_the_picker_draws_no_more_noise_than_the_length_needs():
    """A generator handed from call to call continues where the last sample stopped."""
    rows, length = 3, 5
    generator = gen(6)
    picker = Picker(1.0, None, None, generator, length)
    for _ in range(length):
        picker(torch.zeros(rows, 4))
    expected = gen(6)
    torch.empty(length * rows * 4).uniform_(generator=expected)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=expected))


def test_the_picker_on_logits_that_are_not_finite():
    """+inf and NaN are taken greedily (as pick does); -inf has probability 0."""
    logits = torch.tensor([[1.0, math.inf, -2.0, 2.0], [0.0, 1.0, math.nan, 2.0],
                           [-math.inf, 0.0, 0.0, -math.inf]])
    picker = Picker(1.0, None, None, gen(7), length=0)
    draws = torch.stack([picker(logits) for _ in range(200)])  # (200, 3)
    assert (draws[:, 0] == 1).all() and (draws[:, 1] == 2).all()
    assert set(draws[:, 2].tolist()) == {1, 2}


def test_temperature_sharpens():
    draws = pick(PROBS.log().expand(20000, -1), 0.5, generator=gen(4))
    sharpened = PROBS ** 2 / (PROBS ** 2).sum()
    share = (draws == 0).float().mean().item()
    assert share == pytest.approx(sharpened[0].item(), abs=0.02)


def test_top_k_and_top_p_in_generation(model, vocab):
    texts = sample(model, vocab, "the ", 50, top_k=1, num_samples=2, generator=gen(0))
    greedy = sample(model, vocab, "the ", 50, temperature=0.0)[0]
    assert texts == [greedy, greedy]
    tiny_p = sample(model, vocab, "the ", 50, top_p=1e-9, generator=gen(5))[0]
    assert tiny_p == greedy


# ----------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("options", [
    dict(temperature=-0.1), dict(temperature=math.nan), dict(top_k=0), dict(top_k=-3),
    dict(top_p=0.0), dict(top_p=1.5), dict(top_p=-0.2), dict(num_samples=0),
])
def test_invalid_options_raise(model, vocab, options):
    with pytest.raises(UsageError):
        sample(model, vocab, "the", 10, **options)
    with pytest.raises(UsageError):
        list(generate(model, vocab, "the", 10, **options))


def test_invalid_length_raises(model, vocab):
    with pytest.raises(UsageError):
        sample(model, vocab, "the", -1)
    with pytest.raises(UsageError):
        list(generate(model, vocab, "the", -5))
    with pytest.raises(UsageError):
        sample(model, vocab, "the", 0)  # endless only when streaming


def test_unknown_prime_chars_are_named(model, vocab):
    with pytest.raises(UsageError) as info:
        sample(model, vocab, "the Zebra€ é", 10)
    message = str(info.value)
    for char in ("Z", "€", "é"):
        assert repr(char) in message
    assert "3 character" in message


def test_empty_prime(model, vocab):
    texts = sample(model, vocab, "", 25, num_samples=2, generator=gen(1))
    assert all(len(t) == 25 and set(t) <= set(vocab.chars) for t in texts)


def test_endless_generation_streams(model, vocab):
    stream = generate(model, vocab, "the", 0, generator=gen(1))
    chunks = [next(stream) for _ in range(500)]
    assert all(len(c) == 1 and c[0] in vocab for c in chunks)
    stream.close()


def test_num_samples_are_independent(model, vocab):
    texts = sample(model, vocab, "the ", 80, num_samples=3, generator=gen(11))
    assert len(texts) == 3
    assert all(len(t) == 80 for t in texts)
    assert len(set(texts)) == 3
    # greedy samples agree, since nothing random separates them
    greedy = sample(model, vocab, "the ", 20, temperature=0.0, num_samples=3)
    assert greedy[0] == greedy[1] == greedy[2]


def test_generation_restores_training_mode(model, vocab):
    model.train()
    try:
        sample(model, vocab, "the", 5, generator=gen(0))
        assert model.training
    finally:
        model.eval()


# ------------------------------------------------------------ stop strings, many primes


def test_stop_at_ends_each_sample_after_the_string(model, vocab):
    columns = list(generate(model, vocab, "the", 2000, num_samples=6, generator=gen(4),
                            stop_at="o"))
    texts = ["".join(chars) for chars in zip(*columns)]
    assert len(columns) < 2000  # stopped once every sample had written an "o"
    for text in texts:
        assert text.endswith("o") and text.count("o") == 1
    # an ended sample yields empty strings while the others go on
    assert any(chars.count("") for chars in columns)


def test_stop_at_of_several_characters(model, vocab):
    text = sample(model, vocab, "", 5000, generator=gen(1), stop_at="e ")[0]
    assert text.endswith("e ") and text.index("e ") == len(text) - 2


def test_stop_at_that_never_comes_stops_at_the_length(model, vocab):
    text = sample(model, vocab, "the", 50, generator=gen(2), stop_at="@@@")[0]
    assert len(text) == 50


def test_empty_stop_at_is_refused(model, vocab):
    with pytest.raises(UsageError, match="stop"):
        list(generate(model, vocab, "the", 10, stop_at=""))


def test_one_prime_per_sample_matches_each_prime_alone(model, vocab):
    """Greedy continuations of several primes at once equal those of each on its own."""
    primes = ["the quick", "", "0123", "lazy dog. the lazy dog. the lazy dog."]
    together = ["".join(chars) for chars in zip(*generate(model, vocab, primes, 30,
                                                          temperature=0))]
    alone = [sample(model, vocab, p, 30, temperature=0)[0] for p in primes]
    assert together == alone


def test_prime_list_is_checked_for_unknown_characters(model, vocab):
    with pytest.raises(UsageError, match="never saw"):
        list(generate(model, vocab, ["the", "Ω"], 5))


@pytest.mark.parametrize("options", [dict(length=50), dict(length=0, stop_at="e"),
                                     dict(length=40, num_samples=3, stop_at="a")])
def test_blocks_of_steps_do_not_change_the_text(model, vocab, monkeypatch, options):
    """Steps are computed a few at a time: the block size changes nothing in the output."""
    def run():
        stream = generate(model, vocab, "the ", temperature=0.9,
                          generator=torch.Generator().manual_seed(5), **options)
        return ["".join(chars) for chars in stream]

    whole = run()
    monkeypatch.setattr(sampling, "BLOCK_STEPS", 3)
    assert run() == whole
    monkeypatch.setattr(sampling, "BLOCK_STEPS", 1)
    assert run() == whole


def test_the_callers_code_runs_outside_inference_mode_between_characters(model, vocab):
    was_training = model.training
    model.train()
    stream = generate(model, vocab, "the ", length=0, generator=torch.Generator().manual_seed(1))
    try:
        for _ in range(100):
            next(stream)
            assert not torch.is_inference_mode_enabled()
            assert torch.is_grad_enabled()
            assert not model.training  # evaluation mode while generating
        stream.close()
        assert model.training  # and training mode back once it ends
    finally:
        model.train(was_training)


# ------------------------------------------- LanguageModel.generate: batches, primes, stop_at


def test_one_sample_streams_str_chunks_and_several_stream_one_list_per_step(model, vocab):
    lm = LanguageModel(model, vocab)
    single = list(lm.generate("the ", 20, seed=1))
    assert len(single) == 20 and all(isinstance(chunk, str) for chunk in single)
    steps = list(lm.generate("the ", 20, seed=1, num_samples=3))
    assert len(steps) == 20 and all(isinstance(s, list) and len(s) == 3 for s in steps)
    texts = ["".join(column) for column in zip(*steps)]
    assert texts == sample(model, vocab, "the ", 20, num_samples=3, generator=gen(1))
    assert texts == lm.sample("the ", 20, seed=1, num_samples=3)
    assert len(set(texts)) == 3


def test_several_primes_one_sample_each_in_order(model, vocab):
    lm = LanguageModel(model, vocab)
    primes = ["the quick", "", "fox"]
    texts = lm.sample(primes, 30, temperature=0.9, seed=4)
    assert isinstance(texts, list) and len(texts) == 3
    assert texts == sample(model, vocab, primes, 30, temperature=0.9, generator=gen(4))
    greedy = lm.sample(primes, 25, temperature=0)
    assert greedy == [lm.sample(prime, 25, temperature=0) for prime in primes]
    assert lm.sample(["fox"], 10, seed=1) == [lm.sample("fox", 10, seed=1)]  # a list: batched


def test_stop_at_ends_each_sample_with_the_stop_string(model, vocab):
    lm = LanguageModel(model, vocab)
    one = lm.sample("the ", 2000, seed=3, stop_at="o")
    assert one.endswith("o") and one.count("o") == 1
    many = lm.sample(["the ", "a", ""], 2000, seed=3, stop_at="o", num_samples=5)
    assert len(many) == 3
    assert all(text.endswith("o") and text.count("o") == 1 for text in many)
    steps = list(lm.generate("the ", 0, seed=3, stop_at="o", num_samples=2))  # endless
    assert steps[-1] != ["", ""] and all(len(step) == 2 for step in steps)
    assert ["".join(column) for column in zip(*steps)] == lm.sample(
        "the ", 0, seed=3, stop_at="o", num_samples=2)


def test_a_generator_continues_one_stream_of_randomness_over_calls(model, vocab):
    lm = LanguageModel(model, vocab)
    kept = gen(9)
    first, second = lm.sample("the", 30, generator=kept), lm.sample("the", 30, generator=kept)
    assert first == lm.sample("the", 30, seed=9) and second != first
    again = gen(9)
    assert [lm.sample("the", 30, generator=again) for _ in range(2)] == [first, second]


@pytest.mark.parametrize("prime, options", [
    ("the", dict(temperature=-1)), ("the", dict(num_samples=0)), ("the", dict(stop_at="")),
    ("the\x00", {}), (["the", "#"], {})])
def test_generate_checks_its_options_and_primes_at_the_call(model, vocab, prime, options):
    """Before any text: a caller that echoes the prime first never echoes a refused one."""
    with pytest.raises(UsageError):
        LanguageModel(model, vocab).generate(prime, 10, **options)
