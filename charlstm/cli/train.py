"""`charlstm train`: train a model on a corpus, with progress on stderr."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..training.presets import DEFAULT_PRESET, PRESETS
from ..settings import FINE_TUNE_LR_RATIO, FINE_TUNE_WARMUP_STEPS
from .app import (CKPT, CORPUS_HELP, DATA, GLOB_HELP, HELP, IMPORTED_AT, MODEL, OUTPUT, app,
                  checkpoints_dir, corpora_dir)
from .input import stdin
from .setting_options import read_setting, with_setting_options
from .output import JsonRecords, byte_progress, format_loss
from .processes import EXIT_INTERRUPTED, stopping_on_signals, torchrun_aware


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n"
    "  charlstm train                        # built-in corpus, default 'small' model\n\n"
    "  charlstm train my.txt --time 10m      # your text, a 10-minute budget\n\n"
    "  charlstm train my.txt --preset medium --dropout 0.3\n\n"
    "  charlstm train my.txt --out checkpoints/mine --resume   # start or continue a run\n\n"
    "  charlstm train play.txt --init-from checkpoints/shakespeare   # fine-tune\n\n"
    "  cat *.md | charlstm train - --max-steps 500\n\n"
    "  charlstm train notes/ src/*.py --glob '*.md'   # files and folders as one corpus\n\n"
    "  charlstm train my.txt --json | jq -r '[.step, .val_bpc] | @tsv'\n\n"
    "  torchrun --nproc_per_node=4 -m charlstm train my.txt -b 128   # 4 GPUs, one model"))
@torchrun_aware
@with_setting_options
def train(
    corpus: Optional[List[str]] = typer.Argument(
        None, help=CORPUS_HELP[:-1] + " (default: pystdlib, built from Python's own "
                   "sources).", show_default=False),
    globs: List[str] = typer.Option([], "--glob", rich_help_panel=DATA, help=GLOB_HELP,
                                    metavar="PATTERN", show_default=False),
    lossy: bool = typer.Option(False, "--lossy", rich_help_panel=DATA,
                               help="Replace invalid UTF-8 bytes with U+FFFD instead of "
                                    "failing."),
    preset: Optional[str] = typer.Option(None, "--preset", rich_help_panel=MODEL,
                                         help=f"Model and schedule: {', '.join(PRESETS)} "
                                              f"(default: {DEFAULT_PRESET}, or with --time "
                                              "the best for the budget on this machine)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", rich_help_panel=CKPT,
                                       help="Run folder (default: checkpoints/CORPUS-MODEL)"),
    resume: bool = typer.Option(False, "--resume", rich_help_panel=CKPT,
                                help="Continue the run in --out (or the latest default-named "
                                     "run) from its last.pt; with none saved yet, start it. "
                                     "The same command line then serves every restart."),
    init_from: Optional[Path] = typer.Option(
        None, "--init-from", rich_help_panel=CKPT, metavar="RUN_OR_CKPT",
        help="Fine-tune: start a new run from this trained model (a .pt or a run folder: "
             "its best.pt), keeping its architecture; new characters are added to its "
             f"vocabulary (default --lr: {FINE_TUNE_LR_RATIO:g} x the parent's, "
             f"--warmup-steps {FINE_TUNE_WARMUP_STEPS})"),
    quiet: bool = typer.Option(False, "--quiet", "-q", rich_help_panel=OUTPUT,
                               help="Print only the start, each evaluation and the end: "
                                    "no progress bar, step lines or samples."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT,
                                 help="Also write each evaluation's metrics to stdout as one "
                                      "JSON line (for jq); progress stays on stderr."),
    **given,
) -> int:
    """Train a model on a corpus, showing progress and samples on stderr."""
    settings = {name: read_setting(name, value) for name, value in given.items()}
    from ..training.clock import launched_at
    from .progress import TrainingDisplay
    from ..training.setup import make_trainer

    display = TrainingDisplay(quiet=quiet, records=JsonRecords() if as_json else None)
    spec = corpus[0] if corpus and len(corpus) == 1 else corpus or None
    trainer = make_trainer(
        spec, globs=globs, out=out, resume=resume, preset=preset, settings=settings,
        callback=display,
        corpora_dir=corpora_dir(), checkpoints_dir=checkpoints_dir(), lossy=lossy,
        stdin=stdin() if spec == "-" else None, launched_at=launched_at(IMPORTED_AT),
        corpus_progress=byte_progress("encoding corpus"), init_from=init_from)
    main = trainer.is_main  # with several processes (torchrun) only the main one reports
    with stopping_on_signals(trainer, display, main) as received:
        result = trainer.fit()
    run = result.run_dir
    if not main:  # the main process reports and plots; the others end with its exit code
        return (EXIT_INTERRUPTED.get(received[0] if received else signal.SIGINT, 130)
                if result.reason == "interrupted" else 0)
    if result.reason == "already finished":
        print(f"charlstm: {run} already finished at step {result.step:,}; raise --max-steps, "
              "--epochs or --time to train further", file=sys.stderr)
        return 0
    if result.history:
        _plot_after_training(trainer, result)
    if result.reason == "interrupted":
        print(f"charlstm: stopped at step {result.step:,}; saved {run / 'last.pt'}\n"
              f"charlstm: resume with: charlstm train --out {run} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED.get(received[0] if received else signal.SIGINT, 130)
    best = format_loss(result.best_val_loss)
    print(f"charlstm: done after {result.step:,} steps ({result.reason.replace('_', ' ')}); "
          f"best validation loss {best}\n"
          f"charlstm: sample with: charlstm sample {run}", file=sys.stderr)
    return 0


def _plot_after_training(trainer, result) -> None:
    """The end-of-training plot, from the trainer's own history (no need to read the
    checkpoint back), when matplotlib is there; it never fails the run."""
    from ..training import plot
    from ..errors import CharlstmError

    if not plot.available():
        print(f"charlstm: no loss plot written; for one: {plot.INSTALL_HINT}", file=sys.stderr)
        return
    target = result.run_dir / plot.PLOT_NAME
    title = plot.title(result.run_dir.name, trainer.model_config.to_dict(),
                       trainer.corpus.name, result.step)
    try:
        plot.save(result.history, target, title)
    except CharlstmError as exc:
        print(f"charlstm: warning: no loss plot written: {exc}", file=sys.stderr)
        return
    print(f"charlstm: loss plot: {target}", file=sys.stderr)
