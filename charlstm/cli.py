"""The `charlstm` command line: train, sample, score, info and corpus.

The only module that reads the environment, prints, and picks exit codes: 0 success,
1 runtime failure, 2 usage error, 130 interrupted (143 terminated). Expected failures are
one line on stderr; CHARLSTM_DEBUG=1 shows the traceback. stdout carries only the product
(generated text, tables asked for); progress and diagnostics go to stderr.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import math
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from tqdm import tqdm
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer uses click itself
    from click import exceptions as click_exceptions

from . import __version__, corpus as corpora
from .errors import CharlstmError, UsageError
from .files import atomic_writer
from .presets import DEFAULT_PRESET, PRESETS

# Modules that import torch (seconds, and some 200 MB) are imported inside the commands
# that use them, so that `charlstm corpus ...`, --help and --version start at once.

IMPORTED_AT = time.monotonic()
HELP = {"help_option_names": ["-h", "--help"]}
DATA, MODEL, OPTIM, CKPT, OUTPUT = "Data", "Model", "Optimization", "Checkpointing", "Output"
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
# the model argument and the device option of `sample` and `score`
DEVICE_OPTION = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N or mps.")
CHECKPOINT_ARGUMENT = typer.Argument(..., metavar="CHECKPOINT",
                                     help="A .pt file, or a run folder (uses its best.pt, "
                                          "else last.pt).")


class PipeClosed(Exception):
    """The reader of stdout went away (`| head`): stop quietly."""


class CharlstmGroup(TyperGroup):
    """Turns every failure into one line on stderr and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        try:
            result = super().main(args=args, prog_name=prog_name or "charlstm",
                                  complete_var=complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except click_exceptions.NoArgsIsHelpError as exc:
            if exc.format_message().strip():  # rich help has been printed already
                print(exc.format_message())
            code = 0
        except click_exceptions.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "charlstm"
            _fail(f"{exc.format_message()} (see '{where} --help')", exc.ctx and where)
            code = 2
        except typer.Abort:
            code = 130
        except PipeClosed:
            _silence_stdout()
            code = 0
        except CharlstmError as exc:
            if os.environ.get("CHARLSTM_DEBUG"):
                raise
            from .settings import SettingError

            # the library names settings (time_limit); the user knows them as flags (--time)
            _fail(exc.spelled(flag_for) if isinstance(exc, SettingError) else str(exc))
            code = exc.exit_code
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if os.environ.get("CHARLSTM_DEBUG"):
                raise
            message = str(exc).strip().splitlines()
            _fail(f"internal error: {type(exc).__name__}: {message[0] if message else ''} "
                  "(set CHARLSTM_DEBUG=1 to see the traceback)")
            code = 1
        sys.exit(code)


def flag_for(setting: str) -> str:
    """The train flag that gives a setting (a ModelConfig or TrainConfig field)."""
    return {"time_limit": "--time"}.get(setting, "--" + setting.replace("_", "-"))


def _fail(message: str, where: str | None = None) -> None:
    print(f"{where or 'charlstm'}: error: {message}", file=sys.stderr, flush=True)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


app = typer.Typer(
    cls=CharlstmGroup, context_settings=HELP, no_args_is_help=True,
    help="Train character-level recurrent language models (LSTM, GRU, RNN) on any text, "
         "and sample from them.\n\nQuick start: 'charlstm train' trains on a built-in "
         "corpus; 'charlstm sample checkpoints/RUN' writes text.",
    pretty_exceptions_enable=False)
corpus_app = typer.Typer(cls=CharlstmGroup, context_settings=HELP, no_args_is_help=True,
                         help="List, download and prepare corpora.")
app.add_typer(corpus_app, name="corpus")


def corpora_dir() -> Path:
    return Path(os.environ.get("CHARLSTM_CORPORA", "corpora"))


def checkpoints_dir() -> Path:
    return Path(os.environ.get("CHARLSTM_CHECKPOINTS", "checkpoints"))


def _version(value: bool) -> None:
    if value:
        print(f"charlstm {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more to stderr."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        stream=sys.stderr, format="charlstm: %(message)s")


# ----------------------------------------------------------------------------- train

DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s|ms)?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1h30m', '2.5m' -> seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}
    total, position = 0.0, 0
    for match in DURATION.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * units[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned) or total <= 0:
        raise UsageError(f"--time takes a duration like 90s, 10m or 1h30m, not {text!r}")
    return total


