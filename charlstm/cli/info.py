"""`charlstm info` and `charlstm plot`: what a checkpoint holds, and its loss curves."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .app import HELP, app
from .output import print_info, write_stdout_bytes


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm info checkpoints/pystdlib-lstm1x512\n\n"
    "  charlstm info RUN/last.pt --json | jq .best_val_loss"))
def info(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT",
                                           help="A .pt file or a run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
) -> None:
    """Show a checkpoint's model, vocabulary, corpus and training history."""
    from .. import checkpoint

    path = checkpoint.find(checkpoint_path)
    summary = checkpoint.read(path).summary(path)
    if as_json:
        print(json.dumps(summary))
        return
    print_info(summary)


# ----------------------------------------------------------------------------- plot


@app.command("plot", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm plot checkpoints/pystdlib-lstm1x512\n\n"
    "  charlstm plot RUN/best.pt -o curve.png\n\n"
    "  charlstm plot RUN -o - | display     # the PNG on stdout"))
def plot_command(
    run: Path = typer.Argument(..., metavar="RUN", help="A run folder or a .pt file."),
    output: Optional[str] = typer.Option(None, "--output", "-o",
                                         help="Where to write the PNG; '-' for stdout "
                                              "(default: RUN/loss.png). A file already "
                                              "there is replaced only if it is a plot "
                                              "charlstm wrote."),
) -> None:
    """Plot training and validation loss (bits/char) against step as a PNG.

    Needs matplotlib: pip install matplotlib (charlstm's \\[plot] extra).
    """
    from .. import checkpoint
    from ..training import plot

    path = checkpoint.find(run)
    record = checkpoint.read(path)
    title = plot.title(path.parent.name, record.model_config,
                       (record.corpus or {}).get("name"), record.step or 0)
    if output == "-":
        buffer = io.BytesIO()
        plot.plot_history(record.history, buffer, title)
        write_stdout_bytes(buffer.getvalue())
        return
    target = Path(output) if output else path.parent / plot.PLOT_NAME
    if target.is_symlink() or (target.exists() and not plot.is_own(target)):
        raise UsageError(f"{target} exists and charlstm did not write it; choose another "
                         "--output, or write to stdout (-o -) and redirect that")
    plot.save(record.history, target, title)
    print(target)
