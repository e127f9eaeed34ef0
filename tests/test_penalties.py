"""Loop control: each penalty's formula on the logits, the fused block against the Python
path, no-repeat by brute force, and the ranges refused."""

from __future__ import annotations

import random

import pytest
import torch

import charlstm
from charlstm.data.vocab import Vocabulary
from charlstm.errors import UsageError
from charlstm.infer.generate import sample
from charlstm.infer.penalties import NgramWindow, Penalties
from charlstm.infer.penalty_state import PenaltyState
from charlstm.model.charrnn import CharRNN, ModelConfig
from charlstm.model.stepper import Stepper
from conftest import one_line_error, run_cli

VOCAB = Vocabulary("abcdef")


def state_after(penalties: Penalties, seen: str) -> PenaltyState:
    return PenaltyState(penalties, len(VOCAB), [VOCAB.encode(seen)], torch.device("cpu"))


LOGITS = torch.tensor([[2.0, -1.0, 0.5, -0.5, 1.0, 3.0]])  # a b c d e f
SEEN = "aab" + "c" * 3  # a twice, b once, c three times; d e f never


@pytest.mark.parametrize("name, penalties, expected", [
    ("frequency", Penalties(frequency=0.5), [2 - 2 * 0.5, -1 - 0.5, 0.5 - 1.5, -0.5, 1, 3]),
    ("presence", Penalties(presence=0.7), [2 - 0.7, -1 - 0.7, 0.5 - 0.7, -0.5, 1, 3]),
    ("repetition", Penalties(repetition=2.0), [2 / 2, -1 * 2, 0.5 / 2, -0.5, 1, 3]),
    ("all", Penalties(repetition=2.0, frequency=0.5, presence=0.7),
     [1 - 1 - 0.7, -2 - 0.5 - 0.7, 0.25 - 1.5 - 0.7, -0.5, 1, 3]),
])
def test_each_penalty_changes_the_logits_as_its_formula_says(name, penalties, expected):
    state = state_after(penalties, SEEN)
    assert state.apply(LOGITS)[0].tolist() == pytest.approx(expected)


def test_the_window_forgets_what_scrolled_out():
    state = state_after(Penalties(presence=1.0, window=4), "aabc")
    state.record(torch.tensor([3]))  # d in, the first a out: a still in the window
    state.record(torch.tensor([3]))  # the second a out
    assert state.apply(LOGITS)[0].tolist() == pytest.approx([2, -2, -0.5, -1.5, 1, 3])


def test_no_repeat_rules_out_completing_a_seen_ngram():
    state = state_after(Penalties(no_repeat=3), "abcab")  # "ab" then c was seen
    penalised = state.apply(LOGITS)[0]
    assert penalised[2] == float("-inf")
    assert torch.isfinite(penalised[[0, 1, 3, 4, 5]]).all()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    vocab = Vocabulary("".join(chr(c) for c in range(32, 127)))
    return CharRNN(ModelConfig(vocab_size=len(vocab), hidden_size=32, num_layers=2,
                               embed_size=8)).eval(), vocab


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_the_fused_block_penalises_as_the_python_path(kind):
    torch.manual_seed(1)
    vocab = Vocabulary("abcdefgh")
    net = CharRNN(ModelConfig(model=kind, vocab_size=len(vocab), hidden_size=16,
                              num_layers=2, embed_size=4)).eval()
    with torch.no_grad():
        net.head.weight.mul_(20)  # confident logits, so the penalties decide picks
    penalties = Penalties(repetition=1.5, frequency=0.4, presence=0.2, window=10)
    texts = []
    for fast in (True, False):
        generator = torch.Generator().manual_seed(5)
        texts.append(sample(net, vocab, "abc", 200, temperature=0.5, generator=generator,
                            fast=fast, penalties=penalties)[0])
    assert texts[0] == texts[1]
    plain = sample(net, vocab, "abc", 200, temperature=0.5,
                   generator=torch.Generator().manual_seed(5))[0]
    assert plain != texts[0]


def test_the_scripted_and_python_runs_agree():
    torch.manual_seed(2)
    vocab = Vocabulary("abcdefgh")
    net = CharRNN(ModelConfig(vocab_size=len(vocab), hidden_size=16, embed_size=4)).eval()
    runs = []
    for scripted in (True, False):
        stepper = Stepper(net)
        stepper.scripted = scripted
        state = PenaltyState(Penalties(frequency=2.0, window=5), len(vocab), [[0, 1]],
                             torch.device("cpu"))
        with torch.inference_mode():
            noise = torch.zeros(30, 1, len(vocab))
            runs.append(stepper.run(noise, torch.zeros(1, len(vocab)), None,
                                    state.tensors(), 0).flatten().tolist())
            runs.append(state.counts.tolist())
    assert runs[0] == runs[2] and runs[1] == runs[3]


def repeated_ngram(text: str, n: int, window: int) -> bool:
    for end in range(n, len(text) + 1):
        gram, before = text[end - n:end], text[max(0, end - window):end - 1]
        if gram in before:
            return True
    return False


def test_greedy_sampling_with_no_repeat_repeats_no_ngram(trained_run):
    lm = charlstm.load(trained_run)
    looping = lm.sample("the ", 400, temperature=0)
    assert repeated_ngram(looping, 6, 160)
    text = lm.sample("the ", 400, temperature=0, no_repeat=6, penalty_window=160)
    assert not repeated_ngram("the " + text, 6, 160)


@pytest.mark.parametrize("options, words", [  # the library names options as its API does
    (dict(frequency_penalty=2.5), "frequency_penalty must be in [-2, 2]"),
    (dict(presence_penalty=-3.0), "presence_penalty must be in [-2, 2]"),
    (dict(repetition_penalty=0.0), "repetition_penalty must be in (0, 10]"),
    (dict(no_repeat=-1), "no_repeat must be in [0, 100,000]"),
    (dict(penalty_window=0), "penalty_window must be in [1, 100,000]"),
    (dict(max_copy=3, no_repeat=5), "max_copy 3 is shorter than no_repeat 5"),
])
def test_out_of_range_options_are_refused(trained_run, options, words):
    lm = charlstm.load(trained_run)
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace("(", r"\(")):
        lm.sample("the ", 10, **options)


def test_the_cli_names_the_flags(trained_run, tmp_path):
    done = run_cli("sample", str(trained_run), "--presence-penalty", "9", cwd=tmp_path)
    assert done.returncode == 2
    assert "--presence-penalty must be in [-2, 2]" in one_line_error(done.stderr.decode())


def test_the_ngram_window_agrees_with_brute_force():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 4)
        window = rng.randint(n, 12)
        ngrams, seen = NgramWindow(n, window), []
        for _ in range(60):
            seen.append(rng.randrange(3))
            ngrams.push(seen[-1])
            last = seen[-window:]
            context = seen[len(seen) - (n - 1):] if n > 1 else []
            expected = {last[j + n - 1] for j in range(len(last) - n + 1)
                        if last[j:j + n - 1] == context} if len(last) >= n - 1 else set()
            assert ngrams.banned() == expected
