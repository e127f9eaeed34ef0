"""`charlstm novelty`: how much of a text is copied verbatim from a model's training text.

Also the one-line novelty report `sample --novelty` writes to stderr.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..infer.novelty import DEFAULT_MIN_LENGTH, check_min_length
from .app import CHECKPOINT_ARGUMENT, HELP, app, corpora_dir
from .input import open_score_input
from .output import StdoutWriter

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

    check_min_length(min_length)
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
