"""A run's milestones: what `Trainer` does between steps, at an evaluation and at a save.

At each evaluation the model is evaluated (evaluation), the record goes into the history
and metrics.jsonl, the run is saved (last.pt, and best.pt when the loss improved) and a
sample is shown. Between evaluations, last.pt is saved without evaluating: every
`save_every` seconds and on a stop. Every save captures the whole run (state), so a run
saved at any milestone resumes bit for bit, and the divergence guard keeps the same
record to roll back to. A run with --time that evaluates only at its end times a slice
of an evaluation (at half its budget and at 90%), for the reserve its clock keeps for
the final one.

With several processes every process takes part (the state of all streams is gathered),
only the main one evaluates and writes, and the others take its result.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from . import clock, distributed, evaluation, optim, state
from .losses import ReportWindow

if TYPE_CHECKING:
    from .loop import Trainer

log = logging.getLogger(__name__)


def evaluate_and_save(trainer: Trainer, reason: str | None) -> None:
    """Evaluate, record, save and show a sample; `reason` is why training ended (None
    while it goes on)."""
    if reason == "time":  # so that a resume with the same --time has nothing to do
        trainer.time_spent = trainer.config.time_limit
    started = clock.now()
    train_loss = trainer.losses.take_eval_mean()
    # only the main process evaluates; the others take its result (and its time of day),
    # so that all their histories and best losses agree
    val_loss, now = distributed.run_on_main(
        lambda: (trainer.evaluate(), datetime.now(timezone.utc)))
    improved = val_loss is not None and (trainer.best_val_loss is None
                                         or val_loss < trainer.best_val_loss)
    if improved:
        trainer.best_val_loss = val_loss
    record = evaluation.record(trainer.step, trainer.batches.epochs_done, train_loss,
                               val_loss, improved, optim.learning_rate_of(trainer.optimizer),
                               trainer.losses.take_curve(), trainer.clock.elapsed, now)
    record.update(trainer.gradients.take_eval(trainer.step))
    trainer.history.append(record)
    save(trainer, best=improved)
    distributed.run_on_main(lambda: trainer.folder.append_metrics(record))
    trainer.callback.on_eval(record)
    every = trainer.config.sample_every
    if every == 0 or trainer.step % every == 0 or reason is not None:
        show_sample(trainer)
    trainer.clock.evaluated(clock.now() - started)


def save_between(trainer: Trainer, window: ReportWindow, pending: list) -> None:
    """Save last.pt between evaluations, without evaluating (on a stop, and every
    --save-every): the bad-step flags are settled and the loss since the last report
    folded into the checkpoint's sums, which are exact, so a run saved here goes on (now
    or after a resume) bit for bit as one that was not."""
    skipped = trainer.guard.settle(pending)
    if skipped is None:  # rolled back to the last save: nothing since it counts
        trainer.roll_back()
        window.discard()
    else:
        window.fold_into(trainer.losses, skipped)
    save(trainer, best=False)


def save(trainer: Trainer, best: bool) -> None:
    """Write last.pt (and best.pt when `best`), and keep the record for a rollback."""
    paths = [trainer.folder.last] + ([trainer.folder.best] if best else [])
    record = state.capture(trainer)  # every process takes part; the main one writes
    distributed.run_on_main(lambda: record.save(*paths))
    trainer.guard.keep(record)
    trainer.clock.saved()
    if trainer.is_main:
        log.info("saved %s", ", ".join(str(p) for p in paths))


def show_sample(trainer: Trainer) -> None:
    """A sample from the model as it is now, to the callback (main process only)."""
    config = trainer.config
    if config.sample_length and trainer.is_main:
        trainer.callback.on_sample(trainer.step, evaluation.milestone_sample(
            trainer.model, trainer.corpus.vocab, config.sample_length,
            config.seed + trainer.step))


def time_evaluation(trainer: Trainer) -> None:
    """Time an evaluation of the first clock.PROBE_CHARS validation characters (after
    an untimed one of an eighth as many, which sets up its kernels), and keep what a whole
    evaluation takes at that pace as the final reserve (clock.timed_evaluation). Each
    evaluation stream's warm-up is counted as characters read, as in a whole one."""
    whole = trainer.val_end - trainer.val_start
    chars = min(clock.PROBE_CHARS, whole)
    warm_up = min(evaluation.EVAL_STREAMS, chars) * evaluation.EVAL_WARMUP

    def timed() -> tuple[float, float]:
        began = clock.now()
        trainer.evaluate(max(1, chars // 8))
        started = clock.now()
        trainer.evaluate(chars)
        return clock.now() - started, clock.now() - began

    seconds, took = distributed.run_on_main(timed)
    trainer.clock.timed_evaluation(seconds * (whole + warm_up) / (chars + warm_up), took)
