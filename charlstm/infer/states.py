"""Walking a text through a trained model and keeping what happens inside it: every
layer's hidden state, the LSTM's cell state, the gates, and the next-character
distribution after each character.

The fused `nn.LSTM` (GRU, RNN) returns the hidden states of its top layer only, and no
gates or cells. So each layer is run on its own, as a one-layer fused module with that
layer's weights, over chunks of the text: that gives its hidden state h_t at every step,
exactly as the model computes it. The gates at step t depend only on the layer's input
x_t and on h_{t-1}, both known by then, so they come from one matrix product over the
whole chunk, by torch's equations:

    LSTM  i, f, o = sigmoid(W_i* x + b_i* + W_h* h + b_h*), g = tanh(...)
          c_t = f * c_{t-1} + i * g            (h_t = o * tanh(c_t): checked in a test)
    GRU   r, z = sigmoid(W_i* x + b_i* + W_h* h + b_h*)
          n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h_t = (1 - z) * n + z * h
    RNN   h_t = tanh(W_ih x + b_ih + W_hh h + b_hh)

The LSTM's cell state is the only value left that needs a step-by-step loop, and it is a
cheap elementwise one. The model runs in eval mode (no dropout, no weight drop).

Read exactly (the default), the text is one stream, the state carried from character to
character: at batch 1 the fused module leaves a CPU mostly idle. With `exact=False`
(what `inspect --find` and `--gates` use: their statistics need every character's
values, not the exact ones) each chunk of STREAM_CHUNK_CHARS is cut into STREAMS
contiguous streams read side by side as one batch, as whole-text scoring does
(`streams`): the first goes on from the chunk before; each other starts from a state
warmed up on the STREAM_WARMUP characters before it, which is nearly the state after
all of them (a recurrent model's memory fades). The rows stay in text order.

Characters the model never saw are treated as `score` treats them: they are not fed to
the model and cost UNKNOWN_CHAR_BITS; the state (and the next-character guess) after one
is the state after the known character before it (the zero state at the very start).
Every text position gets one row, so the rows line up with the text's characters.
Memory is bounded by the chunk size, however long the text.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from ..data.vocab import Vocabulary
from ..model.charrnn import CharRNN
from .precision import scoring_choice
from .scoring import UNKNOWN_CHAR_BITS

CHUNK_CHARS = 2048  # characters walked at a time, as one stream
STREAMS = 32  # streams side by side when a walk need not be exact
STREAM_WARMUP = 256  # characters before each such stream that build its first state
STREAM_CHUNK_CHARS = 1 << 14  # characters walked at a time as STREAMS streams
LN2 = math.log(2.0)
# the gates of each cell, by name, in torch's order of its weight blocks
GATE_NAMES = {"lstm": ("input", "forget", "cell_input", "output"),
              "gru": ("reset", "update", "new"), "rnn": ()}
# the gates whose values lie in (0, 1), as the paper's saturation plot counts them
SIGMOID_GATES = {"lstm": ("input", "forget", "output"), "gru": ("reset", "update"),
                 "rnn": ()}
STATE_KINDS = {"lstm": ("hidden", "cell"), "gru": ("hidden",), "rnn": ("hidden",)}


@dataclass
class LayerValues:
    """One layer's values over a chunk, one row per character (T, H), float32."""
    hidden: np.ndarray
    cell: np.ndarray | None = None  # the LSTM's only
    gates: dict[str, np.ndarray] = field(default_factory=dict)  # by GATE_NAMES

    def state(self, kind: str) -> np.ndarray:
        return self.hidden if kind == "hidden" else self.cell


@dataclass
class Chunk:
    """What the walk saw over one stretch of the text (T characters)."""
    text: str
    bits: np.ndarray  # (T,) float64: the bits spent on each character, as `score` counts
    layers: list[LayerValues]  # after reading each character
    log_probs: np.ndarray | None = None  # (T, V) float32: the next character's, natural log


