"""fp32 against bf16 autocast at equal wall-clock: which gives the better model?

    python bench/precision.py [--budget 70s] [--corpus PATH] [-- extra train arguments]

Trains the same command twice, `--precision fp32` and `--precision bf16`, each from
launch to exit within the same `--time`, and reports speed and final validation loss.
Precision auto may choose bf16 only where it wins this comparison. Prints a table and
appends it to bench/RESULTS.md with the exact command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import SHAKESPEARE, markdown_table, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="70s")
    parser.add_argument("--corpus", default=str(SHAKESPEARE))
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="more charlstm train arguments, after --")
    args = parser.parse_args()
    extra = [a for a in args.train_args if a != "--"]
    rows = []
    for precision in ("fp32", "bf16"):
        run = train([args.corpus, "--time", args.budget, "--precision", precision, *extra])
        speed = run.chars / max(run.last["elapsed"], 1e-9)
        rows.append([precision, run.model(), f"{run.last['step']:,}",
                     f"{speed / 1000:.1f}k", f"{run.seconds:.1f} s",
                     f"{run.val_loss:.4f}", f"{run.val_bpc:.3f}"])
        print(f"{precision}: {run.val_loss:.4f} nats", file=sys.stderr)
    table = markdown_table(["precision", "model", "steps", "chars/s (whole run)",
                            "wall clock", "val loss (nats)", "val bits/char"], rows)
    publish(f"fp32 vs bf16 at equal wall-clock ({args.budget})", table, not args.no_record)


if __name__ == "__main__":
    main()
