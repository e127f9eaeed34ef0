"""Beam search: the likeliest continuations of a prime, found without drawing anything.

At each step every kept text (at most `beam`) is extended by every character, and the
`beam` extensions with the highest log-likelihood are kept: a deterministic search, the
same text on every run. A text that ends with the stop string is set aside, finished;
at the end the finished texts and those still going are ranked by their mean
log-likelihood per character (length normalisation: otherwise the shortest finished
text would win, since every character lowers the sum), ties broken by the text. With
beam 1 this is greedy decoding (temperature 0).
"""

from __future__ import annotations

import torch

from ..model.charrnn import CharRNN
from ..data.vocab import Vocabulary


def beam_search(model: CharRNN, vocab: Vocabulary, prime: str, length: int, beam: int,
                num_samples: int = 1, stop_at: str | None = None) -> list[tuple[str, float]]:
    """The `num_samples` best continuations of `prime` (at most `length` characters, each
    ending at the first `stop_at`, kept), best first, each with its log-likelihood in
    nats (natural log, the prime not counted)."""
    from .generate import _start  # the prime's state and first logits, as sampling

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _search(model, vocab, _start(model, vocab, prime, device), length, beam,
                           num_samples, stop_at)
    finally:
        model.train(was_training)


def _search(model: CharRNN, vocab: Vocabulary, start, length: int, beam: int,
            num_samples: int, stop_at: str | None) -> list[tuple[str, float]]:
    from .generate import _step_function

    logits, state = start  # (1, V)
    step = _step_function(model, logits.device, None, beam)  # the fastest way here
    chars = vocab.chars
    scores = torch.zeros(1, dtype=torch.float64, device=logits.device)  # (k,) nats
    texts = [""]
    finished: list[tuple[str, float]] = []
    for produced in range(1, length + 1):
        log_probs = torch.log_softmax(logits.double(), dim=-1)  # (k, V)
        totals = (scores[:, None] + log_probs).flatten()  # (k * V,)
        best = torch.topk(totals, min(2 * beam, totals.numel()))
        keep_rows, keep_ids, keep_scores = [], [], []
        for value, flat in zip(best.values.tolist(), best.indices.tolist()):
            row, char = divmod(flat, len(chars))
            text = texts[row] + chars[char]
            if stop_at is not None and text.endswith(stop_at):
                finished.append((text, value))
            elif len(keep_rows) < beam:
                keep_rows.append(row)
                keep_ids.append(char)
                keep_scores.append(value)
        if not keep_rows or produced == length:
            finished += [(texts[r] + chars[c], s)
                         for r, c, s in zip(keep_rows, keep_ids, keep_scores)]
            break
        rows = torch.tensor(keep_rows, device=logits.device)
        texts = [texts[r] + chars[c] for r, c in zip(keep_rows, keep_ids)]
        scores = torch.tensor(keep_scores, dtype=torch.float64, device=logits.device)
        # a copy of the kept rows' state: a Stepper's own buffers are stepped in place
        logits, state = step(torch.tensor(keep_ids, device=logits.device),
                             _select(state, rows, model))
    ranked = sorted(finished, key=lambda item: (-item[1] / max(len(item[0]), 1), item[0]))
    return ranked[:num_samples]


def _select(state, rows: torch.Tensor, model: CharRNN):
    """The states of the kept texts, (layers, k, H) each; None (no prime) stays None
    while every row is the zero state."""
    if state is None:
        return model.initial_state(len(rows), rows.device)
    if isinstance(state, tuple):
        return tuple(s.index_select(1, rows) for s in state)
    return state.index_select(1, rows)
