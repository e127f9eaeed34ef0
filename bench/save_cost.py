"""What one checkpoint save costs, for each preset: the case for --save-every's default.

    python bench/save_cost.py [--saves 5] [--interval 5m]

Each preset's model is built on a small corpus of 96 distinct characters (a vocabulary a
little larger than tinyshakespeare's 65: the embedding and head are a small part of
any preset), trained for two steps (so AdamW holds its running moments, as in any later
save), then saved `--saves` times exactly as `--save-every` saves it between evaluations
(`training.milestones.save`: gathering the state, torch.save, a write with fsync and rename, and the
in-memory copy kept for rollbacks). The table gives last.pt's size, the median seconds
of a save, and that time as a share of `--interval` (the default of --save-every).
Prints the table and appends it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from charlstm.cli.input import parse_duration  # noqa: E402
from charlstm.training import milestones  # noqa: E402
from charlstm.training.presets import PRESETS  # noqa: E402
from charlstm.training.setup import make_trainer  # noqa: E402
from charlstm.settings import TrainConfig  # noqa: E402


def corpus(folder: Path) -> Path:
    """About 200 KB of text over 96 characters."""
    alphabet = string.printable[:95] + "é"
    path = folder / "mixed.txt"
    path.write_text("".join(alphabet[(i * 7919) % len(alphabet)] for i in range(200_000)),
                    encoding="utf-8")
    return path


def measure(preset: str, text: Path, folder: Path, saves: int) -> tuple[int, int, float]:
    """Parameters, bytes of last.pt, and the median seconds of one save."""
    trainer = make_trainer(str(text), out=folder / preset, preset=preset,
                           settings=dict(max_steps=2, eval_every=2, eval_chars=1000,
                                         sample_length=0, precision="fp32", device="cpu",
                                         save_every=0),
                           corpora_dir=folder / "corpora")
    trainer.fit()
    seconds = []
    for _ in range(saves):
        started = time.perf_counter()
        milestones.save(trainer, best=False)
        seconds.append(time.perf_counter() - started)
    size = (folder / preset / "last.pt").stat().st_size
    return trainer.model.num_parameters(), size, statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5, help="saves timed per preset")
    parser.add_argument("--interval", default=f"{TrainConfig().save_every:g}s",
                        help="the --save-every to compare with (default: its default)")
    parser.add_argument("--preset", action="append", help="only these (default: all)")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    interval = parse_duration(args.interval, "--interval")
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:  # the disk runs write to
        folder = Path(scratch)
        text = corpus(folder)
        for preset in args.preset or list(PRESETS):
            parameters, size, seconds = measure(preset, text, folder, args.saves)
            rows.append([preset, f"{parameters / 1e6:.2f}M", f"{size / 1e6:.1f} MB",
                         f"{seconds:.3f} s", f"{100 * seconds / interval:.3f}%"])
    table = markdown_table(["preset", "parameters", "last.pt", "one save (median)",
                            f"share of {args.interval}"], rows)
    publish("Checkpoint save cost per preset", table, not args.no_record)


if __name__ == "__main__":
    main()
