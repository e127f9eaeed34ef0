"""Stepping a trained CharRNN one character at a time with plain matrix products.

Sampling feeds the model one character per step. On a CPU, calling the fused `nn.LSTM`
(GRU, RNN) on a sequence of length 1 costs many times the arithmetic it does, so
`Stepper` redoes each layer's equations by hand with a few matrix products and in-place
pointwise ops, no allocations, all into buffers it keeps. At batch 1 a step is
memory-bound and every call into torch costs a few microseconds, so the layout is chosen
for the fewest, largest calls:

- the products that need only the state of the step before, every layer's recurrent
  product and the output layer's, are one batched product (torch.baddbmm of the
  (L, B, H) state and (L, H, G*H + V) weights: layer n's recurrent weights, and beside
  the top layer's, the output layer's; zeros beside the others') at the start of each
  step. Its top row's last V columns are the logits of the step before, from which the
  step's character is picked; with several threads the layers' products run side by
  side;
- layer 0's input product of each character (embedding times the input weights) is a
  row of a (V, G*H) table computed once, so it costs a row gather; each layer above
  adds one product for its input, the layer below's new h;
- at batch 1 a single product (1, H) x (H, G*H) may run on one thread (MKL's choice:
  on this project's Xeon it did for G*H = 768 and 1536), so with `split_inputs` each
  layer's input product is made as the two halves of its columns in one batched call,
  which torch runs side by side; `infer/step_choice.py` times it against the whole product;
- the weights are copied once, transposed to (in, out) and contiguous, the layout of
  the matrix-product floor in bench/sampling_speed.py;
- the LSTM's gates are reordered i, f, o, g, so one sigmoid covers three of them.

The equations are torch's (gates i, f, g, o for the LSTM; r, z, n for the GRU, whose n
multiplies r into `W_hn h + b_hn`, so its input and recurrent biases stay apart; tanh
for the RNN), in eval mode (no dropout). The state goes in and out in the modules'
shape: (num_layers, B, H) tensors, `(h, c)` for an LSTM.

Whether this beats calling the module depends on the CPU at large batches (oneDNN's RNN
kernel against the BLAS matrix product), so `infer.step_choice.fastest_step` measures both
once per model and batch size and keeps the faster.
"""

from __future__ import annotations

import torch

from . import stepper_script
from .charrnn import CharRNN

GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # gate blocks of H per layer