def _torchrun_aware(command):
    """Run `command` as one of several processes when torchrun started this one (it sets
    WORLD_SIZE, RANK and LOCAL_RANK): join their process group first and leave it after.
    Expected errors are then reported by the main process only; the others wait until it
    has, then end with the same exit code and say nothing: one line, not N."""
    import functools

    @functools.wraps(command)
    def one_of_several(*args, **kwargs):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return command(*args, **kwargs)
        from . import distributed

        distributed.start(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            return command(*args, **kwargs)
        except CharlstmError as exc:
            if os.environ.get("CHARLSTM_DEBUG"):
                raise
            if distributed.is_main():
                _fail(str(exc))
            distributed.barrier()  # torchrun ends them all once one exits: say why first
            raise typer.Exit(exc.exit_code) from None
        finally:
            distributed.finish()

    return one_of_several


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n"
    "  charlstm train                        # built-in corpus, default 'small' model\n\n"
    "  charlstm train my.txt --time 10m      # your text, a 10-minute budget\n\n"
    "  charlstm train my.txt --preset medium --dropout 0.3\n\n"
    "  charlstm train my.txt --out checkpoints/mine --resume   # continue a run\n\n"
    "  cat *.md | charlstm train - --max-steps 500\n\n"
    "  charlstm train my.txt --json | jq -r '[.step, .val_bpc] | @tsv'\n\n"
    "  torchrun --nproc_per_node=4 -m charlstm train my.txt -b 128   # 4 GPUs, one model"))
