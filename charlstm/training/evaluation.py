"""Evaluation: the model's mean loss on the start of the validation split, the metrics
record of each evaluation, and the milestone samples shown beside them.

The split is read as EVAL_STREAMS parallel streams, each warmed up on the EVAL_WARMUP
characters before it, in chunks small enough that the logits stay in memory: the same
reading (`streams.span_loss`) that scores a whole text with `charlstm score`. It runs in
the run's precision: bf16 where training measured it faster (device.measured_cpu_precision,
the measurement scoring makes of its own passes), kept across a resume, so that a run's
evaluations, and the best checkpoint chosen by them, stay comparable with each other.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import torch

from ..model.charrnn import CharRNN
from ..infer.generate import sample
from ..infer.streams import span_loss
from ..data.vocab import Vocabulary

LN2 = math.log(2)
EVAL_STREAMS = 64  # parallel streams when evaluating: a big batch, few cold starts
EVAL_WARMUP = 128  # characters before each evaluation stream that build its state
EVAL_LOGITS = 1 << 23  # at most about this many logits at once when evaluating


def evaluate(model: CharRNN, tokens: np.ndarray, start: int, end: int, seq_len: int,
             device: torch.device, precision: str) -> float | None:
    """Mean loss in nats per character over tokens[start:end] (None if that is empty),
    with the model in eval mode (and back in its mode after)."""
    if start >= end:
        return None
    # chunks of at most about EVAL_LOGITS logits, so a huge vocabulary stays in memory
    vocab = model.config.vocab_size
    chunk = max(8, min(max(seq_len, 256), EVAL_LOGITS // (EVAL_STREAMS * vocab)))
    total, count = span_loss(model, tokens, start, end, EVAL_STREAMS, chunk, EVAL_WARMUP,
                             precision)
    return total.item() / count


def record(step: int, epochs_done: float, train_loss: float, val_loss: float | None,
           best: bool, lr: float, train_curve: list, elapsed: float, now: datetime) -> dict:
    """An evaluation's metrics record, as the history and metrics.jsonl hold it (losses
    in nats per character, bpc in bits per character)."""
    return {
        "step": step, "epoch": round(epochs_done, 4),
        "train_loss": train_loss, "train_bpc": train_loss / LN2,
        "val_loss": val_loss, "val_bpc": None if val_loss is None else val_loss / LN2,
        "best": best, "lr": lr, "train_curve": train_curve,
        "elapsed": round(elapsed, 3), "time": now.isoformat(timespec="seconds"),
    }


def milestone_sample(model: CharRNN, vocab: Vocabulary, length: int, seed: int) -> str:
    """A sample of `length` characters from nothing, at temperature 0.8: how the model
    writes at this point of training."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    return sample(model, vocab, "", length, temperature=0.8, generator=generator)[0]
