"""Model quality at a fixed wall-clock budget: `charlstm train CORPUS --time BUDGET`.

    python bench/quality.py [--budget 70s] [--corpus tinyshakespeare=PATH] [--corpus pystdlib]
                            [--target 1.50] [-- extra train arguments]

Each corpus is trained from scratch in a fresh folder, timed from launch to exit; the
validation loss is the final evaluation over the whole validation split (the last 10%).
Prints a table and appends it to bench/RESULTS.md with the exact command.
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
    parser.add_argument("--budget", default="70s", help="the --time given to charlstm train")
    parser.add_argument("--corpus", action="append", metavar="[NAME=]PATH_OR_NAME",
                        help="repeatable (default: tinyshakespeare when present)")
    parser.add_argument("--target", type=float, help="validation loss to meet, in nats")
    parser.add_argument("--label", default=None, help="the heading in RESULTS.md")
    parser.add_argument("--samples", action="store_true",
                        help="also record the milestone samples of each run")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="more charlstm train arguments, after --")
    args = parser.parse_args()
    extra = [a for a in args.train_args if a != "--"]
    corpora = args.corpus or [f"tinyshakespeare={SHAKESPEARE}"]
    rows, samples = [], []
    for entry in corpora:
        name, _, source = entry.rpartition("=")
        name = name or Path(source).stem
        run = train([source, "--time", args.budget, *extra])
        met = "" if args.target is None else (" (met)" if run.val_loss <= args.target
                                              else " (not met)")
        rows.append([name, f"{run.seconds:.1f} s", f"{run.val_loss:.4f}{met}",
                     f"{run.val_bpc:.3f}", run.model(),
                     f"{run.last['step']:,} steps, {run.chars / 1e6:.1f}M chars "
                     f"({run.last['epoch']:.1f} epochs)", run.config["precision"],
                     run.config.get("plan") or "explicit settings"])
        print(f"{name}: {rows[-1][2]} nats after {rows[-1][1]}", file=sys.stderr)
        for heading, text in run.samples() if args.samples else []:
            samples.append(f"{name}, {heading}:\n\n```text\n{text}\n```")
    header = ["corpus", "wall clock", "val loss (nats)", "val bits/char", "model",
              "trained on", "precision", "why this model"]
    table = "\n\n".join([markdown_table(header, rows), *samples])
    target = f", target {args.target} nats" if args.target is not None else ""
    publish(args.label or f"Quality at a {args.budget} budget{target}", table,
            not args.no_record)


if __name__ == "__main__":
    main()
