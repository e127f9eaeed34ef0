"""`charlstm score`: how surprising a text is to a model, in bits per character."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from ..errors import UsageError
from .app import CHECKPOINT_ARGUMENT, DEVICE_OPTION, HELP, app
from .input import input_lines, open_score_input
from .output import StdoutWriter, score_json

MAX_TOP = 20  # alternatives per character at most
ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"})


@app.command(context_settings=HELP, epilog=(
    "A character the model never saw costs a fixed log2(0x110000) = 20.09 bits.\n\n"
    "Examples:\n\n"
    "  charlstm score RUN notes.txt                # the whole file: one number\n\n"
    "  charlstm score RUN -l < app.log | sort -rn | head   # the strangest lines\n\n"
    "  git log --format=%s | charlstm score RUN -l --json | jq .bits_per_char\n\n"
    "  charlstm score RUN - --json < chapter.txt  # characters, bits, unknown too\n\n"
    "  charlstm score RUN notes.txt --per-char --top 3 | sort -t$'\\t' -k2 -rn | head"))
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
                                    "about 0.005 bits per character), in fp32. "
                                    "--per-line reads each line exactly anyway."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto, fp32, bf16 (or fp16 on CUDA): the "
                                       "arithmetic of the passes through the model. auto "
                                       "takes bf16 where it is measured faster here, and "
                                       "one thread or all (measured once, about as long "
                                       "as scoring 130,000 characters), except for a "
                                       "whole input under 1M characters; fp32 gives the "
                                       "same scores on any machine."),
    per_char: bool = typer.Option(False, "--per-char", "-c",
                                  help="One 'char<TAB>bits' row per character of the "
                                       "input, read exactly (\\n, \\t and \\\\ escaped); "
                                       "with --json one record each (char, bits, top)."),
    top: int = typer.Option(0, "--top",
                            help="With --per-char: also the K likeliest characters at each "
                                 "place, with their probabilities."),
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
    if per_char and per_line:
        raise UsageError("--per-char scores one text; drop --per-line")
    if top and not per_char:
        raise UsageError("--top lists alternatives per character; add --per-char")
    if not 0 <= top <= MAX_TOP:
        raise UsageError(f"--top must be from 0 to {MAX_TOP}, not {top}")
    if per_char and precision not in ("auto", "fp32"):
        raise UsageError(f"--per-char reads exactly, in fp32; drop --precision {precision}")
    label, stream = open_score_input(file)
    out = StdoutWriter()
    try:
        lm = load(checkpoint_path, device)
        if per_char:
            text = "".join(decode_blocks(stream, label, lossy))
            count, characters, bits, unknown = _per_char(lm, text, top, as_json, out)
        elif per_line:
            count, characters, bits, unknown = 0, 0, 0.0, 0
            lines = input_lines(stream, label, lossy)
            for record in lm.score_lines(lines, before_waiting=out.flush,
                                         precision=precision):
                count += 1
                characters += record["characters"]
                bits += record["bits"]
                unknown += record["unknown"]
                out.write(score_json(record) + "\n" if as_json else
                          f"{record['bits_per_char']:.4f}\t{record['text']}\n")
        else:
            record = lm.score_stream(decode_blocks(stream, label, lossy), exact=exact,
                                     precision=precision)
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


def _per_char(lm, text: str, top: int, as_json: bool, out: StdoutWriter):
    """Write a row (or a JSON record) per character; the totals, as score's."""
    found = lm.char_log_probs(text, top)
    bits = found.bits
    probs = np.exp(found.top_nats)
    for i, char in enumerate(text):
        alternatives = list(zip(found.top_chars[i], probs[i].tolist()))
        if as_json:
            out.write(json.dumps({"char": char, "bits": float(bits[i]), "top": [
                {"char": c, "prob": p} for c, p in alternatives]}) + "\n")
        else:
            out.write("\t".join([char.translate(ESCAPES), f"{bits[i]:.4f}", *(
                f"{c.translate(ESCAPES)}={p:.4f}" for c, p in alternatives)]) + "\n")
    unknown = sum(text.count(c) for c in set(text) if c not in lm.vocab)
    return None, len(text), float(bits.sum()), unknown