@_torchrun_aware
def train(
    corpus: Optional[str] = typer.Argument(
        None, help="A text file, '-' for stdin, or a known corpus name "
                   "(default: pystdlib, built from Python's own sources).",
        show_default=False),
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
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", rich_help_panel=OPTIM,
                                             help="Parallel streams per step (from the preset)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", rich_help_panel=OPTIM,
                                          help="Characters backpropagated per step (from the preset)"),
    lr: Optional[float] = typer.Option(None, "--lr", rich_help_panel=OPTIM,
                                       help="Peak learning rate (AdamW) (from the preset)"),
    warmup_steps: Optional[int] = typer.Option(None, "--warmup-steps", rich_help_panel=OPTIM,
                                               help="Linear learning-rate warm-up steps; "
                                                    "cosine decay follows (default: 100)"),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", rich_help_panel=OPTIM,
                                                 help="AdamW weight decay (default: 0.01)"),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", rich_help_panel=OPTIM,
                                              help="Global gradient norm cap, 0 = off "
                                                   "(default: 1.0)"),
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
                                     "run) from its last.pt."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", rich_help_panel=CKPT,
                                             help="Steps between evaluations and checkpoints "
                                                  "(from the preset)"),
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
                               help="No progress bar or samples; evaluations only."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT,
                                 help="Also write each evaluation's metrics to stdout as one "
                                      "JSON line (for jq); progress stays on stderr."),
) -> int:
    """Train a model on a corpus, showing progress and samples on stderr."""
    settings = dict(
        val_frac=val_frac, shuffle=shuffle, bptt_warmup=bptt_warmup, model=model,
        num_layers=num_layers, hidden_size=hidden_size, embed_size=embed_size,
        dropout=dropout, batch_size=batch_size, seq_len=seq_len, lr=lr,
        warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip, beta1=beta1,
        max_steps=max_steps, epochs=epochs, seed=seed, device=device, precision=precision,
        eval_every=eval_every, eval_chars=eval_chars, compile=compile_model,
        sample_every=sample_every, sample_length=sample_length,
        time_limit=parse_duration(time_budget) if time_budget is not None else None,
    )
    from .clock import launched_at
    from .progress import TrainingDisplay, format_loss
    from .runs import make_trainer

    display = TrainingDisplay(show_samples=not quiet, live=False if quiet else None,
                              records=JsonRecords() if as_json else None)
    trainer = make_trainer(
        corpus, out=out, resume=resume, preset=preset, settings=settings, callback=display,
        corpora_dir=corpora_dir(), checkpoints_dir=checkpoints_dir(), lossy=lossy,
        stdin=_stdin() if corpus == "-" else None, launched_at=launched_at(IMPORTED_AT),
        corpus_progress=_byte_progress("encoding corpus"))
    main = trainer.is_main  # with several processes (torchrun) only the main one reports
    received: list[int] = []

    def on_signal(signum, frame):
        received.append(signum)
        if len(received) == 1:
            trainer.request_stop()
            if main:
                display.write("charlstm: stopping: saving a checkpoint first "
                              "(press Ctrl-C twice more to quit without saving)")
        elif len(received) >= 3:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in EXIT_INTERRUPTED}
    try:
        result = trainer.fit()
    finally:
        for s, handler in previous.items():
            # once asked to stop, further presses while exiting are ignored, not tracebacks
            signal.signal(s, signal.SIG_IGN if received else handler)
    run = result.run_dir
    if not main:  # the main process reports and plots; the others end with its exit code
        return (EXIT_INTERRUPTED.get(received[0] if received else signal.SIGINT, 130)
                if result.reason == "interrupted" else 0)
    if result.reason == "already finished":
        print(f"charlstm: {run} already finished at step {result.step:,}; raise --max-steps, "
              "--epochs or --time to train further", file=sys.stderr)
        return 0
    if result.history:
        # what the plot needs, from the trainer: no need to read the checkpoint back
        from .checkpoint import Checkpoint

        summary = Checkpoint(model_config=trainer.model_config.to_dict(),
                             vocab=trainer.corpus.vocab.to_dict(), model={},
                             corpus=trainer.corpus.describe(), step=result.step,
                             history=result.history)
        _plot_after_training(run, summary, lambda message: print(message, file=sys.stderr))
    if result.reason == "interrupted":
        print(f"charlstm: stopped at step {result.step:,}; saved {run / 'last.pt'}\n"
              f"charlstm: resume with: charlstm train --out {run} --resume", file=sys.stderr)
        return EXIT_INTERRUPTED.get(received[0] if received else signal.SIGINT, 130)
    best = format_loss(result.best_val_loss)
    print(f"charlstm: done after {result.step:,} steps ({result.reason.replace('_', ' ')}); "
          f"best validation loss {best}\n"
          f"charlstm: sample with: charlstm sample {run}", file=sys.stderr)
    return 0


class JsonRecords:
    """train --json: each evaluation's metrics record as one JSON line on stdout."""

    def __init__(self):
        self.out = StdoutWriter()

    def __call__(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


def _stdin():
    """Standard input as bytes; a closed one (`<&-`) reads as empty."""
    return sys.stdin.buffer if sys.stdin is not None else io.BytesIO()


def _byte_progress(description: str):
    """A tqdm byte counter on stderr for long reads, shown only on a terminal."""
    state: dict = {}

    def update(done: int, total: int | None) -> None:
        if not sys.stderr.isatty() or (total or 0) < 20_000_000:
            return
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, unit="B", unit_scale=True, leave=False,
                                      desc=description, file=sys.stderr)
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    return update


# ----------------------------------------------------------------------------- sample


