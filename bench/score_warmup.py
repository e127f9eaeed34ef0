"""How long a warm-up whole-text scoring needs: parallel warmed streams against the exact
sequential score, on held-out real text with trained models.

    python bench/score_warmup.py [--run RUN=TEXT ...] [--chars 200000]
                                 [--warmup 0 16 ... 1024] [--streams 8 32 128]

Each RUN (a run folder or checkpoint) scores the last 10% of TEXT (its corpus's
validation split: text it was not trained on), or its first --chars characters: once
exactly (`score_stream(exact=True)`, one stream from the first character) and then as S
parallel streams each warmed on W characters, for every W and S given. Without --run,
models are trained first (`charlstm train` with fixed steps, so the models do not depend
on the machine's speed): a 1x512 LSTM on tinyshakespeare and on pystdlib, and a 2x128
GRU on tinyshakespeare.

The scores do not depend on the machine's load (no timing), so this can run anywhere.
Each stream start costs some bits over the exact reading, about the same for every
start, so the table gives both the difference in bits per character at each S and the
excess bits per stream start: a stream of L characters then differs by about
excess / L bits per character, and the scorer's shortest stream (streams.MIN_STREAM)
bounds the worst case.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import SHAKESPEARE, markdown_table, train  # noqa: E402

import charlstm  # noqa: E402
from charlstm.infer import streams  # noqa: E402
from charlstm.infer.scoring import LN2  # noqa: E402

TRAINED = [  # (label, corpus, train arguments) when no --run is given
    ("lstm 1x512, tinyshakespeare", str(SHAKESPEARE), ["--max-steps", "1500"]),
    ("lstm 1x512, pystdlib", "pystdlib", ["--max-steps", "1500"]),
    ("gru 2x128, tinyshakespeare", str(SHAKESPEARE),
     ["--preset", "tiny", "--model", "gru", "--num-layers", "2", "--max-steps", "1500"]),
]


def held_out(path: Path, chars: int) -> str:
    text = path.read_text(encoding="utf-8")
    return text[len(text) - len(text) // 10:][:chars]


def measure(lm: charlstm.LanguageModel, text: str, warmups: list[int],
            stream_counts: list[int]) -> tuple[float, list[list[str]]]:
    """The exact bits per character, and one row per W: the difference from it in bits
    per character, and the excess bits per stream start, at each S."""
    exact = lm.score_stream([text], exact=True)
    ids = np.asarray(lm.vocab.encode("".join(c for c in text if c in lm.vocab)),
                     dtype=np.int64)
    exact_nats, count = streams.text_loss(lm.model, [ids], num_streams=1,
                                          min_stream=len(ids) + 1)
    rows = []
    for warmup in warmups:
        row = [str(warmup)]
        for count_streams in stream_counts:
            nats, _ = streams.text_loss(lm.model, [ids], num_streams=count_streams,
                                        warmup=warmup, min_stream=1, window=len(ids) + 1)
            extra_bits = (nats - exact_nats) / LN2
            row.append(f"{extra_bits / len(text):+.5f} ({extra_bits / count_streams:+.2f})")
        rows.append(row)
    return exact["bits_per_char"], rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", metavar="RUN=TEXT",
                        help="a trained run and the corpus file it was trained on")
    parser.add_argument("--chars", type=int, default=200_000,
                        help="score at most this many held-out characters")
    parser.add_argument("--warmup", type=int, nargs="+",
                        default=[0, 16, 32, 64, 128, 256, 512, 1024])
    parser.add_argument("--streams", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    runs = [tuple(entry.split("=", 1)) for entry in args.run or []] or train_models()
    tables = []
    for run, text_path in runs:
        lm = charlstm.load(run, device="cpu")
        text = held_out(Path(text_path), args.chars)
        exact_bpc, rows = measure(lm, text, args.warmup, args.streams)
        c = lm.config
        header = ["warm-up W"] + [f"S = {s}: Δ bits/char (bits per start)"
                                  for s in args.streams]
        tables.append(f"{c.model} {c.num_layers}x{c.hidden_size} ({run}) on "
                      f"{len(text):,} held-out characters of {Path(text_path).name}: "
                      f"exact {exact_bpc:.4f} bits/char\n\n{markdown_table(header, rows)}")
        print(tables[-1] + "\n", file=sys.stderr)
    body = "\n\n".join(tables) + (
        f"\n\nThe scorer's defaults: W = {streams.SCORE_WARMUP}, up to "
        f"{streams.SCORE_STREAMS} streams of at least {streams.MIN_STREAM} characters.")
    publish("Whole-text scoring: warmed parallel streams against the exact score", body,
            not args.no_record)


def train_models() -> list[tuple[str, str]]:
    """Train the default models, each in a fresh folder; (run folder, corpus file) pairs
    (a built-in corpus is built into the folder's corpora/NAME.txt)."""
    pairs = []
    for label, corpus, extra in TRAINED:
        print(f"training {label} ...", file=sys.stderr)
        workdir = Path(tempfile.mkdtemp(prefix="charlstm-bench-"))
        train([corpus, "--sample-length", "0", *extra], workdir)
        built = workdir / "corpora" / f"{corpus}.txt"
        pairs.append((str(workdir / "run"), str(built if built.exists() else corpus)))
    return pairs

if __name__ == "__main__":
    main()
