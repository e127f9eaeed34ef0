"""Beam search: greedy at width 1, deterministic, stop strings, several samples, refusals."""

from __future__ import annotations

import pytest
import torch

import charlstm
from charlstm.data.vocab import Vocabulary
from charlstm.errors import UsageError
from charlstm.infer.beam import beam_search
from charlstm.infer.generate import sample
from charlstm.model.charrnn import CharRNN, ModelConfig
from conftest import one_line_error, run_cli


@pytest.mark.parametrize("prime", ["", "ab"])
def test_a_beam_of_one_is_greedy(prime):
    torch.manual_seed(0)
    vocab = Vocabulary("abcdefgh", (5, 1, 1, 1, 1, 1, 1, 1))
    net = CharRNN(ModelConfig(vocab_size=len(vocab), hidden_size=16, embed_size=4)).eval()
    with torch.no_grad():
        net.head.weight.mul_(10)
    greedy = sample(net, vocab, prime, 80, temperature=0)[0]
    [(text, nats)] = beam_search(net, vocab, prime, 80, beam=1)
    assert text == greedy
    assert nats < 0


def test_wider_beams_find_likelier_texts_deterministically(trained_run):
    lm = charlstm.load(trained_run)
    one = beam_search(lm.model, lm.vocab, "the ", 60, beam=1)[0]
    four = beam_search(lm.model, lm.vocab, "the ", 60, beam=4)[0]
    assert four[1] >= one[1] - 1e-9  # same length: the sums compare directly
    assert lm.sample("the ", 60, beam=4) == four[0] == lm.sample("the ", 60, beam=4)


def test_beam_with_a_stop_string_and_several_samples(trained_run):
    lm = charlstm.load(trained_run)
    texts = lm.sample("the ", 100, beam=4, num_samples=3, stop_at=".")
    assert len(texts) == 3 and len(set(texts)) == 3
    assert texts[0].endswith(".") and len(texts[0]) < 100
    scored = beam_search(lm.model, lm.vocab, "the ", 100, 4, 3, ".")
    means = [nats / len(text) for text, nats in scored]
    assert means == sorted(means, reverse=True)  # ranked by mean log-likelihood


@pytest.mark.parametrize("options, words", [
    (dict(beam=2, num_samples=3), "at most 2 samples"),
    (dict(beam=2, temperature=0.5), "takes no temperature"),
    (dict(beam=2, top_k=3), "takes no top_k"),
    (dict(beam=2, frequency_penalty=0.5), "takes no penalties"),
    (dict(beam=2, max_copy=10), "takes no max_copy"),
    (dict(beam=0), r"beam must be in \[1, 64\]"),
])
def test_options_beam_search_ignores_are_refused(trained_run, options, words):
    lm = charlstm.load(trained_run)
    with pytest.raises(UsageError, match=words):
        lm.sample("the ", 10, **options)


def test_the_cli_prints_each_beam_sample(trained_run, tmp_path):
    done = run_cli("sample", str(trained_run), "-p", "the ", "--beam", "3", "-N", "2",
                   "-n", "40", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lm = charlstm.load(trained_run)
    first, second = lm.sample("the ", 40, beam=3, num_samples=2)
    assert done.stdout.decode() == f"the {first}\n\nthe {second}\n"
    done = run_cli("sample", str(trained_run), "--beam", "2", "-t", "0.7", cwd=tmp_path)
    assert done.returncode == 2
    line = one_line_error(done.stderr.decode())
    assert "beam search does not sample, so it takes no --temperature" in line
