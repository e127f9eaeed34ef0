"""Choosing each next character from the model's logits: temperature, top-k, top-p.

`pick` chooses once from a batch of logits; `Picker` does the same for every step of one
generation, with the random noise drawn many steps at a time so that a step costs two
calls into torch. All randomness comes from an explicit `torch.Generator`.
"""

from __future__ import annotations

import math

import torch


def pick(logits: torch.Tensor, temperature: float, top_k: int | None = None,
         top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (N, V) -> the chosen id of each row (N,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    # all finite exactly when the least and the greatest are (NaN propagates): one
    # reduction, where isfinite().all() costs three, for a check made at every character
    lowest, highest = torch.aminmax(scaled)
    if not (math.isfinite(lowest.item()) and math.isfinite(highest.item())):
        return logits.argmax(dim=-1)  # a temperature so small it overflows: greedy
    logits = scaled
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # drop a character once the more likely ones already reach top_p on their own
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (N, V)
    # An exponential race: with q ~ Exp(1) per entry, argmax(p / q) is drawn from p (what
    # torch.multinomial does for one sample, without its checks on probs, which cost more
    # than the draw at batch 1). q is -log(u) for u uniform in [0, 1): on a CPU that is
    # about four times faster than exponential_, which matters at batch 64. u = 0 makes
    # q infinite and p / q zero: that character just loses the race.
    race = torch.empty_like(probs).uniform_(generator=generator).log_().neg_()
    return torch.div(probs, race, out=race).argmax(dim=-1)


NOISE_ELEMENTS = 1 << 20  # the race's noise is drawn for many steps at once, up to this


class Picker:
    """`pick` for one generation, one step at a time, in two calls into torch per step.

    In the common case (a positive finite temperature, no top-k or top-p) the race needs
    no softmax: with G = -log(-log u) (Gumbel noise), argmax(p / q) above is argmax(l / T
    + G), which is argmax(l + T * G) and never overflows at small T. The noise T * G is
    drawn for up to 64 steps at once, so a step costs an add and an argmax. A logit of
    +inf or NaN is still picked greedily, and a -inf one, probability 0, never. The chunks
    depend only on the steps drawn so far, never on how the steps are grouped into
    blocks, and a finite `length` draws no more than it uses, so a seed gives the same
    text however it is streamed. Otherwise each step goes through `pick`.
    """

    def __init__(self, temperature: float, top_k: int | None, top_p: float | None,
                 generator: torch.Generator | None, length: int):
        self.options = (temperature, top_k, top_p, generator)
        self.fast = (top_k is None and (top_p is None or top_p >= 1)
                     and 0 < temperature < 1e6)  # T * G stays finite below about 1e36
        self.left = length or None  # steps still to draw for; None: endless
        self.chunk = torch.empty(0)  # (steps, N, V) float32
        self.noise: list[torch.Tensor] = []  # its steps, (N, V) each
        self.used = 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (N, V) -> the chosen id of each row (N,)."""
        if not self.fast:
            return pick(logits, *self.options)
        if self.used == len(self.noise):
            self._draw(logits)
        noise = self.noise[self.used]
        self.used += 1
        return noise.add_(logits).argmax(dim=-1)

    def take(self, logits: torch.Tensor, steps: int) -> torch.Tensor:
        """The noise of the next steps (k, N, V), 1 <= k <= steps, to add to the logits
        of each of them (see `Stepper.run`): what as many calls would have used."""
        if self.used == len(self.noise):
            self._draw(logits)
        taken = self.chunk[self.used:self.used + steps]
        self.used += taken.size(0)
        return taken

    def ready(self, logits: torch.Tensor) -> int:
        """How many steps' noise `take` can give now without drawing (it draws the next
        chunk first when this one is used up): a batch of generations takes the same
        number of steps from each (see batch_step.py)."""
        if self.used == len(self.noise):
            self._draw(logits)
        return len(self.noise) - self.used

    def _draw(self, logits: torch.Tensor) -> None:
        temperature, _, _, generator = self.options
        rows, vocab_size = logits.shape
        steps = max(1, min(64, NOISE_ELEMENTS // (rows * vocab_size)))
        if self.left is not None:
            steps = min(steps, self.left)
            self.left -= steps
        noise = torch.empty(steps, rows, vocab_size, device=logits.device)
        # -log(-log u) for u uniform in [0, 1); u = 0 gives -inf: that entry loses
        noise.uniform_(generator=generator).log_().neg_().log_().mul_(-temperature)
        self.chunk, self.noise, self.used = noise, list(noise.unbind(0)), 0
