"""The command line as a process: one of several under torchrun, and stopped by signals.

torchrun starts one process per device and ends them all once one exits, so an expected
error is said by the main process only, before the others exit. Ctrl-C (SIGINT) and
SIGTERM stop training after it has saved; the exit code then says which signal came.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal

import typer

from .app import flag_for
from .output import print_error
from ..errors import CharlstmError

EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


def torchrun_aware(command):
    """Run `command` as one of several processes when torchrun started this one (it sets
    WORLD_SIZE, RANK and LOCAL_RANK): join their process group first and leave it after.
    Expected errors are then reported by the main process only; the others wait until it
    has, then end with the same exit code and say nothing: one line, not N."""

    @functools.wraps(command)
    def one_of_several(*args, **kwargs):
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return command(*args, **kwargs)
        from ..training import distributed

        distributed.start(int(os.environ.get("LOCAL_RANK", "0")))
        try:
            result = command(*args, **kwargs)
            # leave together: a process that tears its group down and exits while the main
            # one still saves can abort in gloo's teardown ("terminate called without an
            # active exception", 3 runs in 28 on 2 CPU cores)
            distributed.barrier()
            return result
        except CharlstmError as exc:
            if os.environ.get("CHARLSTM_DEBUG"):
                raise
            if distributed.is_main():
                print_error(exc.spelled(flag_for))
            distributed.barrier()  # torchrun ends them all once one exits: say why first
            raise typer.Exit(exc.exit_code) from None
        finally:
            distributed.finish()

    return one_of_several


@contextlib.contextmanager
def stopping_on_signals(trainer, display, main: bool):
    """The first Ctrl-C (or SIGTERM) asks `trainer` to stop once it has saved; the third
    quits without saving. Yields the list of the signals received."""
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
        yield received
    finally:
        for s, handler in previous.items():
            # once asked to stop, further presses while exiting are ignored, not tracebacks
            signal.signal(s, signal.SIG_IGN if received else handler)
        if len(received) >= 3 and main:
            # the third press can land inside a save, between the atomic writer making its
            # temporary file and the handler that removes it: no half-written file stays
            trainer.folder.tidy()
