"""Helpers for the export tests: small random models of every cell, saved as checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

from charlstm import checkpoint
from charlstm.data.vocab import Vocabulary
from charlstm.model.charrnn import CharRNN, ModelConfig

TEXT = "the quick brown fox jumps over the lazy dog.\n"


def save_random_model(folder: Path, model: str = "lstm", num_layers: int = 2,
                      hidden_size: int = 24, seed: int = 0, head_rank: int = 0) -> Path:
    """A checkpoint of a random (untrained) model over TEXT's characters."""
    torch.manual_seed(seed)
    vocab = Vocabulary.from_text(TEXT)
    config = ModelConfig(vocab_size=len(vocab), model=model, num_layers=num_layers,
                         hidden_size=hidden_size, embed_size=8, dropout=0.0,
                         head_rank=head_rank)
    net = CharRNN(config)
    with torch.no_grad():  # larger weights than the default init: logits far apart
        for weight in net.parameters():
            weight.mul_(3.0)
    path = folder / f"{model}{num_layers}.pt"
    checkpoint.save({"model_config": config.to_dict(), "vocab": vocab.to_dict(),
                     "model": net.state_dict(), "step": 7}, path)
    return path


def logits_of(lm, text: str) -> torch.Tensor:
    """The model's logits (T, V) after each character of `text`."""
    ids = torch.tensor([lm.vocab.encode(text)])
    with torch.inference_mode():
        logits, _, _ = lm.model(ids)
    return logits[0]