class Stepper:
    """`logits, state = stepper(ids, state)` does what `model(ids[:, None], state)` does
    in eval mode, for ids (B,) and logits (B, V), only faster on a CPU.

    The returned logits and state are the stepper's own buffers: the next call overwrites
    them (clone what you keep). Passing the returned state back steps on in place (so
    change a state only in a copy); any other state (or None, the zero state) is copied
    in first. The logits are a view into the batched product's output, not contiguous.

    The weights are copies, laid out for speed: build a new stepper once the model's
    weights have changed. Buffers made under `torch.inference_mode` can only be written
    under it, so a stepper first called there has to stay there.
    """

    def __init__(self, model: CharRNN, split_inputs: bool = False):
        config = model.config
        self.split_inputs = split_inputs  # at batch 1, input products in halves (above)
        self.kind = config.model
        self.num_layers = config.num_layers
        self.hidden_size = config.hidden_size
        self.vocab_size = config.vocab_size
        weight = model.rnn.weight_ih_l0
        self.dtype, self.device = weight.dtype, weight.device
        self.gate_size = GATES[self.kind] * self.hidden_size
        with torch.no_grad():
            self._copy_weights(model)
        self.scripted = True  # run() in TorchScript when it compiles here
        self.batch_size = 0
        # whether the batched product's output is that of the state as it is: a step and
        # a run both end on that product (the logits they return are in it), so the next
        # one starts without making it again
        self._fresh = False
        self._state = ()  # nothing allocated yet: never the state a caller passes
        self._cell = {"lstm": self._lstm_layer, "gru": self._gru_layer,
                      "rnn": self._rnn_layer}[self.kind]

    def _copy_weights(self, model: CharRNN) -> None:
        rnn, layers, hidden = model.rnn, self.num_layers, self.hidden_size
        gate_size, gru = self.gate_size, self.kind == "gru"

        def param(name: str, layer: int) -> torch.Tensor:
            return getattr(rnn, f"{name}_l{layer}").detach()

        # torch's gate blocks in the stepper's order: the LSTM's i, f, g, o as i, f, o, g,
        # so that one sigmoid covers three of them
        blocks = [0, 1, 3, 2] if self.kind == "lstm" else list(range(GATES[self.kind]))
        order = torch.cat([torch.arange(b * hidden, (b + 1) * hidden) for b in blocks])
        order = order.to(self.device)

        def in_out(matrix: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
            """(G*H, in) -> (in, G*H) in the stepper's gate order, in one copy per gate
            block (a stepper is built for every generation: a gather, a transpose and an
            assignment made a 2x512 LSTM's first character wait 16 ms, now 11)"""
            if out is None:
                out = matrix.new_empty(matrix.size(1), gate_size)
            for k, b in enumerate(blocks):
                out[:, k * hidden:(k + 1) * hidden].copy_(
                    matrix[b * hidden:(b + 1) * hidden].t())
            return out

        width = gate_size + self.vocab_size
        # (L, H, G*H + V): each layer's recurrent weights; the output layer's beside the
        # top one's (zeros beside the others'); the biases likewise
        self.recurrent_weight = torch.empty(layers, hidden, width, dtype=self.dtype,
                                            device=self.device)
        self.recurrent_weight[:-1, :, gate_size:] = 0
        self.recurrent_bias = torch.zeros(layers, 1, width, dtype=self.dtype,
                                          device=self.device)
        # layers 1 and up: the input weights (H, G*H), and the input biases, which only
        # the GRU keeps apart (its n gate needs b_hn apart from b_in; the others add
        # theirs to the recurrent ones)
        self.input_weight, self.input_bias = [], []
        for n in range(layers):
            bias_ih, bias_hh = param("bias_ih", n)[order], param("bias_hh", n)[order]
            in_out(param("weight_hh", n), out=self.recurrent_weight[n, :, :gate_size])
            self.recurrent_bias[n, 0, :gate_size] = bias_hh if gru else bias_ih + bias_hh
            if n:
                self.input_weight.append(in_out(param("weight_ih", n)))
                if gru:
                    self.input_bias.append(bias_ih)
        self.recurrent_weight[-1, :, gate_size:] = model.head.weight.detach().t()  # (H, V)
        self.recurrent_bias[-1, 0, gate_size:] = model.head.bias.detach()
        embedding = model.embed.weight.detach()  # (V, E)
        table = embedding @ in_out(param("weight_ih", 0))  # (V, G*H)
        self.table = (table + param("bias_ih", 0)[order]) if gru else table

    def __call__(self, ids: torch.Tensor, state=None):
        if state is not self._state:
            self._load(state, ids.size(0))
        if not self._fresh:
            self._recurrent_products()
        self._layers(ids)
        self._recurrent_products()  # the logits, and the next step's recurrent parts
        self._fresh = True
        return self._logits, self._state

    def run(self, noise: torch.Tensor, logits: torch.Tensor, state=None,
            penalty: list[torch.Tensor] | None = None, position: int = 0) -> torch.Tensor:
        """Pick and step for each of noise's steps (K, N, V): the ids (K, N), each row
        argmax(noise[t] + logits) with the logits of the step before (noise is written
        to); the last step's logits and state are then the stepper's (`.logits`,
        `.state`). With `scripted` (the default) the whole block runs in TorchScript
        when it can, else step by step from Python, with the same result. `penalty`
        (infer.penalties.PenaltyState.tensors(), its window at `position`) penalises
        each step's logits before the pick and counts the pick, in place."""
        steps, batch_size = noise.shape[:2]
        if state is not self._state:
            self._load(state, batch_size)
        ids = torch.empty(steps, batch_size, dtype=torch.long, device=self.device)
        function = stepper_script.compiled(self.kind) if self.scripted else None
        if function is not None:
            function(noise, logits, ids, self._fresh, penalty or [], position,
                     *self._script_arguments)
            self._fresh = True
            return ids
        pick = stepper_script._pick  # plain Python here
        pick(noise[0], logits, ids[0], penalty or [], position)  # before the product
        for t in range(steps):
            if t or not self._fresh:
                self._recurrent_products()  # and the logits of the step before
            if t:
                pick(noise[t], self._logits, ids[t], penalty or [], position + t)
            self._layers(ids[t])
        self._recurrent_products()  # the last step's logits
        self._fresh = True
        return ids

    @property
    def logits(self) -> torch.Tensor:
        return self._logits

    @property
    def state(self):
        return self._state

    # ------------------------------------------------------------------ state buffers

    def _load(self, state, batch_size: int) -> None:
        """Copy `state` (None: zeros) into buffers for `batch_size` streams."""
        self._fresh = False
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

        layers, hidden, gate_size = self.num_layers, self.hidden_size, self.gate_size
        self.batch_size = batch_size
        # (L, B, H): every layer's h, the batched product's input
        self._hidden = h = empty(layers, batch_size, hidden)
        self.h = [h[n] for n in range(layers)]  # (B, H) views
        if self.kind == "lstm":
            c = empty(layers, batch_size, hidden)
            self.c = [c[n] for n in range(layers)]
            self._state = (h, c)
        else:
            self._state = h
        # the batched product's output (L, B, G*H + V), and its views: each layer's
        # recurrent part (for the GRU, r and z apart from n), and the logits
        self._products = products = empty(layers, batch_size, gate_size + self.vocab_size)
        self._recurrent = [products[n, :, :gate_size] for n in range(layers)]
        if self.kind == "gru":
            self._two_recurrent = [products[n, :, :2 * hidden] for n in range(layers)]
            self._new_recurrent = [products[n, :, 2 * hidden:gate_size]
                                   for n in range(layers)]
        self._logits = products[-1, :, gate_size:]  # (B, V)
        self._gates = gates = empty(batch_size, gate_size)  # (B, G*H), shared by the layers
        # views cut once: at batch 1, slicing anew each step costs about as much as the
        # arithmetic on them
        self._sigmoid_gates = gates[:, :3 * hidden if self.kind == "lstm" else 2 * hidden]
        self._gate_views = [gates[:, k * hidden:(k + 1) * hidden]
                            for k in range(gate_size // hidden)]
        self._lay_out_input_products(batch_size)
        self._script_arguments = self._arguments_for_script()

    def _lay_out_input_products(self, batch_size: int) -> None:
        """Layers 1 and up: their input products as P parts of one batched product,
        (P, B, H) x (P, H, G*H / P) -> (P, B, G*H / P), added to the GRU's input bias or
        the others' recurrent part: with `split_inputs` at batch 1 the halves of the
        columns (P = 2; the weights copied into that layout), else the whole (P = 1,
        views)."""
        gate_size, hidden = self.gate_size, self.hidden_size
        self.parts = parts = self.input_parts(batch_size)

        def in_parts(tensor: torch.Tensor) -> torch.Tensor:  # (..., G*H) -> (P, -1, G*H/P)
            return tensor.view(parts, -1, gate_size // parts)

        self._input_weight = [weight.view(hidden, parts, -1).transpose(0, 1).contiguous()
                              for weight in self.input_weight]
        self._input_add = [in_parts(add) for add in (
            self.input_bias if self.kind == "gru" else self._recurrent[1:])]
        self._below = [h.expand(parts, batch_size, hidden) for h in self.h[:-1]]
        self._input_out = in_parts(self._gates)

    @property
    def can_split(self) -> bool:
        """Whether `split_inputs` would split anything: there are layers above the first,
        and their gate columns are even in number."""
        return self.num_layers > 1 and self.gate_size % 2 == 0

    def input_parts(self, batch_size: int) -> int:
        """In how many parts the input products of the layers above the first are made
        at this batch size: 2 (the halves of their columns) with `split_inputs` at batch
        1 where it `can_split`; else 1."""
        return 2 if self.split_inputs and batch_size == 1 and self.can_split else 1

    def _arguments_for_script(self) -> tuple:
        """What stepping_script's function for this cell takes after (noise, logits, ids,
        fresh)."""
        common = (self.table, self._input_weight, self.recurrent_weight,
                  self.recurrent_bias, self._products, self._logits, self.h, self._gates,
                  self._input_add, self._below, self._input_out)
        if self.kind == "lstm":
            return (*common, self._recurrent, self.c, self._sigmoid_gates,
                    self._gate_views, self._hidden)
        if self.kind == "gru":
            return (*common, self._two_recurrent, self._new_recurrent,
                    self._sigmoid_gates, self._gate_views, self._hidden)
        return (*common, self._recurrent, self._hidden)

    # ------------------------------------------------------------------------- steps

    def _recurrent_products(self) -> None:
        """Every layer's recurrent product and the logits, from the state as it is."""
        torch.baddbmm(self.recurrent_bias, self._hidden, self.recurrent_weight,
                      out=self._products)

    def _layers(self, ids: torch.Tensor) -> None:
        """Each layer's new state for the characters `ids`, after _recurrent_products."""
        for layer in range(self.num_layers):
            if layer == 0:
                torch.index_select(self.table, 0, ids, out=self._gates)
            else:  # the GRU's input part with its bias; the others' with the recurrent part
                torch.baddbmm(self._input_add[layer - 1], self._below[layer - 1],
                              self._input_weight[layer - 1], out=self._input_out)
            self._cell(layer)

    def _lstm_layer(self, layer: int) -> None:
        in_gate, forget_gate, out_gate, cell_gate = self._gate_views
        h, c = self.h[layer], self.c[layer]
        if layer == 0:
            self._gates.add_(self._recurrent[0])
        self._sigmoid_gates.sigmoid_()
        cell_gate.tanh_()
        c.mul_(forget_gate).addcmul_(in_gate, cell_gate)
        torch.tanh(c, out=h)
        h.mul_(out_gate)

    def _gru_layer(self, layer: int) -> None:
        reset_gate, update_gate, new_gate = self._gate_views
        h = self.h[layer]
        self._sigmoid_gates.add_(self._two_recurrent[layer]).sigmoid_()
        new_gate.addcmul_(reset_gate, self._new_recurrent[layer]).tanh_()
        # h' = (1 - z) * n + z * h, which is lerp from n towards h by z
        torch.lerp(new_gate, h, update_gate, out=h)

    def _rnn_layer(self, layer: int) -> None:
        if layer == 0:
            self._gates.add_(self._recurrent[0])
        torch.tanh(self._gates, out=self.h[layer])
