"""Stepping a trained CharRNN one character at a time with plain matrix products.

Sampling feeds the model one character per step. On a CPU, calling the fused `nn.LSTM`
(GRU, RNN) on a sequence of length 1 costs many times the arithmetic it does, so
`Stepper` redoes each layer's equations by hand with the module's own weights: one matrix
product per weight matrix, a few in-place pointwise ops, no allocations, all into buffers
it keeps. Layer 0's input projection of each character (embedding times the input weights,
plus the biases) is a row of a lookup table computed once, so it costs a row gather.

The equations are torch's (gates i, f, g, o for the LSTM; r, z, n for the GRU, whose n
multiplies r into `W_hn h + b_hn`; tanh for the RNN), in eval mode (no dropout). The state
goes in and out in the modules' layout: (num_layers, B, H) tensors, `(h, c)` for an LSTM.
"""

from __future__ import annotations

import torch

from .model import CharRNN


class Stepper:
    """`logits, state = stepper(ids, state)` does what `model(ids[:, None], state)` does
    in eval mode, for ids (B,) and logits (B, V), only faster on a CPU.

    The returned logits and state are the stepper's own buffers: the next call overwrites
    them (clone what you keep). Passing the returned state back steps on in place; any
    other state (or None, the zero state) is copied in first.

    The weights are the model's, not copies, except for layer 0's lookup table and the
    summed biases: build a new stepper once the model's weights have changed. Buffers
    made under `torch.inference_mode` can only be written under it, so a stepper first
    called there has to stay there.
    """

    def __init__(self, model: CharRNN):
        config = model.config
        rnn = model.rnn
        self.kind = config.model
        self.num_layers = config.num_layers
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        weight = rnn.weight_ih_l0
        self.dtype, self.device = weight.dtype, weight.device

        def param(name: str, layer: int) -> torch.Tensor:
            # detached views share the parameters' memory: no copy, no autograd per step
            return getattr(rnn, f"{name}_l{layer}").detach()

        # the transposed weights are views, so x @ W.t() reads the module's own matrices
        self.weight_ih_t = [param("weight_ih", n).t() for n in range(self.num_layers)]
        self.weight_hh_t = [param("weight_hh", n).t() for n in range(self.num_layers)]
        self.bias_ih = [param("bias_ih", n) for n in range(self.num_layers)]
        self.bias_hh = [param("bias_hh", n) for n in range(self.num_layers)]
        if self.kind != "gru":
            # the LSTM and RNN only ever use the two biases' sum; the GRU's n gate needs
            # b_hn on its own
            self.bias = [ih + hh for ih, hh in zip(self.bias_ih, self.bias_hh)]
        first_bias = self.bias_ih[0] if self.kind == "gru" else self.bias[0]
        embedding = model.embed.weight.detach()  # (V, E)
        self.table = torch.addmm(first_bias, embedding, self.weight_ih_t[0])  # (V, G*H)
        self.head_weight_t = model.head.weight.detach().t()  # (H, V)
        self.head_bias = model.head.bias.detach()
        self.gate_size = self.table.size(1)  # 4H, 3H or H
        self.batch_size = 0
        self._state = ()  # nothing allocated yet: never the state a caller passes
        self._step = {"lstm": self._step_lstm, "gru": self._step_gru,
                      "rnn": self._step_rnn}[self.kind]

    def __call__(self, ids: torch.Tensor, state=None):
        if state is not self._state:
            self._load(state, ids.size(0))
        self._step(ids)
        return self._logits, self._state

    # ------------------------------------------------------------------ state buffers

    def _load(self, state, batch_size: int) -> None:
        """Copy `state` (None: zeros) into buffers for `batch_size` streams."""
        if batch_size != self.batch_size:
            self._allocate(batch_size)
        buffers = self._state if isinstance(self._state, tuple) else (self._state,)
        if state is None:
            for buffer in buffers:
                buffer.zero_()
            return
        given = state if isinstance(state, tuple) else (state,)
        if len(given) != len(buffers):
            raise ValueError(f"a {self.kind} state has {len(buffers)} tensor(s), "
                             f"not {len(given)}")
        for buffer, tensor in zip(buffers, given):
            if tensor.shape != buffer.shape:  # copy_ would broadcast where nn.LSTM refuses
                raise ValueError(f"a state of shape {tuple(tensor.shape)} for "
                                 f"{batch_size} stream(s); expected {tuple(buffer.shape)}")
            buffer.copy_(tensor)

    def _allocate(self, batch_size: int) -> None:
        def empty(*shape):
            return torch.empty(*shape, dtype=self.dtype, device=self.device)

        layers, hidden = self.num_layers, self.hidden_size
        self.batch_size = batch_size
        h = empty(layers, batch_size, hidden)  # (L, B, H)
        self.h = [h[n] for n in range(layers)]  # views: layer n's (B, H), contiguous
        if self.kind == "lstm":
            c = empty(layers, batch_size, hidden)
            self.c = [c[n] for n in range(layers)]
            self._state = (h, c)
        else:
            self._state = h
        self._gates = empty(batch_size, self.gate_size)  # (B, G*H), shared by the layers
        self._scratch = empty(batch_size, self.gate_size)  # the GRU's W_h h, the LSTM's tanh(c)
        self._logits = empty(batch_size, self.vocab_size)  # (B, V)
        # the gate slices, cut once: at batch 1, slicing anew each step would cost about
        # as much as the arithmetic on them
        gates = self._gates
        self._gate_views = [gates[:, k * hidden:(k + 1) * hidden]
                            for k in range(self.gate_size // hidden)]
        self._scratch_views = [self._scratch[:, k * hidden:(k + 1) * hidden]
                               for k in range(self.gate_size // hidden)]
        # the LSTM's i and f, the GRU's r and z: neighbours, so one op does both
        self._two_gates = gates[:, :2 * hidden]
        self._two_scratch = self._scratch[:, :2 * hidden]

    # ------------------------------------------------------------------------- steps

    def _input_gates(self, layer: int, ids: torch.Tensor, below: torch.Tensor | None,
                     bias: torch.Tensor) -> None:
        """The gates' input part, biases included, into self._gates."""
        if layer == 0:
            torch.index_select(self.table, 0, ids, out=self._gates)
        else:
            torch.addmm(bias, below, self.weight_ih_t[layer], out=self._gates)

    def _step_lstm(self, ids: torch.Tensor) -> None:
        gates = self._gates
        in_gate, forget_gate, cell_gate, out_gate = self._gate_views
        in_and_forget = self._two_gates
        squashed = self._scratch_views[0]  # (B, H)
        below = None
        for layer in range(self.num_layers):
            h, c = self.h[layer], self.c[layer]
            self._input_gates(layer, ids, below, self.bias[layer])
            gates.addmm_(h, self.weight_hh_t[layer])
            in_and_forget.sigmoid_()
            cell_gate.tanh_()
            out_gate.sigmoid_()
            c.mul_(forget_gate).addcmul_(in_gate, cell_gate)
            torch.tanh(c, out=squashed)
            torch.mul(out_gate, squashed, out=h)
            below = h
        torch.addmm(self.head_bias, below, self.head_weight_t, out=self._logits)

    def _step_gru(self, ids: torch.Tensor) -> None:
        reset_gate, update_gate, new_gate = self._gate_views
        hidden_new = self._scratch_views[2]
        reset_and_update = self._two_gates
        hidden_reset_and_update = self._two_scratch
        below = None
        for layer in range(self.num_layers):
            h = self.h[layer]
            self._input_gates(layer, ids, below, self.bias_ih[layer])
            torch.addmm(self.bias_hh[layer], h, self.weight_hh_t[layer], out=self._scratch)
            reset_and_update.add_(hidden_reset_and_update).sigmoid_()
            new_gate.addcmul_(reset_gate, hidden_new).tanh_()
            # h' = (1 - z) * n + z * h, which is lerp from n towards h by z
            torch.lerp(new_gate, h, update_gate, out=h)
            below = h
        torch.addmm(self.head_bias, below, self.head_weight_t, out=self._logits)

    def _step_rnn(self, ids: torch.Tensor) -> None:
        gates = self._gates
        below = None
        for layer in range(self.num_layers):
            h = self.h[layer]
            self._input_gates(layer, ids, below, self.bias[layer])
            gates.addmm_(h, self.weight_hh_t[layer])
            torch.tanh(gates, out=h)
            below = h
        torch.addmm(self.head_bias, below, self.head_weight_t, out=self._logits)
