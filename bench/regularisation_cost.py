"""What weight drop and locked dropout cost per training step, against the same step without.

    python bench/regularisation_cost.py [--preset small --preset medium]
                                        [--precision bf16 --precision fp32] [--rounds 5]

For each preset and precision: a training step (forward, backward, fused AdamW) of the
preset's model and batch shape, timed as budget.step_seconds times it (the fastest of a
few steps, after warm-up steps), with

- neither: fresh per-character dropout 0.2, no weight drop (the settings before weight drop);
- locked: locked dropout 0.2, no weight drop;
- weight drop: locked dropout 0.2 and weight drop 0.3 on the recurrent matrices.

Rounds alternate the three so that drift on a shared machine hits all of them; the table
shows the median of each and the cost as a share of the first. Prints the table and
appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402

from charlstm.training.budget import step_seconds  # noqa: E402
from charlstm.model.charrnn import CharRNN  # noqa: E402
from charlstm.settings import ModelConfig  # noqa: E402
from charlstm.training.optim import make_optimizer  # noqa: E402
from charlstm.training.presets import preset  # noqa: E402

VOCAB = 65  # tinyshakespeare's
KINDS = {"neither": dict(locked_dropout=False, weight_drop=0.0),
         "locked": dict(locked_dropout=True, weight_drop=0.0),
         "weight drop": dict(locked_dropout=True, weight_drop=0.3)}


def step_ms(spec: dict, precision: str, kind: dict) -> float:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=VOCAB, **{**spec["model"], "dropout": 0.2,
                                                      **kind}))
    optimizer = make_optimizer(model, spec["train"]["lr"], 0.0, torch.device("cpu"))
    return 1000 * step_seconds(model, spec["train"]["batch_size"], spec["train"]["seq_len"],
                               torch.device("cpu"), precision, optimizer, repeats=10,
                               warmup=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", help="repeatable (default small, medium)")
    parser.add_argument("--precision", action="append",
                        help="repeatable (default bf16 and fp32)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    rows = []
    for name in args.preset or ["small", "medium"]:
        spec = preset(name)
        for precision in args.precision or ["bf16", "fp32"]:
            times = {label: [] for label in KINDS}
            for _ in range(args.rounds):
                for label, kind in KINDS.items():
                    times[label].append(step_ms(spec, precision, kind))
            median = {label: statistics.median(values) for label, values in times.items()}
            base = median["neither"]
            m = spec["model"]
            rows.append([f"{name} (lstm {m['num_layers']}x{m['hidden_size']}, "
                         f"{spec['train']['batch_size']} x {spec['train']['seq_len']})",
                         precision, *(f"{median[label]:.1f} ms" for label in KINDS),
                         f"{median['locked'] / base - 1:+.1%}",
                         f"{median['weight drop'] / base - 1:+.1%}"])
    header = ["model", "precision", *(f"step, {label}" for label in KINDS),
              "locked vs neither", "weight drop vs neither"]
    publish("Weight drop's cost: a training step with and without", markdown_table(header, rows),
            not args.no_record)


if __name__ == "__main__":
    main()