class StateWalk:
    """`for chunk in StateWalk(model, vocab).walk(pieces)`: the text given in consecutive
    pieces (any cut), walked in chunks of at most `chunk_chars` characters. `gates`
    keeps the gates too (the LSTM computes them anyway, for its cell); `predictions`
    keeps the next-character log-probabilities (the bits are always computed).
    Without `exact`, each chunk is read as `streams` streams side by side (see the
    module docstring)."""

    def __init__(self, model: CharRNN, vocab: Vocabulary, *, gates: bool = False,
                 predictions: bool = False, exact: bool = True,
                 chunk_chars: int | None = None, streams: int = STREAMS,
                 warmup: int = STREAM_WARMUP):
        self.model, self.vocab = model.eval(), vocab
        self.kind = model.config.model
        self.keep_gates, self.keep_predictions = gates, predictions
        self.streams, self.warmup = (0 if exact else streams), warmup
        # read side by side, the passes run as whole-text scoring's do (bf16 where it is
        # measured faster); read exactly, in fp32
        self.choice = None if exact else scoring_choice(model)
        default = CHUNK_CHARS if exact else STREAM_CHUNK_CHARS
        self.chunk_chars = max(1, chunk_chars or default)
        self.device = next(model.parameters()).device
        self.layers = [_single_layer(model.rnn, n) for n in range(model.config.num_layers)]
        self.code_points = np.frombuffer(vocab.chars.encode("utf-32-le"), dtype=np.uint32)
        counts = np.asarray(vocab.counts or [1] * len(vocab), dtype=np.float64)
        # before any character, the guess is the corpus's character frequencies, the
        # distribution `score` charges the first character with
        with np.errstate(divide="ignore"):
            self.first_log_probs = np.log(counts / counts.sum()).astype(np.float32)

    def walk(self, pieces: Iterable[str]) -> Iterator[Chunk]:
        hidden_size, count = self.model.config.hidden_size, self.model.config.num_layers
        zeros = torch.zeros(count, 1, 1, hidden_size, device=self.device)
        # the carried state per layer (h, c) as (1, 1, H), and the last rows seen
        self._state = [(zeros[n], zeros[n].clone() if self.kind == "lstm" else None)
                       for n in range(count)]
        self._last_rows: list[LayerValues] | None = None
        self._last_log_probs = torch.from_numpy(self.first_log_probs).to(self.device)
        for text in _rechunk(pieces, self.chunk_chars):
            # the precision's context only around the walk's own passes, not the caller's
            with torch.inference_mode(), (self.choice.running(self.device) if self.choice
                                          else contextlib.nullcontext()):
                chunk = self._chunk(text)
            yield chunk

    def _chunk(self, text: str) -> Chunk:
        code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        ids = np.searchsorted(self.code_points, code_points)
        known = self.code_points[np.minimum(ids, self.code_points.size - 1)] == code_points
        known_ids = torch.from_numpy(ids[known].astype(np.int64)).to(self.device)
        layers, log_probs = self._run_known(known_ids)  # rows for the known characters
        # each position's row: that of the last known character at or before it; row 0
        # is the one carried from before the chunk
        which = torch.from_numpy(np.cumsum(known)).to(self.device)
        carried = self._carried_rows()
        expanded = [_expand(carried[n], layer, which) for n, layer in enumerate(layers)]
        all_log_probs = torch.cat([self._last_log_probs[None], log_probs])  # (K + 1, V)
        bits = np.full(len(code_points), UNKNOWN_CHAR_BITS)
        if known_ids.numel():
            # character k is charged by the guess made before it: row k of all_log_probs
            picked = all_log_probs[:-1].gather(1, known_ids[:, None])[:, 0]
            bits[known] = (-picked.double() / LN2).cpu().numpy()
        self._last_rows = [LayerValues(v.hidden[-1:], None if v.cell is None
                                       else v.cell[-1:],
                                       {k: g[-1:] for k, g in v.gates.items()})
                           for v in expanded]
        self._last_log_probs = all_log_probs[-1]
        kept_log_probs = None
        if self.keep_predictions:
            kept_log_probs = all_log_probs[which].float().cpu().numpy()
        return Chunk(text, bits, [_to_numpy(v) for v in expanded], kept_log_probs)

    def _carried_rows(self) -> list[LayerValues]:
        if self._last_rows is not None:
            return self._last_rows
        rows = []
        for layer in self.layers:
            zero = torch.zeros(1, layer.hidden_size, device=self.device)
            gates = {}
            if self.keep_gates or self.kind == "lstm":
                gates = {name: zero for name in GATE_NAMES[self.kind]}
            rows.append(LayerValues(zero, zero if self.kind == "lstm" else None,
                                    gates if self.keep_gates else {}))
        return rows

    def _run_known(self, ids: torch.Tensor) -> tuple[list[LayerValues], torch.Tensor]:
        """Every layer's values at each of the known ids (K,), and the log-probabilities
        of the character after each (K, V): one stream carried on from the chunk before,
        or with `streams`, side by side (see `_lay_out`)."""
        if ids.numel() == 0:
            return self._no_values(), self._last_log_probs.new_zeros(0, len(self.vocab))
        count = ids.numel()
        x, states, last = self._lay_out(ids)  # x (S, L, E); the last real step (s, t)
        values = []
        for n, layer in enumerate(self.layers):
            h0, c0 = states[n]  # (1, S, H) each
            if self.kind == "lstm":
                out, _ = layer(x, (h0, c0))  # (S, L, H)
                value = self._lstm_values(layer, x, h0[0], c0[0], out)
            else:
                out, _ = layer(x, h0)
                value = self._gru_values(layer, x, h0[0], out) if (
                    self.kind == "gru" and self.keep_gates) else LayerValues(out)
            carried_c = value.cell[last][None, None] if self.kind == "lstm" else None
            self._state[n] = (out[last][None, None], carried_c)
            values.append(_flattened(value, count))
            x = out  # the next layer's input: this one's hidden states (S, L, H)
        top = x.reshape(-1, x.size(-1))[:count]  # (K, H)
        log_probs = torch.log_softmax(self.model.head(top).float(), dim=-1)  # (K, V)
        return [_as_float(value) for value in values], log_probs

    def _lay_out(self, ids: torch.Tensor):
        """The K ids as S streams of L side by side (S, L, E), the last one padded at its
        end (padding after a stream's last character changes none of its values); each
        layer's first state (1, S, H): stream 0 goes on from the chunk before, each
        other one starts from a state warmed on the `warmup` ids before it. Also where
        the last real id is: (stream, step). One stream (S = 1) when `streams` is 0
        or the ids are too few for two streams of at least `warmup`."""
        count, warm = ids.numel(), self.warmup
        streams = min(self.streams, count // max(warm, 1)) if self.streams else 1
        length = -(-count // max(streams, 1))
        streams = -(-count // length)
        padded = torch.cat([ids, ids.new_zeros(streams * length - count)])
        x = self.model.embed(padded.view(streams, length))  # (S, L, E)
        last = (streams - 1, count - 1 - (streams - 1) * length)
        if streams == 1:
            return x, self._state, last
        starts = torch.arange(1, streams, device=ids.device) * length  # (S-1,)
        warm_ids = ids[starts[:, None] - warm + torch.arange(warm, device=ids.device)]
        warmed = self.model.advance(warm_ids)  # (layers, S-1, H), (h, c) for an LSTM
        h_warm, c_warm = warmed if isinstance(warmed, tuple) else (warmed, warmed)
        states = [(torch.cat([h0, h_warm[n][None]], dim=1),
                   torch.cat([c0 if c0 is not None else h0, c_warm[n][None]], dim=1))
                  for n, (h0, c0) in enumerate(self._state)]
        return x, states, last

    def _no_values(self) -> list[LayerValues]:
        """Every layer's values over no known characters."""
        empty = torch.zeros(0, self.model.config.hidden_size, device=self.device)
        gates = ({name: empty for name in GATE_NAMES[self.kind]}
                 if self.keep_gates else {})
        return [LayerValues(empty, empty if self.kind == "lstm" else None, dict(gates))
                for _ in self.layers]

    def _lstm_values(self, layer: nn.LSTM, x: torch.Tensor, h0: torch.Tensor,
                     c0: torch.Tensor, out: torch.Tensor) -> LayerValues:
        """x (S, L, In), h0 and c0 (S, H), out (S, L, H): the gates and the cell state."""
        pre = _preactivations(layer, x, _before(h0, out))  # (S, L, 4H)
        i, f, g, o = pre.chunk(4, dim=-1)
        i, f, o, g = i.sigmoid(), f.sigmoid(), o.sigmoid(), g.tanh()
        # the cell is summed over the whole chunk: in fp32 whatever the passes ran in
        written = (i * g).float().transpose(0, 1).contiguous()  # (L, S, H): time first
        forget = f.float().transpose(0, 1).contiguous()
        cell = torch.empty_like(written)
        previous = c0.float()
        for t in range(cell.size(0)):  # c_t = f_t * c_{t-1} + i_t * g_t, all streams
            previous = torch.addcmul(written[t], forget[t], previous, out=cell[t])
        gates = {"input": i, "forget": f, "cell_input": g, "output": o}
        return LayerValues(out, cell.transpose(0, 1), gates if self.keep_gates else {})

    def _gru_values(self, layer: nn.GRU, x: torch.Tensor, h0: torch.Tensor,
                    out: torch.Tensor) -> LayerValues:
        """x (S, L, In), h0 (S, H), out (S, L, H): the reset, update and new gates."""
        from_input = x @ layer.weight_ih_l0.t() + layer.bias_ih_l0  # (S, L, 3H)
        from_state = _before(h0, out) @ layer.weight_hh_l0.t() + layer.bias_hh_l0
        in_r, in_z, in_n = from_input.chunk(3, dim=-1)
        st_r, st_z, st_n = from_state.chunk(3, dim=-1)
        reset, update = (in_r + st_r).sigmoid(), (in_z + st_z).sigmoid()
        new = (in_n + reset * st_n).tanh()
        return LayerValues(out, None, {"reset": reset, "update": update, "new": new})


def _before(h0: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """h_{t-1} at every step (S, L, H), from the first state h0 (S, H) and out."""
    return torch.cat([h0[:, None], out[:, :-1]], dim=1)


def _flattened(values: LayerValues, count: int) -> LayerValues:
    """(S, L, ...) values as the first `count` rows of the streams end to end (K, ...)."""
    def flat(tensor: torch.Tensor | None):
        return None if tensor is None else tensor.reshape(-1, tensor.size(-1))[:count]

    return LayerValues(flat(values.hidden), flat(values.cell),
                       {name: flat(g) for name, g in values.gates.items()})


def _preactivations(layer: nn.RNNBase, x: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """W_ih x + b_ih + W_hh h_{t-1} + b_hh for every step: (S, L, G*H)."""
    flat = torch.addmm(layer.bias_ih_l0 + layer.bias_hh_l0, x.flatten(0, 1),
                       layer.weight_ih_l0.t())
    # out of place: autocast (bf16 passes, see StateWalk.choice) casts no in-place op
    flat = torch.addmm(flat, before.flatten(0, 1), layer.weight_hh_l0.t())
    return flat.view(*x.shape[:2], -1)


def _single_layer(rnn: nn.RNNBase, n: int) -> nn.RNNBase:
    """Layer n of a stacked fused module as a one-layer module of its own (its weights
    shared, not copied), in eval mode."""
    input_size = rnn.input_size if n == 0 else rnn.hidden_size
    kwargs = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    layer = type(rnn)(input_size, rnn.hidden_size, 1, batch_first=True, **kwargs)
    weight = getattr(rnn, f"weight_ih_l{n}")
    layer = layer.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, f"{name}_l0").copy_(getattr(rnn, f"{name}_l{n}"))
    return layer.eval()


def _expand(carried: LayerValues, known: LayerValues, which: torch.Tensor) -> LayerValues:
    """Each position's row: row which[t] of [carried row; known rows]."""
    def pick(before: torch.Tensor | None, rows: torch.Tensor | None):
        if before is None or rows is None:
            return None
        return torch.cat([before, rows])[which]

    gates = {name: pick(carried.gates.get(name), rows)
             for name, rows in known.gates.items()}
    return LayerValues(pick(carried.hidden, known.hidden), pick(carried.cell, known.cell),
                       gates)


def _as_float(values: LayerValues) -> LayerValues:
    """A layer's values in float32 (the passes may have run in bf16)."""
    def as_float(tensor: torch.Tensor | None):
        return None if tensor is None else tensor.float()

    return LayerValues(as_float(values.hidden), as_float(values.cell),
                       {name: as_float(g) for name, g in values.gates.items()})


def _to_numpy(values: LayerValues) -> LayerValues:
    def array(tensor: torch.Tensor | None):
        return None if tensor is None else tensor.float().cpu().numpy()

    return LayerValues(array(values.hidden), array(values.cell),
                       {name: array(g) for name, g in values.gates.items()})


def _rechunk(pieces: Iterable[str], size: int) -> Iterator[str]:
    """The concatenation of `pieces` cut into pieces of exactly `size` characters (the
    last one shorter), none empty."""
    pending = ""
    for piece in pieces:
        pending += piece
        cut = 0
        while len(pending) - cut >= size:
            yield pending[cut:cut + size]
            cut += size
        pending = pending[cut:]
    if pending:
        yield pending
