"""The stepper's equations, and the pick between its steps, compiled by TorchScript.

At batch 1 a step of a small model costs little more than the calls into torch that
make it: a few microseconds each from Python, for some fifteen calls per character. Run
from TorchScript's interpreter, the same calls cost a fraction of that, so a whole block
of characters runs in one call from Python: for each step, the batched product of the
state before it (every layer's recurrent part and the logits), the pick of the step's
ids from those logits plus its Gumbel noise (see picking.Picker), then the layers,
exactly as `Stepper.run` does from Python, in the same buffers (each layer above the
first adds its input product to `input_add`, in the parts that
`Stepper._lay_out_input_products` lays out). With `fresh` (the stepper's last run ended
on the product of the state as it is) the first step's product is not made again.

TorchScript is compiled on first use (a fraction of a second); if it is missing or fails
on this torch build, `compiled` returns None and the caller steps from Python.
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable, List, Optional

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def _pick(noise: Tensor, logits: Tensor, ids: Tensor, penalty: List[Tensor],
          position: int) -> None:
    """ids = argmax(noise + logits), the logits first penalised for the characters of
    the window and the pick then counted in it, when `penalty` holds (counts (N, V + 1),
    ring (N, W), ones and minus ones (N, 1), the additive table, and with repetition its
    two factor tables; see infer/penalty_state.py, whose Python path does the same
    arithmetic in the same order). Seven kernels more per step, none allocated twice."""
    if len(penalty) == 0:
        torch.argmax(noise.add_(logits), -1, out=ids)
        return
    counts, ring, ones, minus_ones = penalty[0], penalty[1], penalty[2], penalty[3]
    vocab_size = logits.size(1)
    scores = logits
    if len(penalty) == 7:
        factor = torch.where(logits > 0, torch.take(penalty[5], counts).narrow(1, 0, vocab_size),
                             torch.take(penalty[6], counts).narrow(1, 0, vocab_size))
        scores = logits * factor
    scores = scores + torch.take(penalty[4], counts).narrow(1, 0, vocab_size)
    torch.argmax(noise.add_(scores), -1, out=ids)
    slot = ring.narrow(1, position % ring.size(1), 1)  # (N, 1): the oldest character
    counts.scatter_add_(1, slot, minus_ones)
    slot.copy_(ids.unsqueeze(1))
    counts.scatter_add_(1, slot, ones)


def _lstm(noise: Tensor, logits: Tensor, ids: Tensor, fresh: bool, penalty: List[Tensor],
          position: int, table: Tensor,
          input_weight: List[Tensor], recurrent_weight: Tensor, recurrent_bias: Tensor,
          products: Tensor, out_logits: Tensor, h: List[Tensor], gates: Tensor,
          input_add: List[Tensor], below: List[Tensor], input_out: Tensor,
          recurrent: List[Tensor], c: List[Tensor], sigmoid_gates: Tensor,
          gate_views: List[Tensor], state: Tensor) -> None:
    in_gate, forget_gate = gate_views[0], gate_views[1]
    out_gate, cell_gate = gate_views[2], gate_views[3]
    _pick(noise[0], logits, ids[0], penalty, position)
    for t in range(noise.size(0)):
        step_ids = ids[t]
        if t > 0 or not fresh:
            torch.baddbmm(recurrent_bias, state, recurrent_weight, out=products)
        if t > 0:
            _pick(noise[t], out_logits, step_ids, penalty, position + t)
        for layer in range(len(h)):
            if layer == 0:
                torch.index_select(table, 0, step_ids, out=gates)
                gates.add_(recurrent[0])
            else:
                torch.baddbmm(input_add[layer - 1], below[layer - 1],
                              input_weight[layer - 1], out=input_out)
            sigmoid_gates.sigmoid_()
            cell_gate.tanh_()
            c[layer].mul_(forget_gate).addcmul_(in_gate, cell_gate)
            torch.tanh(c[layer], out=h[layer])
            h[layer].mul_(out_gate)
    torch.baddbmm(recurrent_bias, state, recurrent_weight, out=products)


def _gru(noise: Tensor, logits: Tensor, ids: Tensor, fresh: bool, penalty: List[Tensor],
         position: int, table: Tensor,
         input_weight: List[Tensor], recurrent_weight: Tensor, recurrent_bias: Tensor,
         products: Tensor, out_logits: Tensor, h: List[Tensor], gates: Tensor,
         input_add: List[Tensor], below: List[Tensor], input_out: Tensor,
         two_recurrent: List[Tensor], new_recurrent: List[Tensor],
         sigmoid_gates: Tensor, gate_views: List[Tensor], state: Tensor) -> None:
    reset_gate, update_gate, new_gate = gate_views[0], gate_views[1], gate_views[2]
    _pick(noise[0], logits, ids[0], penalty, position)
    for t in range(noise.size(0)):
        step_ids = ids[t]
        if t > 0 or not fresh:
            torch.baddbmm(recurrent_bias, state, recurrent_weight, out=products)
        if t > 0:
            _pick(noise[t], out_logits, step_ids, penalty, position + t)
        for layer in range(len(h)):
            if layer == 0:
                torch.index_select(table, 0, step_ids, out=gates)
            else:
                torch.baddbmm(input_add[layer - 1], below[layer - 1],
                              input_weight[layer - 1], out=input_out)
            sigmoid_gates.add_(two_recurrent[layer]).sigmoid_()
            new_gate.addcmul_(reset_gate, new_recurrent[layer]).tanh_()
            torch.lerp(new_gate, h[layer], update_gate, out=h[layer])
    torch.baddbmm(recurrent_bias, state, recurrent_weight, out=products)


def _rnn(noise: Tensor, logits: Tensor, ids: Tensor, fresh: bool, penalty: List[Tensor],
         position: int, table: Tensor,
         input_weight: List[Tensor], recurrent_weight: Tensor, recurrent_bias: Tensor,
         products: Tensor, out_logits: Tensor, h: List[Tensor], gates: Tensor,
         input_add: List[Tensor], below: List[Tensor], input_out: Tensor,
         recurrent: List[Tensor], state: Tensor) -> None:
    _pick(noise[0], logits, ids[0], penalty, position)
    for t in range(noise.size(0)):
        step_ids = ids[t]
        if t > 0 or not fresh:
            torch.baddbmm(recurrent_bias, state, recurrent_weight, out=products)
        if t > 0:
            _pick(noise[t], out_logits, step_ids, penalty, position + t)
        for layer in range(len(h)):
            if layer == 0:
                torch.index_select(table, 0, step_ids, out=gates)
                gates.add_(recurrent[0])
            else:
                torch.baddbmm(input_add[layer - 1], below[layer - 1],
                              input_weight[layer - 1], out=input_out)
            torch.tanh(gates, out=h[layer])
    torch.baddbmm(recurrent_bias, state, recurrent_weight, out=products)


_SOURCES = {"lstm": _lstm, "gru": _gru, "rnn": _rnn}
_compiled: dict[str, Optional[Callable]] = {}


def compiled(kind: str) -> Optional[Callable]:
    """The scripted block function for a cell, compiled once per process; None when
    TorchScript cannot compile it here."""
    if kind not in _compiled:
        try:
            with warnings.catch_warnings():  # torch 2.10+ calls TorchScript deprecated
                warnings.simplefilter("ignore", DeprecationWarning)
                _compiled[kind] = torch.jit.script(_SOURCES[kind])
        except Exception as error:  # any failure of an optional speed-up: step from Python
            log.debug("TorchScript unavailable for the %s step: %s", kind, error)
            _compiled[kind] = None
    return _compiled[kind]