class StdoutWriter:
    """Streams text to stdout, flushing often enough to watch and rarely enough to be fast."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.last_flush = interval, time.monotonic()

    def write(self, text: str) -> None:
        try:
            sys.stdout.write(text)
            now = time.monotonic()
            if now - self.last_flush >= self.interval:
                sys.stdout.flush()
                self.last_flush = now
        except BrokenPipeError:
            raise PipeClosed from None
        except (OSError, AttributeError) as exc:  # a full disk, a closed stdout (`>&-`)
            raise _stdout_failed(exc) from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise PipeClosed from None
        except (OSError, AttributeError) as exc:  # a full disk, a closed stdout (`>&-`)
            raise _stdout_failed(exc) from None


def _stdout_failed(exc: Exception) -> CharlstmError:
    reason = getattr(exc, "strerror", None) or "it is closed"
    return CharlstmError(f"cannot write to standard output: {reason}")


def _read_stdin_text(what: str) -> str:
    try:
        return _stdin().read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} on standard input is not valid UTF-8 "
                         f"(byte offset {exc.start})") from None


def _read_prime(prime: str | None, prime_file: str | None) -> str:
    if prime is not None and prime_file is not None:
        raise UsageError("give --prime or --prime-file, not both")
    if prime is not None:
        return prime
    if prime_file == "-":
        return _read_stdin_text("the prime")
    if prime_file is not None:
        try:
            return Path(prime_file).read_text("utf-8")
        except FileNotFoundError:
            raise UsageError(f"no such prime file: {prime_file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read prime file {prime_file}: {exc}") from None
    if sys.stdin is not None and not sys.stdin.isatty():
        return _read_stdin_text("the prime")
    return ""


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n"
    "  charlstm sample checkpoints/pystdlib-lstm1x512 -n 500\n\n"
    "  charlstm sample RUN/best.pt -t 0.7 -p 'ROMEO:' | tee romeo.txt\n\n"
    "  echo 'def main(' | charlstm sample RUN -n 300 --seed 7\n\n"
    "  charlstm sample RUN -n 0 | head -c 10000     # endless, until the pipe closes\n\n"
    "  charlstm sample RUN --stop-at '\\n\\n' -n 2000   # up to the first blank line\n\n"
    "  cut -c1-20 names.txt | charlstm sample RUN --each-line --stop-at '\\n'"))
def sample(
    checkpoint_path: Path = CHECKPOINT_ARGUMENT,
    length: int = typer.Option(1000, "--length", "-n",
                               help="Characters to generate per sample; 0 = endless."),
    temperature: float = typer.Option(1.0, "--temperature", "-t",
                                      help="Below 1 safer, above 1 wilder; 0 = always the "
                                           "likeliest character."),
    top_k: Optional[int] = typer.Option(None, "--top-k",
                                        help="Sample only among the k likeliest characters."),
    top_p: Optional[float] = typer.Option(None, "--top-p",
                                          help="Sample only among the likeliest characters "
                                               "whose probabilities add up to p, in (0, 1]."),
    prime: Optional[str] = typer.Option(None, "--prime", "-p",
                                        help="Text to start from (also read from stdin when "
                                             "stdin is not a terminal)."),
    prime_file: Optional[str] = typer.Option(None, "--prime-file",
                                             help="Read the prime from a file, '-' = stdin."),
    echo: bool = typer.Option(True, "--echo/--no-echo",
                              help="Print the prime before its continuation."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s",
                                       help="Make the sample reproducible (default: random)."),
    num_samples: int = typer.Option(1, "--num-samples", "-N",
                                    help="Samples generated together as one batch; printed "
                                         "one after another, separated by a blank line."),
    stop_at: Optional[str] = typer.Option(None, "--stop-at",
                                          help="End each sample once it has written this "
                                               "string (kept); \\n and \\t are understood."),
    each_line: bool = typer.Option(False, "--each-line",
                                   help="Read stdin line by line and write one continuation "
                                        "of each line (its prime), in order; batched."),
    device: str = DEVICE_OPTION,
) -> None:
    """Generate text from a trained model; only the text goes to stdout."""
    from .api import load, make_generator
    from .sampling import check_options, check_prime, generate

    check_options(temperature, top_k, top_p, length, num_samples)
    stop = _unescape(stop_at) if stop_at is not None else None
    if stop == "":
        raise UsageError("--stop-at must not be empty")
    if seed is not None and not 0 <= seed < 2**64:
        raise UsageError(f"--seed must be in [0, 2**64), not {seed}")
    if length == 0 and num_samples > 1:
        raise UsageError("endless sampling (--length 0) streams one sample; "
                         "drop --num-samples or give a --length")
    if num_samples > 100_000:
        raise UsageError(f"--num-samples {num_samples:,} is more than 100,000 per run")
    if each_line and (prime is not None or prime_file is not None or num_samples > 1
                      or length == 0):
        raise UsageError("--each-line takes its primes from stdin, one sample per line, of "
                         "a finite --length; drop --prime, --prime-file and --num-samples")
    lm = load(checkpoint_path, device)
    generator = make_generator(seed, lm.device)
    out = StdoutWriter()
    if each_line:
        _sample_each_line(lm, out, length, temperature, top_k, top_p, generator, stop, echo)
        return
    text = _read_prime(prime, prime_file)
    check_prime(text, lm.vocab)
    if echo:
        out.write(text)
    rest: list[list[str]] = [[] for _ in range(num_samples - 1)]
    last = text
    for chars in generate(lm.model, lm.vocab, text, length, temperature, top_k, top_p,
                          num_samples, generator, stop):
        out.write(chars[0])
        last = chars[0]
        for column, char in zip(rest, chars[1:]):
            column.append(char)
    if not last.endswith("\n"):
        out.write("\n")
    for column in rest:
        body = "".join(column)
        out.write("\n" + (text if echo else "") + body + ("" if body.endswith("\n") else "\n"))
    out.flush()


EACH_LINE_BATCH = 64  # input lines continued together


def _unescape(text: str) -> str:
    """The few backslash escapes a shell leaves alone: \\n, \\t, \\r and \\\\."""
    return re.sub(r"\\([ntr\\])",
                  lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


def _sample_each_line(lm, out: StdoutWriter, length: int, temperature: float,
                      top_k: int | None, top_p: float | None, generator,
                      stop: str | None, echo: bool) -> None:
    from .sampling import generate

    """One continuation per stdin line, in order; characters the model never saw are left
    out of that line's prime (and said once on stderr)."""
    if sys.stdin is None:
        return
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict",
                              newline="")
    unknown_lines = 0

    def flush(lines: list[str]) -> None:
        nonlocal unknown_lines
        primes = []
        for line in lines:
            known = "".join(c for c in line if c in lm.vocab)
            unknown_lines += known != line
            primes.append(known)
        bodies = [[] for _ in lines]
        for chars in generate(lm.model, lm.vocab, primes, length, temperature, top_k, top_p,
                              generator=generator, stop_at=stop):
            for body, char in zip(bodies, chars):
                body.append(char)
        for line, body in zip(lines, bodies):
            text = (line if echo else "") + "".join(body)
            out.write(text if text.endswith("\n") else text + "\n")
        out.flush()

    batch: list[str] = []
    try:
        for raw in stream:
            batch.append(raw.rstrip("\r\n"))
            if len(batch) == EACH_LINE_BATCH:
                flush(batch)
                batch = []
    except UnicodeDecodeError as exc:
        raise UsageError(f"standard input is not valid UTF-8: {exc.reason}") from None
    if batch:
        flush(batch)
    if unknown_lines:
        print(f"charlstm: warning: {unknown_lines:,} line(s) had characters the model never "
              "saw; they were left out of those primes", file=sys.stderr)


