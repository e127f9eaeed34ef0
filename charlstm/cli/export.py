"""`charlstm export`: a trained model as safetensors, ONNX, or one web page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import HELP, app


@app.command("export", context_settings=HELP, epilog=(
    "Examples:\n\n"
    "  charlstm export checkpoints/pystdlib-lstm1x512 --format safetensors\n\n"
    "  charlstm export RUN --format onnx -o model.onnx\n\n"
    "  charlstm export RUN --format web --quantize int8 -o writer.html\n\n"
    "The layouts, and how to use each file: docs/export.md."))
def export_command(
    run: Path = typer.Argument(..., metavar="RUN",
                               help="A run folder (its best.pt, else last.pt), a .pt file, "
                                    "or a safetensors export."),
    fmt: str = typer.Option(..., "--format", "-f",
                            help="safetensors (weights + JSON, read back by charlstm), "
                                 "onnx (for onnxruntime; needs charlstm's [onnx] extra) "
                                 "or web (one HTML page that writes text offline)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where to write it (default: beside the "
                                               "checkpoint, e.g. RUN/best.onnx). An "
                                               "existing file is replaced only if it is "
                                               "a charlstm export of the same format."),
    quantize: Optional[str] = typer.Option(None, "--quantize", "-q",
                                           help="web only: store the weights as float16 "
                                                "or int8 (a smaller page, a slightly "
                                                "worse model)."),
) -> None:
    """Write a trained model as safetensors, ONNX or a self-contained web page; prints
    the path written."""
    from ..export.exporting import export

    print(export(run, fmt, output, quantize))
