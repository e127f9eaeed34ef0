"""Each character's probability under a model, and the likeliest alternatives to it.

`char_log_probs` reads a text as `scoring.char_bits` does (the first character against
the corpus's character frequencies, each next one given those before it, a character
the model never saw costing UNKNOWN_CHAR_BITS and leaving the state as it was), and
returns, for each character, its log-probability in nats and, with `top` K, the K
likeliest characters at that place with theirs. Their sum is the score of the text
(`scoring.score(..., exact=True)`): `score --per-char` prints them, and `serve` answers
OpenAI's `logprobs` with them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ..data.vocab import Vocabulary
from ..model.charrnn import CharRNN
from .scoring import UNKNOWN_CHAR_BITS, _Scorer
from .streams import MAX_ELEMENTS

LN2 = math.log(2.0)


class CharLogProbs(NamedTuple):
    """Per character of a text (T of them)."""

    nats: np.ndarray  # (T,) float64: the log-probability of each character (<= 0)
    top_chars: list[list[str]]  # (T, K) the K likeliest characters at each place
    top_nats: np.ndarray  # (T, K) float64: their log-probabilities

    @property
    def bits(self) -> np.ndarray:
        return -self.nats / LN2


def char_log_probs(model: CharRNN, vocab: Vocabulary, text: str, top: int = 0,
                   max_elements: int = MAX_ELEMENTS) -> CharLogProbs:
    """See the module docstring; `top` 0 gives no alternatives."""
    top = min(top, len(vocab))
    scorer = _Scorer(model, vocab, max_elements)
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    ids, known = scorer._lookup(code_points)
    nats = np.full(code_points.size, -UNKNOWN_CHAR_BITS * LN2)
    top_ids = np.zeros((code_points.size, top), dtype=np.int64)
    top_nats = np.zeros((code_points.size, top))
    first = torch.from_numpy(-scorer.first_char_bits * LN2)  # (V,) the first distribution
    # the distribution each character is read against: that of the next known character
    next_known = np.cumsum(known[::-1])[::-1]  # known characters from here on
    at_known = len(ids[known]) - next_known  # index among the known of the next one
    picked, known_top_ids, known_top_nats = _known_log_probs(model, scorer, ids[known],
                                                              first, top)
    nats[known] = picked
    if top and len(picked):
        places = np.flatnonzero(at_known < len(picked))
        top_ids[places] = known_top_ids[at_known[places]]
        top_nats[places] = known_top_nats[at_known[places]]
    chars = vocab.chars
    return CharLogProbs(nats, [[chars[i] for i in row] for row in top_ids.tolist()],
                        top_nats)


def _known_log_probs(model: CharRNN, scorer: _Scorer, known_ids: np.ndarray,
                     first: torch.Tensor, top: int):
    """For each known character: its log-probability, and the `top` likeliest ids with
    theirs, read a slice at a time (memory bounded by the slice, not the text)."""
    picked, best_ids, best_nats = [], [], []

    def take(log_probs: torch.Tensor, targets: np.ndarray) -> None:  # (t, V), (t,)
        rows = torch.arange(len(targets))
        picked.append(log_probs[rows, torch.from_numpy(targets)].numpy())
        if top:
            best = torch.topk(log_probs, top, dim=-1)
            best_ids.append(best.indices.numpy())
            best_nats.append(best.values.numpy())

    if known_ids.size:
        take(first[None], known_ids[:1])
    if known_ids.size > 1:
        inputs = torch.from_numpy(known_ids[None, :-1]).to(scorer.device)  # (1, K-1)
        config = model.config
        step = max(1, scorer.max_elements // max(config.hidden_size, config.vocab_size))
        state = None
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, inputs.size(1), step):
                    logits, _, state = model(inputs[:, start:start + step], state)
                    take(torch.log_softmax(logits[0].float(), dim=-1).double().cpu(),
                         known_ids[1 + start:1 + start + step])
        finally:
            model.train(was_training)
    if not picked:
        return np.zeros(0), np.zeros((0, top), np.int64), np.zeros((0, top))
    return (np.concatenate(picked),
            np.concatenate(best_ids) if top else np.zeros((len(known_ids), 0), np.int64),
            np.concatenate(best_nats) if top else np.zeros((len(known_ids), 0)))
