"""The penalties of infer/penalties.py applied to a batch of samples as they are made.

The penalties are tables over counts (the additive part for 0..window occurrences, and
the repetition factors for a positive and a negative logit), so a step costs a lookup
and an add whatever the settings: `PenaltyState.tensors` hands them to the stepper's
TorchScript block (model/stepper_script.py), which penalises each step's logits and
keeps the counts up to date in place; `apply` and `record` do the same arithmetic in the
same order from Python (for no-repeat, top-k, top-p, the copy guard and GPUs).
"""

from __future__ import annotations

import torch

from .penalties import NgramWindow, Penalties


class PenaltyState:
    """The window's counts for a batch of samples, and the penalised logits."""

    def __init__(self, penalties: Penalties, vocab_size: int, recent: list[list[int]],
                 device: torch.device):
        self.penalties = penalties
        window, rows = penalties.window, len(recent)
        # (rows, V + 1) occurrences; column V counts the ring's empty slots (never a
        # character's, so never a penalty, and never below 0: a lookup index)
        self.counts = torch.zeros(rows, vocab_size + 1, dtype=torch.long, device=device)
        self.ring = torch.full((rows, window), vocab_size, dtype=torch.long, device=device)
        self.position = 0  # characters recorded so far: the next slot is position % window
        self.ones = torch.ones(rows, 1, dtype=torch.long, device=device)
        self.minus_ones = -self.ones
        count = torch.arange(window + 1, dtype=torch.float, device=device)
        seen = (count > 0).float()
        # the additive penalty of a character seen `count` times, and its repetition factor
        # for a positive and a negative logit
        self.add_table = -(penalties.frequency * count + penalties.presence * seen)
        r = penalties.repetition
        self.positive_factor = torch.where(count > 0, 1 / r, 1.0)
        self.negative_factor = torch.where(count > 0, r, 1.0)
        self.ngrams = [NgramWindow(penalties.no_repeat, window) for _ in range(rows)] \
            if penalties.no_repeat else []
        self._seed(recent)

    def _seed(self, recent: list[list[int]]) -> None:
        """Count the prime's last characters (each row's own)."""
        window = self.penalties.window
        for row, ids in enumerate(recent):
            tail = ids[-window:]
            for ngrams in self.ngrams[row:row + 1]:
                for i in tail:
                    ngrams.push(i)
            if tail:
                slots = torch.arange(len(tail)) + (window - len(tail))
                self.ring[row, slots] = torch.tensor(tail, device=self.ring.device)
        self.counts.scatter_add_(1, self.ring, torch.ones_like(self.ring))
        self.position = 0  # the oldest slot (0) goes first

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """The penalised logits (N, V) (a new tensor), no-repeat's ruled out at -inf."""
        counts = self.counts[:, :-1]
        penalised = logits.float()
        if self.penalties.repetition != 1:
            factor = torch.where(penalised > 0, self.positive_factor[counts],
                                 self.negative_factor[counts])
            penalised = penalised * factor
        if self.penalties.scoring:
            penalised = penalised + self.add_table[counts]
        else:
            penalised = penalised.clone()
        for row, ngrams in enumerate(self.ngrams):
            banned = ngrams.banned()
            if banned and len(banned) < penalised.size(1):
                penalised[row, list(banned)] = float("-inf")
        return penalised

    def record(self, ids: torch.Tensor) -> None:
        """Count the characters just picked (N,), and forget the window's oldest."""
        slot = self.ring[:, self.position % self.penalties.window:][:, :1]  # (N, 1) view
        self.counts.scatter_add_(1, slot, self.minus_ones)
        slot.copy_(ids[:, None])
        self.counts.scatter_add_(1, slot, self.ones)
        self.position += 1
        for ngrams, i in zip(self.ngrams, ids.tolist()):
            ngrams.push(i)

    def tensors(self) -> list[torch.Tensor]:
        """What the stepper's block needs to penalise and count in place."""
        tables = [self.add_table]
        if self.penalties.repetition != 1:
            tables += [self.positive_factor, self.negative_factor]
        return [self.counts, self.ring, self.ones, self.minus_ones, *tables]
