"""A training run's state in a checkpoint, and back: what `Trainer` saves and what a
resume restores, side by side, so that each saved field can be seen to come back.

Everything that decides what the next step does is here: the weights and the optimizer,
the batches' place in the corpus and the streams' carried state, the step and the clock,
the loss sums, every process's random generators, the history and best loss, the
divergence guard's learning-rate scale, and the gradient scaler. That is why a resumed
run continues exactly where the saved one stopped (docs/reliability.md). The divergence
guard keeps the same record at each save and rolls back with `restore` too, so a save, a
resume and a rollback cannot disagree on what a run's state is.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .. import __version__
from . import distributed
from ..checkpoint import Checkpoint
from ..errors import CheckpointError
from .losses import LossTally
from ..model.charrnn import state_from_list, state_to_list

if TYPE_CHECKING:
    from .loop import Trainer


# The trainer's attributes that are the run's state (saved and restored), by the
# checkpoint fields that hold them; tests/test_training_state.py checks that every other
# attribute is in SET_UP, so a new one must be named in one list or the other.
SAVED = {
    "model": ("model",), "optimizer": ("optimizer",), "batches": ("data",),
    "step": ("step",), "clock": ("elapsed",), "hidden": ("hidden",),
    "losses": ("eval_loss", "curve", "curve_window"), "history": ("history",),
    "best_val_loss": ("best_val_loss",), "time_spent": ("time_spent",),
    "guard": ("lr_scale", "rollbacks"), "scaler": ("scaler",), "parent": ("parent",),
    "precision": ("precision",), "gradients": ("gradients",),
}
# Built from the settings, the corpus and the machine, the same again on a resume
SET_UP = {
    "corpus", "model_config", "config", "folder", "run_dir", "launched_at", "plan", "rank",
    "world_size", "is_main", "callback", "device", "val_start", "val_end", "trained",
    "precision_note", "_stop_requested", "_stop_agreed", "_refit_pending",
}
# What a rollback leaves as it is: the clock runs on, and the guard counts rollbacks and
# halves the learning rate at each
LIVE_ON_ROLLBACK = ("elapsed", "time_spent", "lr_scale", "rollbacks")


def capture(trainer: Trainer) -> Checkpoint:
    """Everything a resume needs. Every process must call this at once: the carried
    state of all B streams and every process's generator states are gathered."""
    rng = distributed.gather_rng_states(trainer.device)
    tally = trainer.losses
    return Checkpoint(
        charlstm_version=__version__,
        saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model_config=trainer.model_config.to_dict(), train_config=trainer.config.to_dict(),
        vocab=trainer.corpus.vocab.to_dict(), corpus=trainer.corpus.describe(),
        precision=trainer.precision, model=trainer.model.state_dict(),
        optimizer=trainer.optimizer.state_dict(), step=trainer.step,
        elapsed=trainer.clock.elapsed, data=trainer.batches.state_dict(),
        hidden=state_to_list(distributed.gather_streams(trainer.hidden)),  # (L, B, H)
        processes=trainer.world_size, eval_loss=[tally.eval_sum, tally.eval_steps],
        curve=tally.curve, curve_window=[tally.curve_sum, tally.curve_steps], rng=rng,
        history=trainer.history, best_val_loss=trainer.best_val_loss,
        time_spent=trainer.time_spent, lr_scale=trainer.guard.lr_scale,
        rollbacks=trainer.guard.rollbacks,
        scaler=trainer.scaler.state_dict() if trainer.scaler is not None else None,
        parent=trainer.parent, gradients=trainer.gradients.state_dict())


def restore(trainer: Trainer, saved: Checkpoint, rolling_back: bool = False) -> None:
    """Put a saved run's state into a trainer: one just built with its settings, on a
    resume (the precision and the gradient scaler are set up after this, from `saved`),
    or the running one, `rolling_back` to its last save (all but LIVE_ON_ROLLBACK)."""
    saved.check_resumable()
    try:
        trainer.model.load_state_dict(saved.model)
        trainer.optimizer.load_state_dict(saved.optimizer)
        trainer.batches.load_state_dict(saved.data)
        trainer.step = int(saved.step)
        trainer.history = list(saved.history)
        trainer.best_val_loss = saved.best_val_loss
        if not rolling_back:
            trainer.clock.elapsed, trainer.time_spent = float(saved.elapsed), saved.time_spent
            trainer.guard.lr_scale = float(saved.lr_scale)
            trainer.guard.rollbacks = int(saved.rollbacks)
        mine = distributed.own_streams(saved.hidden, trainer.config.batch_size,
                                       trainer.batches.streams)
        trainer.hidden = state_from_list(mine, trainer.model_config.model, trainer.device)
        trainer.losses = LossTally(*saved.eval_loss, list(saved.curve), *saved.curve_window)
        if saved.gradients is not None:  # absent from checkpoints before issue 29
            trainer.gradients.load_state_dict(saved.gradients)
        distributed.restore_rng_states(saved.rng, trainer.config.seed, trainer.step,
                                       trainer.device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"the checkpoint cannot resume this run: {exc}") from exc
