"""`charlstm novelty`: how much of a text is copied verbatim from a model's training text.

Also the one-line novelty report `sample --novelty` writes to stderr, and the wording of
the library's generation-option errors as flags.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..infer.novelty import DEFAULT_MIN_LENGTH
from .app import CHECKPOINT_ARGUMENT, HELP, app, corpora_dir
from .input import open_score_input
from .output import StdoutWriter

# the library's names for generation settings, as the flags that set them
_FLAGS = [("repetition penalty", "--repetition-penalty"),
          ("frequency penalty", "--frequency-penalty"),
          ("presence penalty", "--presence-penalty"), ("the penalty window", "--penalty-window"),
          ("no-repeat", "--no-repeat"), ("max-copy", "--max-copy"), ("beam", "--beam"),
          ("temperature", "--temperature"), ("top-k", "--top-k"), ("top-p", "--top-p")]


def flag_words(message: str) -> str:
    """A generation-option error of the library with its settings named as flags."""
    for words, flag in _FLAGS:
        message = re.sub(rf"(?<![-\w]){re.escape(words)}\b(?! search)", flag, message)
    return message.replace("the number of samples", "--num-samples")


def novelty_line(report: dict) -> str:
    """A report in a line: the longest copy and where from, and the copied share."""
    longest = report["longest"]
    if longest is None:
        where = "nothing copied"
    else:
        where = (f"longest copy {longest['length']:,} characters, from "
                 f"{longest['file']}:{longest['line']}:{longest['column']}")
    return (f"{where}; {report['copied_share']:.1%} of {report['characters']:,} characters "
            f"in copies of {report['min_length']}+")


def report_novelty(report: dict) -> None:
    print(f"charlstm: novelty: {novelty_line(report)}", file=sys.stderr, flush=True)


@app.command(context_settings=HELP, epilog=(
    "The training text is found from the checkpoint's record of its corpus; its index is "
    "built on first use and cached beside the corpus cache.\n\n"
    "Examples:\n\n"
    "  charlstm sample RUN -n 2000 > out.txt; charlstm novelty RUN out.txt\n\n"
    "  charlstm novelty RUN - --json < out.txt | jq .longest"))
def novelty(
    checkpoint_path: Path = CHECKPOINT_ARGUMENT,
    file: Optional[str] = typer.Argument(None, metavar="[FILE|-]",
                                         help="The text to check; '-' or none reads stdin "
                                              "(none only when stdin is not a terminal).",
                                         show_default=False),
    min_length: int = typer.Option(DEFAULT_MIN_LENGTH, "--min", "--novelty-min",
                                   help="The length from which a copied stretch counts "
                                        "towards the copied share."),
    as_json: bool = typer.Option(False, "--json",
                                 help="One JSON object: characters, longest (length, "
                                      "start, text, file, line, column), min_length, "
                                      "copied_chars, copied_share."),
) -> None:
    """Find copies of the training text in a text: the longest, and the share copied."""
    from ..api import load

    if min_length < 1:
        raise UsageError(f"--min must be at least 1, not {min_length}")
    label, stream = open_score_input(file)
    try:
        data = stream.read()
    finally:
        if file not in (None, "-"):
            stream.close()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{label} is not valid UTF-8 (byte offset {exc.start})") from None
    lm = load(checkpoint_path, "cpu", corpora_dir())
    report = lm.novelty(text, min_length)
    out = StdoutWriter()
    out.write(json.dumps(report) + "\n" if as_json else novelty_line(report) + "\n")
    out.flush()
