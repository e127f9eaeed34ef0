"""One training step: a batch forward and backward, the gradient clipped, AdamW's update.

`train_step` never waits for the device: its loss and a flag saying the step was bad (a
loss or gradient that is not finite) come back still on the device, and a bad step
updates nothing, neither the weights (the fused optimizer skips it on the device) nor the
carried state. The training loop reads the flags in batches (see guard).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import distributed
from ..data.batches import TrainBatches
from ..device import autocast
from ..model.charrnn import CharRNN, detach_state, keep_state_where
from .gradients import GradientWindow
from .optim import set_learning_rate


@dataclass
class StepParts:
    """What a training step works with; the same objects the trainer holds."""
    model: CharRNN  # evaluation, sampling and checkpoints use it
    trained: torch.nn.Module  # what the step runs: the model, or DDP around it, compiled
    optimizer: torch.optim.Optimizer
    batches: TrainBatches
    device: torch.device
    precision: str  # fp32, bf16 or fp16 (autocast)
    grad_clip: float  # 0: no clipping
    scaler: torch.amp.GradScaler | None = None  # fp16's loss scaler
    gradients: GradientWindow | None = None  # gets each step's norm before clipping


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimizer takes a bad-step flag on the device (the fused AdamW): then
    the step never waits for the device to say whether it was finite."""
    return getattr(optimizer, "_step_supports_amp_scaling", False)


def train_step(parts: StepParts, hidden, lr: float,
               every: int = 1) -> tuple[torch.Tensor, torch.Tensor, object]:
    """One optimisation step at learning rate `lr` from the carried state `hidden`: its
    loss and bad-step flag (both on the device) and the state to carry on with. With
    `every` > 1, only every `every`-th stream of the batch trains (--early-batch): the
    others' text is skipped and their state kept as it was."""
    batch = parts.batches.next()
    if batch.fresh:
        hidden = None
        if batch.warmup is not None:
            with torch.no_grad(), autocast(parts.device, parts.precision):
                hidden = parts.model.advance(batch.warmup.to(parts.device))
    set_learning_rate(parts.optimizer, lr)
    inputs = _to_device(batch.inputs, parts.device)
    targets = _to_device(batch.targets, parts.device)
    trained = hidden
    if every > 1:
        if hidden is None:
            hidden = parts.model.initial_state(inputs.size(0), parts.device)
        inputs, targets, trained = inputs[::every], targets[::every], _every(hidden, every)
    with autocast(parts.device, parts.precision):
        _, loss, new_hidden = parts.trained(inputs, detach_state(trained), targets)
    if every > 1:  # the streams that trained among those that waited
        new_hidden = _joined(new_hidden, hidden, every)
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.scaler is None:
        loss.backward()
    else:
        parts.scaler.scale(loss).backward()
        parts.scaler.unscale_(parts.optimizer)  # clip the true gradients, not the scaled ones
    norm = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), parts.grad_clip or math.inf)
    if parts.gradients is not None:
        parts.gradients.add(norm)
    # with several processes, the mean over all of them: every process then decides
    # alike below (the gradients and so the norm were averaged in backward already)
    loss = distributed.mean(loss.detach())
    bad = _update(parts, loss, norm)
    return loss, bad, keep_state_where(bad, hidden, detach_state(new_hidden))


def _update(parts: StepParts, loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """The optimizer's update unless the step was bad; the bad-step flag."""
    optimizer, scaler = parts.optimizer, parts.scaler
    if scaler is not None:
        # inf gradients under fp16 mean the loss scale is too high: the scaler skips
        # the update and lowers the scale, which is routine, not divergence; only a
        # non-finite loss (whose gradients are not finite either) counts as bad
        bad = ~torch.isfinite(loss)
        scaler.step(optimizer)
        scaler.update()
        return bad
    bad = ~torch.isfinite(loss + norm)  # the norm is not finite if any gradient is
    if skips_on_device(optimizer):
        optimizer.found_inf = bad.float()  # the fused kernel's skip flag
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bad:  # an optimizer without the flag: one device sync a step
        optimizer.step()
    return bad


def _every(state, every: int):
    """The recurrent state (each tensor (layers, B, H)) of every `every`-th stream."""
    if isinstance(state, tuple):
        return tuple(s[:, ::every] for s in state)
    return state[:, ::every]


def _joined(trained, whole, every: int):
    """`whole` with the state of every `every`-th stream replaced by `trained`."""
    if isinstance(whole, tuple):
        return tuple(_joined(t, w, every) for t, w in zip(trained, whole))
    joined = whole.clone()
    joined[:, ::every] = trained.to(whole.dtype)
    return joined


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Batches go to a GPU from page-locked memory, so the copy overlaps the step."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
