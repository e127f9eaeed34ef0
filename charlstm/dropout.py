"""The model's regularisers that keep the fused recurrent kernels (AWD-LSTM's two main ones,
Merity et al. 2018):

- **locked (variational) dropout**: one mask per stream for a whole training step, shared
  by its time steps, instead of a fresh one per character;
- **weight drop (DropConnect) on the recurrent matrices** `weight_hh_l*`: one mask per
  step over the matrices themselves. The fused module (cuDNN, oneDNN) then runs with the
  dropped weights (`torch.func.functional_call`), and the gradients reach the raw ones.

Both draw from the default generator of the tensors' device, as `nn.Dropout` does, so a
resumed run (which restores the generators) draws the same masks. Evaluation and sampling
use neither.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

# On a CPU, drawing a bernoulli per weight costs more than a bf16 LSTM step's matrix
# products (17 ms for a 2048 x 512 matrix, against 3 ms here: bench/RESULTS.md, "Weight
# drop's cost"); there, each mask element is one random byte, so p is rounded to 1/256
_BYTE = 256


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """x (B, T, C) with one mask per stream and channel, shared over its T time steps."""
    if not training or p == 0:
        return x
    keep = x.new_empty(x.size(0), 1, x.size(2)).bernoulli_(1 - p)  # (B, 1, C)
    return x * keep / (1 - p)


def dropped_weights(rnn: nn.RNNBase, p: float) -> dict[str, torch.Tensor]:
    """The recurrent matrices of `rnn` with a fresh DropConnect mask at rate p, by name."""
    return {name: _drop_connect(getattr(rnn, name), p)
            for name in rnn._flat_weights_names if name.startswith("weight_hh")}


def run_with_weight_drop(rnn: nn.RNNBase, p: float, x: torch.Tensor, state):
    """`rnn(x, state)`, with weight drop at rate p on its recurrent matrices if p > 0."""
    if p == 0:
        return rnn(x, state)
    return functional_call(rnn, dropped_weights(rnn, p), (x, state))


def _drop_connect(weight: torch.Tensor, p: float) -> torch.Tensor:
    if weight.device.type != "cpu":
        return F.dropout(weight, p)
    cut = round(p * _BYTE)
    if cut == 0:
        return weight
    n = weight.numel()
    # one random byte per weight: 8 from each full-range int64 (all of its bits uniform)
    words = torch.empty((n + 7) // 8, dtype=torch.int64).random_(-2**63, None)
    keep = words.view(torch.uint8)[:n].view_as(weight) >= cut
    scale = torch.tensor(_BYTE / (_BYTE - cut), dtype=weight.dtype)
    return weight * torch.where(keep, scale, torch.zeros((), dtype=weight.dtype))
