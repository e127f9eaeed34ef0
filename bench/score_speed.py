"""Characters per second of `charlstm score` on one file: the whole input as warmed
parallel streams (the default) against `--exact` and `--per-line`, in one run.

    python bench/score_speed.py [--size 1MB] [--file FILE] [--run RUN] [--no-exact]
                                [-- train arguments for the model, e.g. --hidden-size 64]

The file is tinyshakespeare repeated to --size (or --file as given). The model is the
default one (`charlstm train` with the default settings for one step: speed does not
depend on training), or --run. Each command is run as a user would, in a subprocess,
timed from launch to exit, one after another. Target (issue 15): the whole input at
>= 0.8x the characters per second of --per-line.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import SHAKESPEARE, markdown_table, train  # noqa: E402

TARGET = 0.8  # whole input against --per-line


def parse_size(text: str) -> int:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)B?", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 1MB, 200kB)")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def make_file(size: int, folder: Path) -> Path:
    """tinyshakespeare repeated (and cut on a line end) to about `size` characters."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    body = (text * (size // len(text) + 1))[:size]
    body = body[:body.rfind("\n") + 1] or body
    path = folder / f"shakespeare-{size}.txt"
    path.write_text(body, encoding="utf-8")
    return path


def time_score(run: Path, file: Path, *options: str) -> tuple[float, str]:
    """Seconds from launch to exit of `charlstm score RUN FILE OPTIONS`, and its output."""
    command = [sys.executable, "-m", "charlstm", "score", str(run), str(file), *options]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1MB"),
                        help="characters of tinyshakespeare repeated (default 1MB)")
    parser.add_argument("--file", type=Path, help="score this file instead")
    parser.add_argument("--run", type=Path, help="a trained run (default: train one step)")
    parser.add_argument("--no-exact", action="store_true", help="skip the slow --exact")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="charlstm train arguments for the model, after --")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="charlstm-bench-"))
    file = args.file or make_file(args.size, folder)
    run = args.run
    if run is None:
        extra = [a for a in args.train_args if a != "--"]
        train([str(SHAKESPEARE), "--max-steps", "1", "--eval-chars", "1000",
               "--sample-length", "0", *extra], folder)
        run = folder / "run"
    characters = len(file.read_text(encoding="utf-8"))
    modes = [("whole input (default)", []), ("--per-line", ["--per-line"])]
    if not args.no_exact:
        modes.append(("--exact", ["--exact"]))
    rows, speeds, scores = [], {}, {}
    for label, options in modes:
        seconds, out = time_score(run, file, *options)
        speeds[label] = characters / seconds
        if not options or options == ["--exact"]:
            scores[label] = float(out)
        print(f"{label}: {seconds:.1f} s", file=sys.stderr)
        rows.append([label, f"{seconds:.1f} s", f"{speeds[label]:,.0f}"])
    per_line = speeds["--per-line"]
    for row, (label, _) in zip(rows, modes):
        row.append(f"{speeds[label] / per_line:.2f}x")
        row.append(f"{scores[label]:.4f}" if label in scores else "")
    ratio = speeds["whole input (default)"] / per_line
    table = markdown_table(["charlstm score", "wall clock", "chars/s", "vs --per-line",
                            "bits/char"], rows)
    body = (f"{characters:,} characters ({file.name}), model {describe_model(run)}\n\n"
            f"{table}\n\nwhole input against --per-line: {ratio:.2f}x (target >= "
            f"{TARGET}x: {'met' if ratio >= TARGET else 'not met'})")
    publish("Whole-text scoring speed: streams against --per-line and --exact", body,
            not args.no_record)


def describe_model(run: Path) -> str:
    import charlstm

    c = charlstm.load(run, device="cpu").config
    return f"{c.model} {c.num_layers}x{c.hidden_size}"


if __name__ == "__main__":
    main()
