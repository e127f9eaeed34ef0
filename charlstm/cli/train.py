"""`charlstm train`: train a model on a corpus, with progress on stderr."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..training.presets import DEFAULT_PRESET, PRESETS
from ..settings import FINE_TUNE_LR_RATIO, FINE_TUNE_WARMUP_STEPS, TrainConfig
from .app import (CKPT, CORPUS_HELP, DATA, GLOB_HELP, HELP, IMPORTED_AT, MODEL, OPTIM,
                  OUTPUT, app, checkpoints_dir, corpora_dir)
from .input import parse_duration, parse_interval, stdin
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
def train(
    corpus: Optional[List[str]] = typer.Argument(
        None, help=CORPUS_HELP[:-1] + " (default: pystdlib, built from Python's own "
                   "sources).", show_default=False),
    globs: List[str] = typer.Option([], "--glob", rich_help_panel=DATA, help=GLOB_HELP,
                                    metavar="PATTERN", show_default=False),
    val_frac: Optional[float] = typer.Option(None, "--val-frac", rich_help_panel=DATA,
                                             help="Last fraction held out for validation "
                                                  "(default: 0.1)"),
    shuffle: Optional[bool] = typer.Option(None, "--shuffle/--no-shuffle", rich_help_panel=DATA,
                                           help="Train on random windows instead of "
                                                "contiguous streams (default: no-shuffle)"),
    bptt_warmup: Optional[int] = typer.Option(None, "--bptt-warmup", rich_help_panel=DATA,
                                              help="Characters run without gradient to build "
                                                   "the state where none is carried (epoch "
                                                   "starts, --shuffle) (default: 0)"),
    lossy: bool = typer.Option(False, "--lossy", rich_help_panel=DATA,
                               help="Replace invalid UTF-8 bytes with U+FFFD instead of "
                                    "failing."),
    preset: Optional[str] = typer.Option(None, "--preset", rich_help_panel=MODEL,
                                         help=f"Model and schedule: {', '.join(PRESETS)} "
                                              f"(default: {DEFAULT_PRESET}, or with --time "
                                              "the best for the budget on this machine)"),
    model: Optional[str] = typer.Option(None, "--model", rich_help_panel=MODEL,
                                        help="Recurrent cell: lstm, gru or rnn (default: lstm)"),
    num_layers: Optional[int] = typer.Option(None, "--num-layers", rich_help_panel=MODEL,
                                             help="Stacked recurrent layers (from the preset)"),
    hidden_size: Optional[int] = typer.Option(None, "--hidden-size", rich_help_panel=MODEL,
                                              help="Units per layer (from the preset)"),
    embed_size: Optional[int] = typer.Option(None, "--embed-size", rich_help_panel=MODEL,
                                             help="Character embedding size (from the preset)"),
    dropout: Optional[float] = typer.Option(None, "--dropout", rich_help_panel=MODEL,
                                            help="Dropout on the stack's input, between layers "
                                                 "and before the head (from the preset and "
                                                 "the passes over the corpus)"),
    weight_drop: Optional[float] = typer.Option(
        None, "--weight-drop", rich_help_panel=MODEL,
        help="DropConnect on the recurrent weight matrices while training, one mask per "
             "step (from the preset and the passes over the corpus: medium only; see "
             "docs/training.md)"),
    locked_dropout: Optional[bool] = typer.Option(
        None, "--locked-dropout/--fresh-dropout", rich_help_panel=MODEL,
        help="Input and output dropout with one mask per stream for a whole step, or a "
             "fresh mask per character (default: locked)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", rich_help_panel=OPTIM,
                                             help="Parallel streams per step (from the preset)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", rich_help_panel=OPTIM,
                                          help="Characters backpropagated per step (from the preset)"),
    lr: Optional[float] = typer.Option(None, "--lr", rich_help_panel=OPTIM,
                                       help="Peak learning rate (AdamW) (from the preset)"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", rich_help_panel=OPTIM,
                                               help="Linear learning-rate warm-up steps; "
                                                    "cosine decay follows (default: "
                                                    f"{TrainConfig.warmup_steps})"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", rich_help_panel=OPTIM,
                                                 help="AdamW weight decay of the weight matrices "
                                                      "and embeddings (default: "
                                                      f"{TrainConfig.weight_decay})"),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", rich_help_panel=OPTIM,
                                              help="Global gradient norm cap, 0 = off "
                                                   f"(default: {TrainConfig.grad_clip})"),
    beta1: Optional[float] = typer.Option(None, "--beta1", rich_help_panel=OPTIM,
                                          help="AdamW's momentum, the decay of its running "
                                               "mean of gradients (from the preset)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", rich_help_panel=OPTIM,
                                            help="Stop after this many steps (from the preset)"),
    epochs: Optional[float] = typer.Option(None, "--epochs", rich_help_panel=OPTIM,
                                           help="Stop after this many passes over the data"),
    time_budget: Optional[str] = typer.Option(None, "--time", rich_help_panel=OPTIM,
                                              help="Wall-clock budget from launch to the final "
                                                   "evaluation: 90s, 10m, 1h30m. Without a "
                                                   "model size it also picks the model"),
    seed: Optional[int] = typer.Option(None, "--seed", rich_help_panel=OPTIM,
                                       help="Seed for initialisation, dropout and data "
                                            "order (default: 1337)"),
    device: Optional[str] = typer.Option(None, "--device", rich_help_panel=OPTIM,
                                         help="auto, cpu, cuda, cuda:N or mps (default: auto)"),
    precision: Optional[str] = typer.Option(None, "--precision", rich_help_panel=OPTIM,
                                            help="auto, fp32, bf16 or fp16 (CUDA only, with "
                                                 "loss scaling) autocast; auto measures on "
                                                 "CPUs (default: auto)"),
    compile_model: Optional[bool] = typer.Option(None, "--compile/--no-compile",
                                                 rich_help_panel=OPTIM,
                                                 help="torch.compile the model for training: "
                                                      "slower start, maybe faster steps "
                                                      "(default: no-compile)"),
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
    eval_every: Optional[int] = typer.Option(None, "--eval-every", rich_help_panel=CKPT,
                                             help="Steps between evaluations and checkpoints "
                                                  "(from the preset)"),
    save_every: Optional[str] = typer.Option(None, "--save-every", rich_help_panel=CKPT,
                                             help="Also save last.pt this often between "
                                                  "evaluations, without evaluating, so a "
                                                  "kill loses at most this much: 30s, 5m; "
                                                  "0 or off = only at evaluations "
                                                  "(default: 5m)"),
    eval_chars: Optional[int] = typer.Option(None, "--eval-chars", rich_help_panel=CKPT,
                                             help="Validation characters each evaluation reads, "
                                                  "from the start of the split; 0 = all "
                                                  "(default: 500000)"),
    sample_every: Optional[int] = typer.Option(None, "--sample-every", rich_help_panel=OUTPUT,
                                               help="Steps between milestone samples, 0 = at "
                                                    "each evaluation (default: 0)"),
    sample_length: Optional[int] = typer.Option(None, "--sample-length", rich_help_panel=OUTPUT,
                                                help="Characters per milestone sample, 0 = none "
                                                     "(default: 200)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", rich_help_panel=OUTPUT,
                               help="Print only the start, each evaluation and the end: "
                                    "no progress bar, step lines or samples."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT,
                                 help="Also write each evaluation's metrics to stdout as one "
                                      "JSON line (for jq); progress stays on stderr."),
) -> int:
    """Train a model on a corpus, showing progress and samples on stderr."""
    settings = dict(
        val_frac=val_frac, shuffle=shuffle, bptt_warmup=bptt_warmup, model=model,
        num_layers=num_layers, hidden_size=hidden_size, embed_size=embed_size,
        dropout=dropout, weight_drop=weight_drop, locked_dropout=locked_dropout,
        batch_size=batch_size, seq_len=seq_len, lr=lr,
        warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip, beta1=beta1,
        max_steps=max_steps, epochs=epochs, seed=seed, device=device, precision=precision,
        eval_every=eval_every, eval_chars=eval_chars, compile=compile_model,
        sample_every=sample_every, sample_length=sample_length,
        time_limit=parse_duration(time_budget) if time_budget is not None else None,
        save_every=parse_interval(save_every, "--save-every") if save_every is not None
        else None,
    )
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
