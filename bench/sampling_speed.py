"""Sampling speed on the CPU: charlstm's generate() against its floor and the nn modules.

    python bench/sampling_speed.py [--models lstm,gru,rnn] [--shapes 2x512,2x256]
                                   [--batches 1,8,64] [--seconds 0.25] [--rounds 9]

For each recurrent cell, shape (layers x hidden units) and batch (--num-samples), these
characters-per-second figures: the nn-module step, calling the model's fused nn module on
one character at a time (`model(ids[:, None], state)`); the nn-cell step, `nn.LSTMCell`
(`GRUCell`, `RNNCell`) called once per layer per character between the model's embedding
and output layer (see cell_speed); charlstm's `generate()` end to end (whichever step it
chose at load time, picking each character at temperature 0.8, and turning ids into
text); the same with a frequency and a presence penalty (0.1 and 0.3, applied in the
stepper's TorchScript block; target: at least 0.8 of the speed without at batch 1); the
bare `Stepper` alone; and a floor: only the matrix products of the layers and
the output layer, nothing else (see matmul_floor). Models are random-init (speed does
not depend on the weights), embedding 64, vocabulary --vocab.

The issue's targets for generate(), as ratios in the same run: at batch 1, at least 0.70
of the matrix-product floor; at every batch, at least as fast as the faster of the two nn
steps. Each measure is timed in short slices (--seconds each; for generate() one whole call
of about that long), the six in turn, round after round, so that a shared machine's
changes of pace hit all of them alike; the table shows the median of each measure's
slices, and the ratios are ratios of those medians. (This script first took the best of
three half-second rounds, which set one measure's luckiest moment against another's.) On
a shared VM the ratios still move from run to run, as the machine's pace does: by up to
0.3 at batch 1 between two runs half an hour apart on this project's Xeon. Compare
records, not single figures. The default run (18 settings) takes about three minutes.
Prints the table and appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402

from charlstm.model.charrnn import CharRNN  # noqa: E402

from charlstm.settings import ModelConfig  # noqa: E402
from charlstm.infer.generate import generate  # noqa: E402
from charlstm.infer.penalties import Penalties  # noqa: E402
from charlstm.infer import step_choice as stepping_choice  # noqa: E402
from charlstm.model.stepper import GATES, Stepper  # noqa: E402
from charlstm.data.vocab import Vocabulary  # noqa: E402

FLOOR_TARGET = 0.70  # generate() at batch 1 against the matrix products alone
PENALTY_TARGET = 0.8  # generate() with penalties at batch 1 against without
# penalties that the stepper applies in its TorchScript block (any values cost the same)
PENALTIES = Penalties(frequency=0.1, presence=0.3)
NN_TARGET = 1.0  # generate() at any batch against the faster nn step
WARM_UP_STEPS = 5


def chars_per_second(step: Callable[[], int], seconds: float) -> float:
    """Call `step` (which returns the characters it made) for about `seconds`."""
    for _ in range(WARM_UP_STEPS):
        step()
    chars, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        chars += step()
    return chars / (time.perf_counter() - started)


def module_speed(model: CharRNN, batch: int, seconds: float) -> float:
    ids = torch.randint(model.config.vocab_size, (batch, 1))
    state = None

    def step() -> int:
        nonlocal state
        _, _, state = model(ids, state)
        return batch

    return chars_per_second(step, seconds)


def stepper_speed(model: CharRNN, batch: int, seconds: float) -> float:
    stepper = Stepper(model)
    ids = torch.randint(model.config.vocab_size, (batch,))
    state = None

    def step() -> int:
        nonlocal state
        _, state = stepper(ids, state)
        return batch

    return chars_per_second(step, seconds)


CELLS = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}


def cell_speed(model: CharRNN, batch: int, seconds: float) -> float:
    """The issue's reference: torch's one-step cell modules, one call per layer per
    character (one matrix product per weight matrix), from the model's embedding to its
    output layer. The cells' weights are their own random ones: speed does not depend on
    them."""
    c = model.config
    cells = [CELLS[c.model](c.embed_size if layer == 0 else c.hidden_size, c.hidden_size)
             for layer in range(c.num_layers)]
    ids = torch.randint(c.vocab_size, (batch,))
    states: list = [None] * c.num_layers

    def step() -> int:
        x = model.embed(ids)
        for layer, cell in enumerate(cells):
            states[layer] = cell(x, states[layer])
            x = states[layer][0] if c.model == "lstm" else states[layer]
        model.head(x)
        return batch

    return chars_per_second(step, seconds)


def matmul_floor(model: CharRNN, batch: int, seconds: float) -> float:
    """Only the matrix products any one-step method must do per character, each layer's
    weights as one stacked matrix (layer 0: the recurrent ones; its input weights are a
    table lookup) and the output layer, into preallocated outputs: on a CPU this is
    bounded by how fast the weights stream from memory."""
    c = model.config
    width = GATES[c.model] * c.hidden_size
    weights = [torch.randn(c.hidden_size if layer == 0 else 2 * c.hidden_size, width)
               for layer in range(c.num_layers)]
    inputs = [torch.randn(batch, w.size(0)) for w in weights]
    outputs = [torch.empty(batch, width) for _ in weights]
    head, hidden = torch.randn(c.hidden_size, c.vocab_size), torch.randn(batch, c.hidden_size)
    logits = torch.empty(batch, c.vocab_size)

    def step() -> int:
        for x, w, out in zip(inputs, weights, outputs):
            torch.mm(x, w, out=out)
        torch.mm(hidden, head, out=logits)
        return batch

    return chars_per_second(step, seconds)


def generate_speed(model: CharRNN, vocab: Vocabulary, batch: int, seconds: float,
                   penalties: Penalties | None = None) -> float:
    """One whole generate() call of about `seconds`, timed from its first character to its
    last (a stream cut off at the end of a slice would have paid for a whole block of
    steps and counted only some of them). Before its first character a call builds its
    stepper, and the first call for a model and batch size also times the ways to step
    (see stepping_choice): once per generation, not per character, so not timed here."""
    def after_first(steps: int) -> tuple[int, float]:
        stream = generate(model, vocab, "", steps, temperature=0.8, num_samples=batch,
                          generator=torch.Generator().manual_seed(0), penalties=penalties)
        next(stream)
        started = time.perf_counter()
        rows = sum(1 for _ in stream)
        return rows, time.perf_counter() - started

    rows, took = after_first(WARM_UP_STEPS + 1)  # how long a step takes, roughly
    rows, took = after_first(1 + max(WARM_UP_STEPS, round(rows * seconds / took)))
    return rows * batch / took


def parse_shape(text: str) -> tuple[int, int]:
    layers, _, hidden = text.partition("x")
    return int(layers), int(hidden)


MEASURES = {"module": lambda model, vocab, batch, seconds: module_speed(model, batch, seconds),
            "cell": lambda model, vocab, batch, seconds: cell_speed(model, batch, seconds),
            "generate": generate_speed,
            "penalised": lambda model, vocab, batch, seconds: generate_speed(
                model, vocab, batch, seconds, PENALTIES),
            "stepper": lambda model, vocab, batch, seconds: stepper_speed(model, batch, seconds),
            "floor": lambda model, vocab, batch, seconds: matmul_floor(model, batch, seconds)}


def measure(model: CharRNN, vocab: Vocabulary, batch: int, seconds: float,
            rounds: int) -> dict[str, float]:
    """The median chars/s of each measure over `rounds` rounds, the measures in turn."""
    slices: dict[str, list[float]] = {name: [] for name in MEASURES}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, speed in MEASURES.items():
                slices[name].append(speed(model, vocab, batch, seconds))
    return {name: statistics.median(speeds) for name, speeds in slices.items()}


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f} ({'met' if ratio >= target else 'not met'})"


def row(kind: str, layers: int, hidden: int, batch: int, speeds: dict[str, float],
        chosen: str) -> list[str]:
    generated, nn_step = speeds["generate"], max(speeds["module"], speeds["cell"])
    on_floor = generated / speeds["floor"]
    return [f"{kind} {layers}x{hidden}", str(batch),
            *(f"{speeds[name]:,.0f}" for name in ("module", "cell", "generate", "stepper",
                                                "floor")),
            chosen,
            verdict(on_floor, FLOOR_TARGET) if batch == 1 else f"{on_floor:.2f}",
            verdict(generated / nn_step, NN_TARGET),
            f"{speeds['penalised']:,.0f}",
            verdict(speeds["penalised"] / generated, PENALTY_TARGET) if batch == 1
            else f"{speeds['penalised'] / generated:.2f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lstm,gru,rnn", help="comma-separated cells")
    parser.add_argument("--shapes", default="2x512,2x256", help="LAYERSxHIDDEN, comma-separated")
    parser.add_argument("--batches", default="1,8,64", help="samples generated together")
    parser.add_argument("--vocab", type=int, default=80, help="vocabulary size")
    parser.add_argument("--seconds", type=float, default=0.25, help="per measure and round")
    parser.add_argument("--rounds", type=int, default=9, help="slices of each measure")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()

    vocab = Vocabulary.from_text("".join(chr(32 + i) for i in range(args.vocab)))
    rows = []
    for kind in args.models.split(","):
        for layers, hidden in map(parse_shape, args.shapes.split(",")):
            torch.manual_seed(0)
            model = CharRNN(ModelConfig(vocab_size=len(vocab), model=kind, num_layers=layers,
                                        hidden_size=hidden, embed_size=64)).eval()
            for batch in map(int, args.batches.split(",")):
                speeds = measure(model, vocab, batch, args.seconds, args.rounds)
                chosen = stepping_choice.chosen_step(model, batch) or "?"
                rows.append(row(kind, layers, hidden, batch, speeds, chosen))
                print(" | ".join(rows[-1]), file=sys.stderr)  # progress, the table comes last
    table = markdown_table(
        ["model", "batch", "nn module step (chars/s)", "nn cell step (chars/s)",
         "generate() (chars/s)", "bare Stepper (chars/s)", "matrix products only (chars/s)",
         "generate() steps with", f"generate / floor (target {FLOOR_TARGET} at batch 1)",
         "generate / faster nn step (target 1.0)",
         "generate() with frequency and presence penalties (chars/s)",
         f"penalised / plain (target {PENALTY_TARGET} at batch 1)"],
        rows)
    publish("Sampling speed: generate() against its floor and the nn steps", table,
            not args.no_record)


if __name__ == "__main__":
    main()
