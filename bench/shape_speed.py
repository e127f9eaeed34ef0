"""Training speed at larger shapes, in fp32 and bf16, against the matrix products alone.

    python bench/shape_speed.py [--width 512 --width 1024 ...] [--layers 1 ...]
                                [--batch 32 ...] [--seq-len 32] [--vocab 100 ...]
                                [--precision fp32 --precision bf16] [--no-record]

For each shape, a whole training step of charlstm's LSTM (forward, backward and AdamW, as
the budget planner times it: budget.step_seconds, the fastest of five after two warm-up
steps) against its floor: the same step's matrix products alone, in the same precision,
with nothing else (no gate nonlinearities, no cell update, no softmax, no optimizer).
The floor of a layer is its input projection over the whole window, the window's
recurrent products one step after another, and the two products of each in backward
(the gradient of the input and of the weight); the output layer's are one product
forward and two backward. The ratio step / floor is what the LSTM costs on top of its
products; chars/s is the step's. The output layer's share of the floor shows what a
large vocabulary costs. Rounds alternate the shapes so that drift hits all of them.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402

from charlstm.device import autocast  # noqa: E402
from charlstm.model.charrnn import CharRNN  # noqa: E402
from charlstm.settings import ModelConfig  # noqa: E402
from charlstm.training.budget import step_seconds  # noqa: E402
from charlstm.training.optim import make_optimizer  # noqa: E402

CPU = torch.device("cpu")


def products(batch: int, seq: int, embed: int, width: int, layers: int,
             vocab: int) -> list[tuple[int, int, int, int]]:
    """The step's matrix products as (count, m, k, n): `count` products of (m, k) x (k, n)."""
    rows, gates = batch * seq, 4 * width
    out = []
    for layer in range(layers):
        inputs = embed if layer == 0 else width
        out += [(1, rows, inputs, gates),  # input projection, the whole window
                (1, rows, gates, inputs), (1, inputs, rows, gates),  # its backward
                (seq, batch, width, gates),  # recurrent, one step after another
                (seq, batch, gates, width),  # backward: the gradient of h, step by step
                (1, width, rows, gates)]  # and of the recurrent weight, once
    out += [(1, rows, width, vocab), (1, rows, vocab, width), (1, width, rows, vocab)]
    return out


def floor_seconds(shape: list[tuple[int, int, int, int]], precision: str,
                  repeats: int = 5) -> float:
    """The fastest of `repeats` runs of the products, in `precision`."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    operands = [(count, torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype))
                for count, m, k, n in shape]

    def run() -> None:
        for count, a, b in operands:
            for _ in range(count):
                torch.mm(a, b)

    run()
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def output_share(shape: list[tuple[int, int, int, int]]) -> float:
    """The output layer's share of the step's multiply-adds."""
    work = [count * m * k * n for count, m, k, n in shape]
    return sum(work[-3:]) / sum(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, action="append")
    parser.add_argument("--layers", type=int, action="append")
    parser.add_argument("--batch", type=int, action="append")
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--vocab", type=int, action="append")
    parser.add_argument("--precision", action="append", choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    shapes = list(itertools.product(args.layers or [1], args.width or [512, 1024, 1536],
                                    args.batch or [32, 128], args.vocab or [100, 1500],
                                    args.precision or ["fp32", "bf16"]))
    steps: dict = {shape: [] for shape in shapes}
    floors: dict = {shape: [] for shape in shapes}
    for _ in range(args.rounds):
        for shape in shapes:
            layers, width, batch, vocab, precision = shape
            torch.manual_seed(0)
            model = CharRNN(ModelConfig(vocab_size=vocab, num_layers=layers,
                                        hidden_size=width, embed_size=args.embed,
                                        dropout=0.0))
            optimizer = make_optimizer(model, 1e-3, 0.0, CPU)
            steps[shape].append(step_seconds(model, batch, args.seq_len, CPU, precision,
                                             optimizer, repeats=5, warmup=2))
            floors[shape].append(floor_seconds(
                products(batch, args.seq_len, args.embed, width, layers, vocab), precision))
            print(f"{shape}: step {steps[shape][-1] * 1000:.1f} ms, floor "
                  f"{floors[shape][-1] * 1000:.1f} ms", file=sys.stderr)
    rows = []
    for shape in shapes:
        layers, width, batch, vocab, precision = shape
        step, floor = statistics.median(steps[shape]), statistics.median(floors[shape])
        shape_products = products(batch, args.seq_len, args.embed, width, layers, vocab)
        rows.append([f"LSTM {layers}x{width}", f"{batch} x {args.seq_len}", f"{vocab:,}",
                     precision, f"{step * 1000:.1f} ms", f"{floor * 1000:.1f} ms",
                     f"{step / floor:.2f}x", f"{batch * args.seq_len / step / 1000:.1f}k",
                     f"{output_share(shape_products):.0%}"])
    table = markdown_table(["model", "batch x seq", "vocabulary", "precision",
                            "training step", "matrix products alone", "step / floor",
                            "chars/s", "output layer's share of the products"], rows)
    publish("Training speed at larger shapes, fp32 and bf16, against the matrix products "
            "alone", table, not args.no_record)


if __name__ == "__main__":
    main()
