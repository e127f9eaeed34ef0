"""The stepper's equations, and the pick between its steps, compiled by TorchScript.

At batch 1 a step of a small model costs little more than the calls into torch that
make it: a few microseconds each from Python, for some fifteen calls per character. Run
from TorchScript's interpreter, the same calls cost a fraction of that, so `run_steps`
does a whole block of characters per Python call: for each step, pick the next ids from
the logits plus that step's Gumbel noise (see picking.Picker), then step the model on
them, exactly as `Stepper.__call__` does, in the same buffers.

TorchScript is compiled on first use (a fraction of a second); if it is missing or fails
on this torch build, `run_steps` returns None and the caller steps from Python.
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable, List, Optional

import torch
from torch import Tensor

log = logging.getLogger(__name__)


def _lstm(noise: Tensor, logits: Tensor, ids: Tensor, table: Tensor, weights: List[Tensor],
          biases: List[Tensor], head_weight: Tensor, head_bias: Tensor, h: List[Tensor],
          c: List[Tensor], inputs: List[Tensor], gates: Tensor, sigmoid_gates: Tensor,
          gate_views: List[Tensor], out_logits: Tensor) -> None:
    in_gate, forget_gate = gate_views[0], gate_views[1]
    out_gate, cell_gate = gate_views[2], gate_views[3]
    for t in range(noise.size(0)):
        step_ids = ids[t]
        torch.argmax(noise[t].add_(logits), -1, out=step_ids)
        for layer in range(len(h)):
            if layer == 0:
                torch.index_select(table, 0, step_ids, out=gates)
                gates.addmm_(h[0], weights[0])
            else:
                torch.addmm(biases[layer], inputs[layer - 1], weights[layer], out=gates)
            sigmoid_gates.sigmoid_()
            cell_gate.tanh_()
            c[layer].mul_(forget_gate).addcmul_(in_gate, cell_gate)
            torch.tanh(c[layer], out=h[layer])
            h[layer].mul_(out_gate)
        torch.addmm(head_bias, h[len(h) - 1], head_weight, out=out_logits)
        logits = out_logits


def _gru(noise: Tensor, logits: Tensor, ids: Tensor, table: Tensor, weights: List[Tensor],
         biases: List[Tensor], recurrent_weight: Tensor, recurrent_bias: Tensor,
         head_weight: Tensor, head_bias: Tensor, state: Tensor, h: List[Tensor],
         gates: Tensor, scratch: Tensor, sigmoid_gates: Tensor, gate_views: List[Tensor],
         two_scratch: List[Tensor], new_scratch: List[Tensor], out_logits: Tensor) -> None:
    reset_gate, update_gate, new_gate = gate_views[0], gate_views[1], gate_views[2]
    for t in range(noise.size(0)):
        step_ids = ids[t]
        torch.argmax(noise[t].add_(logits), -1, out=step_ids)
        torch.baddbmm(recurrent_bias, state, recurrent_weight, out=scratch)
        for layer in range(len(h)):
            if layer == 0:
                torch.index_select(table, 0, step_ids, out=gates)
            else:
                torch.addmm(biases[layer], h[layer - 1], weights[layer], out=gates)
            sigmoid_gates.add_(two_scratch[layer]).sigmoid_()
            new_gate.addcmul_(reset_gate, new_scratch[layer]).tanh_()
            torch.lerp(new_gate, h[layer], update_gate, out=h[layer])
        torch.addmm(head_bias, h[len(h) - 1], head_weight, out=out_logits)
        logits = out_logits


def _rnn(noise: Tensor, logits: Tensor, ids: Tensor, table: Tensor, weights: List[Tensor],
         biases: List[Tensor], head_weight: Tensor, head_bias: Tensor, h: List[Tensor],
         inputs: List[Tensor], gates: Tensor, out_logits: Tensor) -> None:
    for t in range(noise.size(0)):
        step_ids = ids[t]
        torch.argmax(noise[t].add_(logits), -1, out=step_ids)
        for layer in range(len(h)):
            if layer == 0:
                torch.index_select(table, 0, step_ids, out=gates)
                gates.addmm_(h[0], weights[0])
            else:
                torch.addmm(biases[layer], inputs[layer - 1], weights[layer], out=gates)
            torch.tanh(gates, out=h[layer])
        torch.addmm(head_bias, h[len(h) - 1], head_weight, out=out_logits)
        logits = out_logits


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
