"""The `charlstm` command line: train, sample, score, novelty, inspect, info, plot, corpus,
serve and export.

The only part of charlstm that reads the environment, prints and picks exit codes; each
command goes through the library (charlstm.load and its LanguageModel, the trainer).
stdout carries only the product (generated text, scores, tables asked for); progress and
diagnostics go to stderr.

    app.py        the typer app, failures as one line and an exit code, shared options
    train.py      charlstm train
    setting_options.py  train's options for the settings, made from settings.OPTIONS
    sample.py     charlstm sample
    score.py      charlstm score
    novelty.py    charlstm novelty, and sample --novelty's report line
    inspect.py    charlstm inspect (inspect_view.py draws its views)
    info.py       charlstm info and charlstm plot
    corpus.py     charlstm corpus list | get | prepare
    serve.py      charlstm serve (the HTTP API and playground: charlstm.serve)
    export.py     charlstm export: safetensors, ONNX, a web page (charlstm.export)
    input.py      stdin, primes, lines, escapes, durations
    output.py     stdout and closed pipes, the info view, bars, formats
    processes.py  torchrun and signals
    progress.py   the training display (a TrainingCallback)
    completion.py tab completion: --show-completion, --install-completion (its own file only)

Modules that import torch (seconds, and some 200 MB) are imported inside the commands
that use them, so that `charlstm corpus ...`, --help and --version start at once.
"""

from .app import app, flag_for

# each command registers itself on `app`; this order is the order of --help
from . import train, sample, score, novelty, inspect, info, corpus, serve, export  # noqa: E402,F401  isort: skip

__all__ = ["app", "flag_for", "main"]


def main() -> None:
    app()