# ----------------------------------------------------------------------------- info


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm info checkpoints/pystdlib-lstm1x512\n\n"
    "  charlstm info RUN/last.pt --json | jq .best_val_loss"))
def info(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT",
                                           help="A .pt file or a run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead."),
) -> None:
    """Show a checkpoint's model, vocabulary, corpus and training history."""
    from . import checkpoint
    from .progress import format_duration, format_loss

    path = checkpoint.find(checkpoint_path)
    record = checkpoint.read(path)
    model, train, history = record.model_config, record.train_config, record.history
    summary = record.summary(path)
    best, best_step = record.best_val_loss, summary["best_step"]
    if as_json:
        print(json.dumps(summary))
        return
    console = Console(highlight=False, soft_wrap=True)
    corpus = record.corpus or {}
    limit = train.get("max_steps")
    lines = [
        ("checkpoint", f"{path} (format {record.format_version}, charlstm "
                       f"{record.charlstm_version or '?'})"),
        ("model", f"{model['model']}, {model['num_layers']} layers x {model['hidden_size']} "
                  f"units, embedding {model['embed_size']}, dropout {model['dropout']} "
                  f"({summary['parameters'] / 1e6:.2f}M parameters)"),
        ("vocabulary", f"{summary['vocab_size']} characters"),
        ("corpus", f"{corpus.get('source', '?')}: {corpus.get('characters', 0):,} characters, "
                   f"sha256 {str(corpus.get('sha256', ''))[:12]}"),
        ("training", f"step {record.step or 0:,}" + (f" of {limit:,}" if limit else "")
                     + f", {format_duration(record.elapsed or 0)}, batch "
                       f"{train.get('batch_size')} x {train.get('seq_len')}, lr "
                       f"{train.get('lr')}, precision {record.precision}"),
        ("best validation", format_loss(best) + (f" at step {best_step:,}" if best_step else "")),
    ]
    curve = [r["val_bpc"] for r in history if r.get("val_bpc") is not None]
    if len(curve) > 1:
        lines.append(("validation", f"{sparkline(curve)}  {curve[0]:.3f} -> {curve[-1]:.3f} "
                                    "bits/char"))
    for key, value in lines:
        console.print(f"{key:<16} {value}", markup=False)
    if history:
        table = Table(box=box.SIMPLE, title="history", title_justify="left")
        for column in ("step", "epoch", "train loss", "val loss", "val bits/char", "time"):
            table.add_column(column, justify="right")
        for r in history:
            val = r.get("val_loss")
            table.add_row(f"{r['step']:,}", f"{r.get('epoch', 0):.2f}",
                          f"{r['train_loss']:.4f}",
                          "n/a" if val is None else f"{val:.4f}" + (" *" if r.get("best") else ""),
                          "n/a" if val is None else f"{r['val_bpc']:.3f}",
                          format_duration(r.get("elapsed", 0)))
        console.print(table)


