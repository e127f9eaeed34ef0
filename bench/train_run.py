"""Time one real `charlstm train` command from launch to exit and record its quality.

    python bench/train_run.py [--label TEXT] -- [charlstm train arguments]

Runs `python -m charlstm train ARGS` in a fresh working folder (so the corpus cache and the
run folder start empty, as for a new user), measures the wall-clock time from launch to
exit and the peak memory, reads the run's metrics.jsonl, prints a table and appends it to
bench/RESULTS.md with the exact command.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table, train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="train run", help="the heading in RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    run = train(train_args)
    best = min(r["val_loss"] for r in run.records if r["val_loss"] is not None)
    rows = [
        ["wall clock, launch to exit", f"{run.seconds:.1f} s"],
        ["peak RSS", f"{run.peak_mb:.0f} MB"],
        ["steps", f"{run.last['step']:,}"],
        ["training characters", f"{run.chars:,} ({run.last['epoch']:.2f} epochs)"],
        ["final validation loss", f"{run.val_loss:.4f} nats = {run.val_bpc:.3f} bits/char"],
        ["best validation loss", f"{best:.4f} nats = {best / math.log(2):.3f} bits/char"],
        ["precision", run.config["precision_note"]],
        ["model", run.model()],
    ]
    table = markdown_table(["measure", "value"], rows)
    shown = "charlstm train " + shlex.join(train_args)
    publish(args.label, table, not args.no_record, body=f"Trains: `{shown}`.\n\n{table}",
            command=f"python bench/train_run.py --label '{args.label}' -- "
                    f"{shlex.join(train_args)}")


if __name__ == "__main__":
    main()
