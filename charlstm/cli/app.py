"""The command line's application: the typer app, its failure handling and shared options.

Every command module registers on `app` (or `corpus_app`); `CharlstmGroup` turns every
failure into one line on stderr and an exit code: 0 success, 1 runtime failure, 2 usage
error, 130 interrupted (143 terminated). CHARLSTM_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import typer
from typer.core import TyperGroup

try:  # typer 0.2x carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # older typer uses click itself
    from click import exceptions as click_exceptions

from .. import __version__
from ..errors import CharlstmError
from . import completion
from .output import PipeClosed, print_error, silence_stdout

IMPORTED_AT = time.monotonic()
HELP = {"help_option_names": ["-h", "--help"]}
# the corpus argument of train and corpus prepare, written once
CORPUS_HELP = ("A text file, '-' for stdin, or a known corpus name; or several files and "
               "folders, trained on as one corpus, folders walked in sorted order.")
GLOB_HELP = ("Take only files whose name matches this pattern from folders, e.g. '*.py' "
             "(repeatable; files named directly are always taken).")
DATA, MODEL, OPTIM, CKPT, OUTPUT = "Data", "Model", "Optimization", "Checkpointing", "Output"
# the model argument and the device option of `sample` and `score`
DEVICE_OPTION = typer.Option("cpu", "--device", help="auto, cpu, cuda, cuda:N or mps.")
CHECKPOINT_ARGUMENT = typer.Argument(..., metavar="CHECKPOINT",
                                     help="A .pt file, or a run folder (uses its best.pt, "
                                          "else last.pt).")


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
            print_error(f"{exc.format_message()} (see '{where} --help')",
                        exc.ctx and where)
            code = 2
        except typer.Abort:
            code = 130
        except PipeClosed:
            silence_stdout()
            code = 0
        except CharlstmError as exc:
            if os.environ.get("CHARLSTM_DEBUG"):
                raise
            # the library names settings (time_limit); the user knows them as flags (--time)
            print_error(exc.spelled(flag_for))
            code = exc.exit_code
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if os.environ.get("CHARLSTM_DEBUG"):
                raise
            message = str(exc).strip().splitlines()
            print_error(f"internal error: {type(exc).__name__}: "
                        f"{message[0] if message else ''} "
                        "(set CHARLSTM_DEBUG=1 to see the traceback)")
            code = 1
        sys.exit(code)


def flag_for(setting: str) -> str:
    """The flag that gives a setting or a parameter the library names (batch_size,
    init_from): the one of settings.OPTIONS, else the name with dashes (--init-from)."""
    from ..settings import OPTION_OF

    option = OPTION_OF.get(setting)
    if option:
        return option.flag.split("/")[0]
    return {"min_length": "--novelty-min"}.get(setting, "--" + setting.replace("_", "-"))


app = typer.Typer(
    cls=CharlstmGroup, context_settings=HELP, no_args_is_help=True,
    help="Train character-level recurrent language models (LSTM, GRU, RNN) on any text, "
         "and sample from them.\n\nQuick start: 'charlstm train' trains on a built-in "
         "corpus; 'charlstm sample checkpoints/RUN' writes text.",
    pretty_exceptions_enable=False,
    add_completion=False)  # our own: it writes no file of the user's (completion.py)
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
    install_completion: bool = typer.Option(
        False, "--install-completion", callback=completion.install_completion,
        is_eager=True, help="Install tab completion for this shell (bash, zsh or fish): writes "
                            "its script to a file of its own and prints the line to add "
                            "to your shell's startup file."),
    show_completion: bool = typer.Option(
        False, "--show-completion", callback=completion.show_completion, is_eager=True,
        help="Print the tab-completion script for this shell, to install it yourself."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        stream=sys.stderr, format="charlstm: %(message)s")