# ----------------------------------------------------------------------------- plot


@app.command("plot", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm plot checkpoints/pystdlib-lstm1x512\n\n"
    "  charlstm plot RUN/best.pt -o curve.png\n\n"
    "  charlstm plot RUN -o - | display     # the PNG on stdout"))
def plot_command(
    run: Path = typer.Argument(..., metavar="RUN", help="A run folder or a .pt file."),
    output: Optional[str] = typer.Option(None, "--output", "-o",
                                         help="Where to write the PNG; '-' for stdout "
                                              "(default: RUN/loss.png)"),
) -> None:
    """Plot training and validation loss (bits/char) against step as a PNG.

    Needs matplotlib: pip install matplotlib (charlstm's [plot] extra).
    """
    from . import checkpoint, plot

    path = checkpoint.find(run)
    record = checkpoint.read(path)
    title = _plot_title(record, path.parent)
    if output == "-":
        buffer = io.BytesIO()
        plot.plot_history(record.history, buffer, title)
        _write_stdout_bytes(buffer.getvalue())
        return
    target = Path(output) if output else path.parent / plot.PLOT_NAME
    try:
        with atomic_writer(target) as f:
            plot.plot_history(record.history, f, title)
    except OSError as exc:
        raise CharlstmError(f"cannot write {target}: {exc.strerror or exc}") from exc
    print(target)


def _plot_title(record, run_dir: Path) -> str:
    """The title of a run's loss plot, from its checkpoint.Checkpoint."""
    model, corpus = record.model_config, record.corpus or {}
    return (f"{run_dir.name}: {model['model'].upper()} {model['num_layers']}x"
            f"{model['hidden_size']} on {corpus.get('name', '?')}, step {record.step or 0:,}")


