"""Whole-text `score` against `train` on the same model and machine, in one run: the
characters per second of each for LSTM 1x64, 1x512 and 2x512, and the bits per character
of bf16 scoring against the exact fp32 score on held-out text.

    python bench/score_vs_train.py [--shape 1x64 --shape 1x512 --shape 2x512]
        [--train-seconds 60] [--score-seconds 20] [--heldout-chars 20000]
        [--quick] [--no-record]

For each shape, `charlstm.train` trains on the first 90% of tinyshakespeare for
--train-seconds with its preset's settings (`small` with that hidden size; `medium` for
2x512) and precision auto, timed between its first and last progress reports (set-up and
the final evaluation left out): training's characters per second. The trained model is
then loaded afresh and scores, as `charlstm score FILE` does (`score_stream`, precision
auto), tinyshakespeare repeated to about 3 x that training speed x --score-seconds
characters (at least AUTO_MIN_CHARS, so that auto measures), timed from the call to its
return with auto's measurement included: scoring's characters per second. Last, the
--heldout-chars last characters of the corpus, which training never saw, are scored
exactly (--exact: fp32, one stream) and as parallel streams in fp32 and in bf16.
Target (issue 30): whole-text score at >= 2x train's characters per second, each shape.
`--quick` only checks that it runs (1x64 unless --shape says, seconds of training, the
smallest score that auto measures for) and records nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import SHAKESPEARE, markdown_table  # noqa: E402

import charlstm  # noqa: E402
from charlstm.infer import precision as score_precision  # noqa: E402
from charlstm.training.callbacks import Quiet  # noqa: E402

TARGET = 2.0  # whole-text score's chars/s against train's, on the same model
BLOCK = 1 << 16  # characters per piece handed to score_stream, as the CLI reads a file


class Clock(Quiet):
    """Times training between its first and last progress report."""

    def __init__(self):
        self.marks: list[tuple[float, int]] = []
        self.reported = 0.0  # the last report's own speed, chars/s

    def on_step(self, stats) -> None:
        self.marks.append((time.perf_counter(), stats.step))
        self.reported = stats.chars_per_sec

    def speed(self, step_chars: int) -> float:
        """chars/s between the first and the last report (the last report's own speed
        if there was only one)."""
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (s1 - s0) * step_chars / (t1 - t0) if s1 > s0 else self.reported


def shape_settings(shape: str) -> tuple[str | None, dict]:
    layers, hidden = (int(n) for n in shape.lower().split("x"))
    preset = "medium" if (layers, hidden) == (2, 512) else None
    return preset, {"num_layers": layers, "hidden_size": hidden}


def train_speed(shape: str, corpus: Path, seconds: float, folder: Path):
    """Train one model of `shape` for `seconds`: (its run folder, chars/s, precision)."""
    preset, sizes = shape_settings(shape)
    clock = Clock()
    result = charlstm.train(str(corpus), out=folder / f"run-{shape}", preset=preset,
                            callback=clock, corpora_dir=folder / "corpora",
                            checkpoints_dir=folder, time_limit=seconds,
                            eval_every=10 ** 9, eval_chars=20_000, sample_length=0, **sizes)
    config = json.loads((result.run_dir / "config.json").read_text())
    step_chars = config["train"]["batch_size"] * config["train"]["seq_len"]
    return result.run_dir, clock.speed(step_chars), config.get("precision", "?")


def score_speed(run: Path, text: str) -> tuple[float, str]:
    """Whole-text score of `text` by a freshly loaded model, as `charlstm score` reads a
    file: chars/s (auto's measurement included) and the precision auto chose."""
    score_precision.forget_choices()
    lm = charlstm.load(run, device="cpu")
    pieces = (text[i:i + BLOCK] for i in range(0, len(text), BLOCK))
    started = time.perf_counter()
    lm.score_stream(pieces)
    seconds = time.perf_counter() - started
    return len(text) / seconds, score_precision.measured_note(lm.model) or "fp32 (short)"


def held_out_bits(run: Path, text: str) -> dict[str, float]:
    lm = charlstm.load(run, device="cpu")
    return {"exact": lm.score(text, exact=True)["bits_per_char"],
            "fp32": lm.score(text, precision="fp32")["bits_per_char"],
            "bf16": lm.score(text, precision="bf16")["bits_per_char"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", help="LxH, repeatable "
                        "(default 1x64, 1x512, 2x512)")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--score-seconds", type=float, default=20.0,
                        help="about how long each score should take (sets its text's size)")
    parser.add_argument("--heldout-chars", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="only check that it runs")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    if args.quick:
        args.train_seconds, args.score_seconds, args.heldout_chars = 3.0, 0.0, 2_000
    shapes = args.shape or (["1x64"] if args.quick else ["1x64", "1x512", "2x512"])
    folder = Path(tempfile.mkdtemp(prefix="charlstm-bench-score-train-"))
    full = SHAKESPEARE.read_text(encoding="utf-8")
    split = int(len(full) * 0.9)
    corpus = folder / "shakespeare-train.txt"
    corpus.write_text(full[:split], encoding="utf-8")
    held_out = full[split:][-args.heldout_chars:]
    rows, ratios = [], {}
    for shape in shapes:
        run, train_cps, train_precision = train_speed(shape, corpus, args.train_seconds,
                                                      folder)
        size = max(score_precision.AUTO_MIN_CHARS + 1,
                   int(3 * train_cps * args.score_seconds))
        text = (full * (size // len(full) + 1))[:size]
        score_cps, chosen = score_speed(run, text)
        bits = held_out_bits(run, held_out)
        ratios[shape] = score_cps / train_cps
        print(f"{shape}: train {train_cps:,.0f} chars/s, score {score_cps:,.0f} chars/s "
              f"({ratios[shape]:.2f}x)", file=sys.stderr)
        rows.append([f"lstm {shape}", f"{train_cps:,.0f} ({train_precision})",
                     f"{score_cps:,.0f} ({chosen})", f"{len(text):,}",
                     f"{ratios[shape]:.2f}x", "met" if ratios[shape] >= TARGET else "not met",
                     f"{bits['exact']:.4f}", f"{bits['fp32'] - bits['exact']:+.4f}",
                     f"{bits['bf16'] - bits['exact']:+.4f}"])
    table = markdown_table(["model", "train chars/s (precision)",
                            "score chars/s (auto's choice)", "scored chars", "score/train",
                            f"target >= {TARGET:g}x", "held-out exact bits/char",
                            "fp32 streams - exact", "bf16 streams - exact"], rows)
    body = (f"train: `charlstm.train` on the first 90% of tinyshakespeare for "
            f"{args.train_seconds:g} s per model, preset settings, precision auto, timed "
            f"between its first and last progress reports. score: whole-text `score_stream` "
            f"(precision auto, its measurement included) of tinyshakespeare repeated, by the "
            f"model just trained, loaded afresh. Held-out: the last {len(held_out):,} "
            f"characters, never trained on, scored exactly (fp32, one stream) and as "
            f"parallel streams in fp32 and bf16. torch threads: {torch.get_num_threads()}."
            f"\n\n{table}")
    publish("Whole-text score against train: characters per second, bf16 against exact",
            body, not args.no_record and not args.quick)


if __name__ == "__main__":
    main()
