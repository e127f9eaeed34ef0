"""Time one real `charlstm train` command from launch to exit and record its quality.

    python bench/train_run.py [--workdir DIR] -- [charlstm train arguments]

Runs `python -m charlstm train ARGS` in a fresh working folder (so the corpus cache and the
run folder start empty, as for a new user), measures the wall-clock time from launch to
exit and the peak memory, reads the run's metrics.jsonl, prints a table and appends it to
bench/RESULTS.md with the exact command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import append  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to run (default: a new temp dir)")
    parser.add_argument("--label", default="train run", help="the heading in RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    train_args = [a for a in args.train_args if a != "--"]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="charlstm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "charlstm", "train", *train_args, "--out", "run"]
    env = {**os.environ, "CHARLSTM_CORPORA": str(workdir / "corpora")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        sys.exit(f"training failed ({done.returncode}):\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").open()]
    last = records[-1]
    best = min(r["val_loss"] for r in records if r["val_loss"] is not None)
    config = json.loads((workdir / "run" / "config.json").read_text())
    chars = last["step"] * config["train"]["batch_size"] * config["train"]["seq_len"]
    rows = [
        ("wall clock, launch to exit", f"{seconds:.1f} s"),
        ("peak RSS", f"{peak_mb:.0f} MB"),
        ("steps", f"{last['step']:,}"),
        ("training characters", f"{chars:,} ({last['epoch']:.2f} epochs)"),
        ("final validation loss", f"{last['val_loss']:.4f} nats = "
                                  f"{last['val_loss'] / math.log(2):.3f} bits/char"),
        ("best validation loss", f"{best:.4f} nats = {best / math.log(2):.3f} bits/char"),
        ("precision", config["precision_note"]),
        ("model", f"{config['model']['model']} {config['model']['num_layers']}x"
                  f"{config['model']['hidden_size']}, {config['parameters']:,} parameters"),
    ]
    table = "| measure | value |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    if not args.no_record:
        shown = "charlstm train " + shlex.join(train_args)
        append(args.label, f"python bench/train_run.py --label '{args.label}' -- "
                           f"{shlex.join(train_args)}", f"Trains: `{shown}`.\n\n{table}")


if __name__ == "__main__":
    main()