def _write_stdout_bytes(payload: bytes) -> None:
    try:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
    except OSError as exc:
        raise _stdout_failed(exc) from None


def _plot_after_training(run_dir: Path, record, note) -> None:
    """The end-of-training plot, when matplotlib is there; never fails the run. `record`
    is a checkpoint.Checkpoint with the run's model_config, corpus, step and history."""
    from . import plot

    if not plot.available():
        note(f"charlstm: no loss plot written; for one: {plot.INSTALL_HINT}")
        return
    target = run_dir / plot.PLOT_NAME
    try:
        with atomic_writer(target) as f:
            plot.plot_history(record.history, f, _plot_title(record, run_dir))
    except (CharlstmError, OSError) as exc:
        note(f"charlstm: warning: no loss plot written: {exc}")
        return
    note(f"charlstm: loss plot: {target}")


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """The values as a row of block characters, low to high (the last `width` of them
    averaged into `width` columns when there are more)."""
    if len(values) > width:
        size = len(values) / width
        values = [sum(values[int(i * size):int((i + 1) * size)])
                  / len(values[int(i * size):int((i + 1) * size)]) for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)


# ----------------------------------------------------------------------------- corpus


@corpus_app.command("list", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm corpus list\n\n"
    "  charlstm corpus list | grep -v 'not here'    # the ones ready to train on"))
def corpus_list() -> None:
    """Show the built-in and downloadable corpora and whether each is here."""
    folder = corpora_dir()
    rows = []
    for name, built_in in corpora.BUILT_IN.items():
        local = folder / f"{name}.txt"
        rows.append((name, built_in.size, str(local) if local.exists() else "built on first use",
                     built_in.description))
    for name, entry in corpora.registry().items():
        local = folder / f"{name}.txt"
        rows.append((name, f"{entry['size'] / 1e6:.1f} MB",
                     str(local) if local.exists() else f"not here: charlstm corpus get {name}",
                     entry["description"]))
    # plain aligned columns, never cut, so the output greps and pipes well
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])


@corpus_app.command("get", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm corpus get tinyshakespeare\n\n"
    "  charlstm corpus get tinyshakespeare --from ~/data/input.txt   # a local copy"))
def corpus_get(
    name: str = typer.Argument(..., help="A name from 'charlstm corpus list'."),
    source: Optional[str] = typer.Option(None, "--from",
                                         help="Fetch from this URL or local file instead; "
                                              "the checksum is still verified."),
) -> None:
    """Download a known corpus into corpora/ and verify its checksum; prints its path."""
    if name in corpora.BUILT_IN:
        path = corpora.BUILT_IN[name].build(corpora_dir())
    else:
        bar: dict = {}

        def progress(done: int, total: int | None) -> None:
            if "bar" not in bar:
                bar["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc=name,
                                  file=sys.stderr, leave=False,
                                  disable=not sys.stderr.isatty())
            bar["bar"].update(done - bar["bar"].n)

        try:
            path = corpora.download(name, corpora_dir(), source, progress)
        finally:
            if "bar" in bar:
                bar["bar"].close()
    print(path)


@corpus_app.command("prepare", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm corpus prepare enwik8.txt      # encode once, train many times\n\n"
    "  charlstm corpus prepare pydocs\n\n"
    "  charlstm corpus prepare --lossy scraped.txt   # invalid UTF-8 becomes U+FFFD"))
def corpus_prepare(
    corpus: str = typer.Argument(..., help="A text file, '-' or a known corpus name."),
    lossy: bool = typer.Option(False, "--lossy", help="Replace invalid UTF-8 bytes."),
) -> None:
    """Encode a corpus into its token cache now (training would do it on first use)."""
    data = corpora.encode(corpus, corpora_dir(), lossy, _byte_progress("encoding"),
                          _stdin() if corpus == "-" else None)
    print(f"{data.source}: {len(data.tokens):,} characters, vocabulary {len(data.vocab)} "
          f"({data.vocab.dtype.name}), sha256 {data.sha256[:12]}")


