"""Training settings compared at a fixed number of steps, so the machine's speed drops out.

    python bench/settings.py --variant 'LABEL=TRAIN ARGS' [--variant ...] [--steps 1450]
                             [--seed 1337 --seed 1] [--corpus PATH] [--preset small]
                             [--dropout 0]

A wall-clock comparison on a shared machine mixes each setting's effect with how fast
the machine happened to be (a 70 s run here has taken 850 to 2,100 steps). Here every
variant trains for the same steps on the same seeds, with the same dropout (0 unless
given), bf16 and one evaluation at the end over the whole validation split; such a run
gives the same loss however fast the machine is. The first variant is the reference the others are compared
with. Prints a table and appends it to bench/RESULTS.md with the exact command.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import SHAKESPEARE, markdown_table, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=ARGS",
                        help="repeatable; ARGS are charlstm train arguments (may be empty)")
    parser.add_argument("--steps", type=int, default=1450)
    parser.add_argument("--seed", type=int, action="append", help="repeatable (default 1337)")
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--dropout", default="0", help="the same for every variant")
    parser.add_argument("--label", default=None, help="the heading in RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    seeds = args.seed or [1337]
    fixed = [args.corpus, "--preset", args.preset, "--max-steps", str(args.steps),
             "--eval-every", str(args.steps), "--eval-chars", "0", "--dropout", args.dropout,
             "--precision", "bf16", "--sample-length", "0", "--quiet"]
    rows, reference = [], None
    for variant in args.variant:
        label, _, extra = variant.partition("=")
        losses = []
        for seed in seeds:
            run = train([*fixed, "--seed", str(seed), *shlex.split(extra)])
            if run.last["step"] != args.steps:
                sys.exit(f"{label}: stopped at step {run.last['step']}, not {args.steps}")
            losses.append(run.val_loss)
            print(f"{label}, seed {seed}: {run.val_loss:.4f} nats", file=sys.stderr)
        mean = statistics.fmean(losses)
        reference = mean if reference is None else reference
        rows.append([label, f"`{extra}`" if extra else "(none)",
                     *(f"{loss:.4f}" for loss in losses), f"{mean:.4f}",
                     f"{mean - reference:+.4f}" if rows else "reference"])
    header = ["variant", "train arguments", *(f"seed {s}" for s in seeds), "mean",
              "vs the first"]
    intro = (f"`{args.preset}` preset, {args.steps:,} steps, dropout {args.dropout}, bf16, on "
             f"{Path(args.corpus).name}; validation loss in nats over the whole split.\n\n")
    publish(args.label or f"Settings at a fixed {args.steps:,} steps",
            intro + markdown_table(header, rows), not args.no_record)


if __name__ == "__main__":
    main()
