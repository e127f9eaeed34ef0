"""The model's regularisers that keep the fused recurrent kernels (AWD-LSTM's two main ones,
Merity et al. 2018):

- **locked (variational) dropout**: one mask per stream for a whole training step, shared
  by its time steps, instead of a fresh one per character;
- **weight drop (DropConnect) on the recurrent matrices** `weight_hh_l*`: one mask per
  step over the matrices themselves. The fused module (cuDNN, oneDNN) then runs with the
  dropped weights (`torch.func.functional_call`), and the gradients reach the raw ones.

and, for runs that ask for it, fresh dropout with a new mask per character.

All draw from the default generator of the tensors' device, as `nn.Dropout` does, so a
resumed run (which restores the generators) draws the same masks. Evaluation and sampling
use none of them.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

# On a CPU, torch's bernoulli draw costs more than a bf16 LSTM step's matrix products
# (17 ms for a 2048 x 512 matrix, 8 ms for a 32 x 32 x 512 batch of activations, against
# about 3 ms for a 2048 x 512 mask here: bench/RESULTS.md, "Dropout's cost"); there,
# each mask element is one random byte instead, so p is rounded to a multiple of 1/256
_BYTE = 256


def dropout_mask(shape: tuple[int, ...], p: float, like: torch.Tensor) -> torch.Tensor:
    """A mask of `shape` in like's dtype and device: 0 with probability p, else 1 / (1-p),
    so that multiplying by it keeps the mean."""
    dtype, device = like.dtype, like.device
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - p) / (1 - p)
    cut = round(p * _BYTE)
    n = math.prod(shape)
    # one random byte per element: 8 from each full-range int64 (all of its bits uniform)
    words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-2**63, None)
    keep = words.view(torch.uint8)[:n].view(shape) >= cut
    scale = torch.tensor(_BYTE / (_BYTE - cut), dtype=dtype)
    return torch.where(keep, scale, torch.zeros((), dtype=dtype))


def dropout(x: torch.Tensor, p: float, training: bool, locked: bool) -> torch.Tensor:
    """x (B, T, C) under dropout at rate p: with one mask per stream and channel, shared
    over its T time steps (`locked`), or a fresh mask per element."""
    if not training or p == 0:
        return x
    shape = (x.size(0), 1, x.size(2)) if locked else tuple(x.shape)
    return x * dropout_mask(shape, p, x)  # a (B, 1, C) mask broadcasts over T


def dropped_weights(rnn: nn.RNNBase, p: float) -> dict[str, torch.Tensor]:
    """The recurrent matrices of `rnn` with a fresh DropConnect mask at rate p, by name."""
    dropped = {}
    for name in rnn._flat_weights_names:
        if name.startswith("weight_hh"):
            weight = getattr(rnn, name)
            dropped[name] = weight * dropout_mask(tuple(weight.shape), p, weight)
    return dropped


def run_with_weight_drop(rnn: nn.RNNBase, p: float, x: torch.Tensor, state):
    """`rnn(x, state)`, with weight drop at rate p on its recurrent matrices if p > 0."""
    if p == 0:
        return rnn(x, state)
    return functional_call(rnn, dropped_weights(rnn, p), (x, state))