# ----------------------------------------------------------------------------- score

SCORE_BLOCK_BYTES = 1 << 20  # the whole-input score reads this much at a time


def _open_score_input(file: str | None):
    """(a name for messages, a binary stream): FILE, or stdin for '-' or for no FILE
    when stdin is not a terminal."""
    if file is None or file == "-":
        if file is None and (sys.stdin is None or sys.stdin.isatty()):
            raise UsageError("nothing to score: give a FILE, or pipe text into standard "
                             "input ('-' reads it even from a terminal)")
        return "standard input", _stdin()
    try:
        return file, open(file, "rb")
    except FileNotFoundError:
        raise UsageError(f"no such file: {file}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None


def _not_utf8(label: str, exc: UnicodeDecodeError, where: int, line: int | None = None
              ) -> CharlstmError:
    bad = exc.object[exc.start:exc.start + 4].hex(" ")
    on_line = f" (line {line:,})" if line is not None else ""
    return CharlstmError(f"{label} is not valid UTF-8: {exc.reason} at byte offset {where}"
                         f"{on_line} (bytes {bad}); --lossy replaces invalid bytes")


def _input_lines(stream, label: str, lossy: bool):
    """Each line of a binary stream, decoded, without its newline ('\\n' only splits)."""
    offset = 0
    try:
        for number, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8", "replace" if lossy else "strict")
            except UnicodeDecodeError as exc:
                raise _not_utf8(label, exc, offset + exc.start, number) from None
            offset += len(raw)
            yield line[:-1] if line.endswith("\n") else line
    except OSError as exc:
        raise CharlstmError(f"cannot read {label}: {exc.strerror or exc}") from None


def _input_pieces(stream, label: str, lossy: bool):
    """A binary stream decoded block by block, so a huge input never sits in memory."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace" if lossy else "strict")
    offset = 0  # bytes read before the current block
    while True:
        try:
            block = stream.read(SCORE_BLOCK_BYTES)
        except OSError as exc:
            raise CharlstmError(f"cannot read {label}: {exc.strerror or exc}") from None
        pending = len(decoder.getstate()[0])  # bytes of a character cut by the last block
        try:
            text = decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            raise _not_utf8(label, exc, offset - pending + exc.start) from None
        if text:
            yield text
        if not block:
            return
        offset += len(block)


def _score_json(record: dict) -> str:
    """One JSON line; an empty text's undefined bits per character is null, not NaN."""
    bits_per_char = record["bits_per_char"]
    return json.dumps({**record, "bits_per_char":
                       None if math.isnan(bits_per_char) else bits_per_char})


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
    lossy: bool = typer.Option(False, "--lossy",
                               help="Replace invalid UTF-8 bytes with U+FFFD (an unknown "
                                    "character) instead of failing."),
    device: str = DEVICE_OPTION,
) -> None:
    """Score text with a trained model: bits per character, lower = more like its corpus."""
    from .api import load
    from .scoring import UNKNOWN_CHAR_BITS

    started = time.monotonic()
    label, stream = _open_score_input(file)
    out = StdoutWriter()
    try:
        lm = load(checkpoint_path, device)
        if per_line:
            count, characters, bits, unknown = 0, 0, 0.0, 0
            lines = _input_lines(stream, label, lossy)
            for record in lm.score_lines(lines, before_waiting=out.flush):
                count += 1
                characters += record["characters"]
                bits += record["bits"]
                unknown += record["unknown"]
                out.write(_score_json(record) + "\n" if as_json else
                          f"{record['bits_per_char']:.4f}\t{record['text']}\n")
        else:
            record = lm.score_stream(_input_pieces(stream, label, lossy))
            count, characters, bits, unknown = (None, record["characters"], record["bits"],
                                                record["unknown"])
            out.write(_score_json(record) + "\n" if as_json else
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


def main() -> None:
    app()
