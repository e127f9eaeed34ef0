"""The character-level recurrent language model.

Embedding -> dropout -> stacked LSTM | GRU | tanh RNN (torch.nn's fused modules: cuDNN on
GPUs, oneDNN on CPUs) with dropout between layers -> dropout -> linear head over the
vocabulary. Dropout on the stack's input and output regularises a single layer as well;
it is locked (one mask per stream for a whole step) unless the config says otherwise, and
weight drop on the recurrent matrices keeps the fused modules (see dropout.py).

With `head_rank` r > 0 the head is factored, H -> r -> V (FactoredHead): for a vocabulary
of thousands of characters the output layer then costs r * (H + V) multiply-adds a
character instead of H * V. It is still a full softmax over every character, so
sampling, scoring and bits per character stay exact; its `weight` is the product of its
two matrices, one (V, H) matrix like a plain head's, which is what the one-character
stepper and the exports use (`with_plain_head`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import ModelConfig
from .dropout import dropout, run_with_weight_drop

IGNORE_INDEX = -100  # targets with this id are padding and carry no loss
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}  # settings.CELLS' classes

# The recurrent state is (h, c) for an LSTM and h for a GRU or RNN, each (num_layers, B, H).


class CharRNN(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_size)
        self.rnn = CELLS[config.model](
            config.embed_size, config.hidden_size, config.num_layers, batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.head = (FactoredHead(config.hidden_size, config.head_rank, config.vocab_size)
                     if config.head_rank else
                     nn.Linear(config.hidden_size, config.vocab_size))
        self._init_forget_bias()

    def _init_forget_bias(self) -> None:
        """Start LSTM forget gates open (bias 1), so early gradients flow through time."""
        if self.config.model != "lstm":
            return
        h = self.config.hidden_size
        with torch.no_grad():
            for layer in range(self.config.num_layers):
                # torch orders the gates i, f, g, o; the two biases add up
                getattr(self.rnn, f"bias_ih_l{layer}")[h:2 * h].fill_(1.0)
                getattr(self.rnn, f"bias_hh_l{layer}")[h:2 * h].fill_(0.0)

    def set_regularisation(self, dropout: float | None = None,
                           weight_drop: float | None = None) -> None:
        """Change the dropout or weight drop of a built model (and its config), e.g.
        part-way through a run."""
        if dropout is not None:
            self.config.dropout = dropout
            self.rnn.dropout = dropout if self.config.num_layers > 1 else 0.0
        if weight_drop is not None:
            self.config.weight_drop = weight_drop

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) under the input and output dropout, locked or fresh."""
        return dropout(x, self.config.dropout, self.training, self.config.locked_dropout)

    def _run(self, x: torch.Tensor, state):
        """The recurrent stack over x (B, T, E), with weight drop while training."""
        return run_with_weight_drop(self.rnn, self.config.weight_drop if self.training
                                    else 0.0, x, state)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> (logits (B, T, V), mean loss or None, new state)."""
        x = self._dropped(self.embed(idx))  # (B, T, E)
        out, state = self._run(x, state)  # (B, T, H)
        logits = self.head(self._dropped(out))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                   ignore_index=IGNORE_INDEX)
        return logits, loss, state

    def advance(self, idx: torch.Tensor, state=None, max_elements: int = 1 << 22):
        """The state after reading idx (B, T), without the output layer, in pieces of at
        most about `max_elements` activations: for warm-ups and long primes, whose
        per-position logits nobody needs."""
        step = max(1, max_elements // (idx.size(0) * self.config.hidden_size))
        for start in range(0, idx.size(1), step):
            x = self._dropped(self.embed(idx[:, start:start + step]))  # (B, t, E)
            _, state = self._run(x, state)
        return state

    def with_plain_head(self) -> "CharRNN":
        """This model with its head as one (V, H) matrix (itself if it already is): the
        same function, as exports store it."""
        if not self.config.head_rank:
            return self
        plain = CharRNN(ModelConfig.from_dict({**self.config.to_dict(), "head_rank": 0}))
        weights = {k: v for k, v in self.state_dict().items() if not k.startswith("head.")}
        with torch.no_grad():
            weights.update({"head.weight": self.head.weight, "head.bias": self.head.bias})
        plain.load_state_dict(weights)
        return plain.to(self.head.bias.device).train(self.training)

    def initial_state(self, batch_size: int, device=None):
        """The zero state for `batch_size` streams."""
        c = self.config
        zeros = torch.zeros(c.num_layers, batch_size, c.hidden_size, device=device)
        return (zeros, zeros.clone()) if c.model == "lstm" else zeros


class FactoredHead(nn.Module):
    """The output layer as two products, (H -> rank) then (rank -> V) with a bias: a
    low-rank V x H matrix that costs rank * (H + V) multiply-adds instead of H * V."""

    def __init__(self, hidden_size: int, rank: int, vocab_size: int):
        super().__init__()
        self.down = nn.Linear(hidden_size, rank, bias=False)
        self.out = nn.Linear(rank, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.down(x))

    @property
    def weight(self) -> torch.Tensor:
        """The (V, H) matrix the two products make."""
        return self.out.weight @ self.down.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.out.bias


def detach_state(state):
    """The state as values only: gradients stop here (the 'truncated' in TBPTT)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def keep_state_where(bad: torch.Tensor, old, new):
    """`new`, or where the 0-d bool `bad` is True, `old` (None: the zero state), chosen
    on the device without reading `bad`."""
    if isinstance(new, tuple):
        return tuple(keep_state_where(bad, o, n)
                     for o, n in zip(old if old is not None else (None,) * len(new), new))
    return new.masked_fill(bad, 0.0) if old is None else torch.where(bad, old, new)


def state_to_list(state) -> list[torch.Tensor]:
    """A state as a plain list of tensors (for checkpoints)."""
    if state is None:
        return []
    return [s.detach().cpu() for s in (state if isinstance(state, tuple) else (state,))]


def state_from_list(tensors: list[torch.Tensor], model: str, device=None):
    if not tensors:
        return None
    moved = [t.to(device) for t in tensors]
    return tuple(moved) if model == "lstm" else moved[0]
