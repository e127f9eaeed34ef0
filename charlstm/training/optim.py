"""The optimizer and the learning-rate schedule.

AdamW with weight decay on matrices and embeddings only; the learning rate warms up
linearly, then follows a cosine from `lr` down to `lr * min_lr_ratio` over the run. The
schedule is a pure function of where the run is, so a resumed run continues it exactly.
"""

from __future__ import annotations

import math

import torch

from ..settings import TrainConfig


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   device: torch.device, beta1: float = 0.9,
                   beta2: float = 0.99) -> torch.optim.Optimizer:
    """AdamW with decay on matrices and embeddings only, fused where torch has the kernel."""
    decay, no_decay = [], []
    for param in model.parameters():
        (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:  # the fused kernel saves several milliseconds a step over the foreach one
        return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2),
                                 fused=device.type in ("cpu", "cuda") or None)
    except RuntimeError:  # torch before 2.4 fuses AdamW only on CUDA
        return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2))


def learning_rate(step: int, progress: float, config: TrainConfig,
                  lr_scale: float = 1.0) -> float:
    """The learning rate of the step after `step` steps, `progress` (in [0, 1]) of the
    way through the run: linear warm-up, then cosine decay from lr to lr * min_lr_ratio,
    times `lr_scale` (the divergence guard's factor, 1 until a rollback halves it)."""
    floor = config.lr * config.min_lr_ratio
    cosine = floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if config.warmup_steps and step < config.warmup_steps:
        cosine *= (step + 1) / config.warmup_steps
    return cosine * lr_scale


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def learning_rate_of(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]
