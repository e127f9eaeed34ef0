"""Reading a text as warmed parallel streams (charlstm.infer.streams.text_loss): every character
after the first is predicted once, wherever the input is cut; read with enough context it
is the exact reading; the warm-up brings the streams close to it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import charlstm
from charlstm.infer import streams

from conftest import TINY_TEXT


@pytest.fixture(scope="module")
def lm(trained_run) -> charlstm.LanguageModel:
    return charlstm.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def ids(lm) -> np.ndarray:
    return np.asarray(lm.vocab.encode(TINY_TEXT[:2000]), dtype=np.int64)


@torch.no_grad()
def exact_nats(lm: charlstm.LanguageModel, ids: np.ndarray) -> float:
    """Characters 1.. of `ids` predicted by one pass from the first character."""
    logits, _, _ = lm.model(torch.from_numpy(ids[:-1])[None])  # (1, n - 1, V)
    log_probs = torch.log_softmax(logits[0].double(), dim=-1)
    return -log_probs.gather(-1, torch.from_numpy(ids[1:])[:, None]).sum().item()


def cut(ids: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    points = np.sort(rng.integers(0, ids.size, size=12))
    return np.split(ids, points)  # empty blocks among them


def test_a_short_text_is_read_exactly(lm, ids):
    nats, count = streams.text_loss(lm.model, [ids])  # shorter than two default streams
    assert count == ids.size - 1
    assert nats == pytest.approx(exact_nats(lm, ids), rel=1e-5)


def test_every_character_once_whatever_the_cuts(lm, ids):
    reading = dict(num_streams=4, warmup=8, min_stream=20, window=300)
    nats, count = streams.text_loss(lm.model, [ids], **reading)
    assert count == ids.size - 1
    for seed in range(3):
        again, again_count = streams.text_loss(lm.model, cut(ids, seed), **reading)
        assert again_count == count
        assert again == pytest.approx(nats, rel=1e-9)
    # the windows' parallel streams did change the reading, a little
    assert nats != pytest.approx(exact_nats(lm, ids), rel=1e-6)


def test_windows_keep_the_context_before_them(lm, ids):
    """One stream per window, each warmed on everything before it: the exact reading."""
    nats, count = streams.text_loss(lm.model, cut(ids, 7), num_streams=1,
                                    warmup=ids.size, window=150)
    assert count == ids.size - 1
    assert nats == pytest.approx(exact_nats(lm, ids), rel=1e-5)


def test_the_warmup_brings_streams_close_to_the_exact_reading(lm, ids):
    exact = exact_nats(lm, ids)
    cold, _ = streams.text_loss(lm.model, [ids], num_streams=16, warmup=0, min_stream=1)
    warm, _ = streams.text_loss(lm.model, [ids], num_streams=16, warmup=64, min_stream=1)
    per_char = ids.size * math.log(2)  # nats -> bits per character
    assert abs(warm - exact) / per_char < 0.005 < abs(cold - exact) / per_char


def test_an_empty_or_one_character_text_predicts_nothing(lm):
    assert streams.text_loss(lm.model, []) == (0.0, 0)
    assert streams.text_loss(lm.model, [np.array([3]), np.empty(0, np.int64)]) == (0.0, 0)


def test_bad_reading_settings_are_refused(lm, ids):
    with pytest.raises(ValueError):
        streams.text_loss(lm.model, [ids], num_streams=0)
    with pytest.raises(ValueError):
        streams.text_loss(lm.model, [ids], warmup=-1)
