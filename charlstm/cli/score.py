"""`charlstm score`: how surprising a text is to a model, in bits per character."""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from .app import CHECKPOINT_ARGUMENT, DEVICE_OPTION, HELP, app
from .input import input_lines, open_score_input
from .output import StdoutWriter, score_json


@app.command(context_settings=HELP, epilog=(
    "A character the model never saw costs a fixed log2(0x110000) = 20.09 bits.\n\n"
    "Examples:\n\n"
    "  charlstm score RUN notes.txt                # the whole file: one number\n\n"
    "  charlstm score RUN -l < app.log | sort -rn | head   # the strangest lines\n\n"
    "  git log --format=%s | charlstm score RUN -l --json | jq .bits_per_char\n\n"
    "  charlstm score RUN - --json < chapter.txt  # characters, bits, unknown too"))
def score(
    checkpoint_path: Path = CHECKPOINT_ARGUMENT,
    file: Optional[str] = typer.Argument(None, metavar="[FILE|-]",
                                         help="The text to score; '-' or none reads stdin "
                                              "(none only when stdin is not a terminal).",
                                         show_default=False),
    per_line: bool = typer.Option(False, "--per-line", "-l",
                                  help="One 'bits_per_char<TAB>line' row per input line, "
                                       "in order, each line scored on its own; an empty "
                                       "line scores nan."),
    as_json: bool = typer.Option(False, "--json",
                                 help="JSON instead: one object per line with --per-line, "
                                      "else one for the whole input (text, characters, "
                                      "bits, bits_per_char, unknown)."),
    exact: bool = typer.Option(False, "--exact",
                               help="Read the whole input one character after another, "
                                    "as one stream (slower), instead of as parallel "
                                    "streams each warmed on the text before it (within "
                                    "about 0.005 bits per character). --per-line "
                                    "reads each line exactly anyway."),
    lossy: bool = typer.Option(False, "--lossy",
                               help="Replace invalid UTF-8 bytes with U+FFFD (an unknown "
                                    "character) instead of failing."),
    device: str = DEVICE_OPTION,
) -> None:
    """Score text with a trained model: bits per character, lower = more like its corpus."""
    from ..api import load
    from ..infer.scoring import UNKNOWN_CHAR_BITS
    from ..data.utf8 import decode_blocks

    started = time.monotonic()
    label, stream = open_score_input(file)
    out = StdoutWriter()
    try:
        lm = load(checkpoint_path, device)
        if per_line:
            count, characters, bits, unknown = 0, 0, 0.0, 0
            lines = input_lines(stream, label, lossy)
            for record in lm.score_lines(lines, before_waiting=out.flush):
                count += 1
                characters += record["characters"]
                bits += record["bits"]
                unknown += record["unknown"]
                out.write(score_json(record) + "\n" if as_json else
                          f"{record['bits_per_char']:.4f}\t{record['text']}\n")
        else:
            record = lm.score_stream(decode_blocks(stream, label, lossy), exact=exact)
            count, characters, bits, unknown = (None, record["characters"], record["bits"],
                                                record["unknown"])
            out.write(score_json(record) + "\n" if as_json else
                      f"{record['bits_per_char']:.4f}\n")
    finally:
        if file not in (None, "-"):
            stream.close()
    out.flush()
    if unknown:
        print(f"charlstm: warning: {unknown:,} character(s) the model never saw, scored "
              f"{UNKNOWN_CHAR_BITS:.2f} bits each", file=sys.stderr)
    logging.getLogger("charlstm").info(
        "%s%s characters, %.4f bits per character, %s unknown, in %.1f s",
        "" if count is None else f"{count:,} lines, ", f"{characters:,}",
        bits / characters if characters else math.nan, f"{unknown:,}",
        time.monotonic() - started)
