"""What `charlstm inspect` finds inside trained models, and how fast: for the default
`pystdlib` run and a tinyshakespeare run, `inspect --find` on held-out text (each text
property's best units and their correlations) and `inspect --gates` (the gate saturation
table); then `inspect --find` against `score` on 1 MB of text with the same model.

    python bench/inspect_units.py [--pystdlib-run RUN] [--shakespeare-run RUN] [--budget 10m]
                            [--find-chars 200000] [--size 1MB] [--quick] [--no-record]

Without a run given, each model is trained here with `charlstm train CORPUS --time
BUDGET` (the default settings otherwise). The held-out text is the end of each corpus
(its validation split), at most --find-chars characters. The speed rows time each
command as a user runs it, in a subprocess, from launch to exit; target (issue 29):
`inspect --find` at no less than a third of `score`'s characters per second.
`--quick` only checks that the script runs: tiny models, small texts, nothing to quote.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import publish  # noqa: E402
from runner import SHAKESPEARE, markdown_table, train  # noqa: E402
from score_speed import make_file, parse_size  # noqa: E402

TARGET = 1 / 3  # inspect --find against score, characters per second
QUICK_TRAIN = ["--max-steps", "30", "--hidden-size", "32", "--embed-size", "8",
               "--batch-size", "8", "--seq-len", "32", "--eval-chars", "2000",
               "--sample-length", "0"]


def charlstm(*args: str) -> tuple[float, str]:
    """Seconds from launch to exit of `python -m charlstm ARGS`, and its stdout."""
    command = [sys.executable, "-m", "charlstm", *args]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return seconds, result.stdout


def model_run(given: Path | None, corpus: str, folder: Path, args) -> Path:
    """The run given, or one trained here on `corpus`."""
    if given is not None:
        return given
    budget = QUICK_TRAIN if args.quick else ["--time", args.budget]
    return train([corpus, *budget], folder).workdir / "run"


def held_out(corpus: Path, characters: int, folder: Path, name: str) -> Path:
    """The last `characters` of a corpus's last 10% (its validation split), on a line
    start, as a file."""
    text = corpus.read_text(encoding="utf-8")
    tail = text[-min(characters, len(text) // 10):]
    tail = tail[tail.find("\n") + 1:] or tail
    path = folder / f"{name}-held-out.txt"
    path.write_text(tail, encoding="utf-8")
    return path


def find_rows(label: str, run: Path, text: Path) -> list[list[str]]:
    """One row per property: the best unit and its correlation, the runner-up's."""
    _, out = charlstm("inspect", str(run), str(text), "--find", "--json", "--best", "2")
    rows = []
    for record in map(json.loads, out.splitlines()):
        units = record["units"]
        shown = [f"{u['layer']}:{u['unit']} {u['state']} ({u['correlation']:+.3f})"
                 for u in units]
        rows.append([label, record["property"], shown[0] if shown else "constant",
                     shown[1] if len(shown) > 1 else ""])
    return rows


def gate_rows(label: str, run: Path, text: Path) -> list[list[str]]:
    _, out = charlstm("inspect", str(run), str(text), "--gates", "--json")
    return [[label, str(r["layer"]), r["gate"], f"{r['left']:.1%}", f"{r['right']:.1%}",
             f"{r['mostly_left']} / {r['mostly_right']} of {r['units']}"]
            for r in map(json.loads, out.splitlines())]


def speed_rows(run: Path, file: Path) -> tuple[list[list[str]], float]:
    characters = len(file.read_text(encoding="utf-8"))
    rows, speeds = [], {}
    for label, args in (("score", ["score", str(run), str(file)]),
                        ("inspect --find", ["inspect", str(run), str(file), "--find",
                                            "--json"])):
        seconds, _ = charlstm(*args)
        speeds[label] = characters / seconds
        print(f"{label}: {seconds:.1f} s", file=sys.stderr)
        rows.append([label, f"{seconds:.1f} s", f"{speeds[label]:,.0f}"])
    ratio = speeds["inspect --find"] / speeds["score"]
    return rows, ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pystdlib-run", type=Path, help="a trained pystdlib run")
    parser.add_argument("--shakespeare-run", type=Path, help="a trained tinyshakespeare run")
    parser.add_argument("--budget", default="10m", help="training time of each run made here")
    parser.add_argument("--find-chars", type=int, default=200_000,
                        help="characters of held-out text for --find and --gates")
    parser.add_argument("--size", type=parse_size, default=parse_size("1MB"),
                        help="characters of the speed test's text (default 1MB)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and texts: only checks that the script runs")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    if args.quick:
        args.find_chars, args.size = min(args.find_chars, 5000), min(args.size, 20_000)
    folder = Path(tempfile.mkdtemp(prefix="charlstm-bench-inspect-"))
    from charlstm.data.corpus import resolve

    pystdlib = resolve("pystdlib", folder / "corpora")
    runs = {"pystdlib": (model_run(args.pystdlib_run, "pystdlib", folder / "pystdlib", args),
                         pystdlib),
            "tinyshakespeare": (model_run(args.shakespeare_run, str(SHAKESPEARE),
                                          folder / "shakespeare", args), SHAKESPEARE)}
    found, gates = [], []
    for label, (run, corpus) in runs.items():
        text = held_out(corpus, args.find_chars, folder, label)
        found += find_rows(label, run, text)
        gates += gate_rows(label, run, text)
    speed, ratio = speed_rows(runs["tinyshakespeare"][0], make_file(args.size, folder))
    body = "\n\n".join([
        "Best units per property on held-out text (layer:unit state (correlation)), "
        f"at most {args.find_chars:,} characters:",
        markdown_table(["run", "property", "best unit", "runner-up"], found),
        "Gate saturation (mean share of steps below 0.1 / above 0.9; units mostly so):",
        markdown_table(["run", "layer", "gate", "left", "right", "units mostly left / right"],
                       gates),
        f"Speed on {args.size:,} characters of tinyshakespeare, the tinyshakespeare model:",
        markdown_table(["command", "wall clock", "chars/s"], speed),
        f"inspect --find against score: {ratio:.2f}x (target >= 0.33x: "
        f"{'met' if ratio >= TARGET else 'not met'})"])
    publish("inspect: units that track the text, gate saturation, speed", body,
            not args.no_record and not args.quick, body=body)


if __name__ == "__main__":
    main()
