"""One record for a run's state (charlstm.training.state): what a save writes, a resume
reads and the divergence guard rolls back to are the same Checkpoint, and nothing of the
trainer's state can be left out of it unnoticed."""

from __future__ import annotations

import copy
from dataclasses import fields

import torch

from charlstm.checkpoint import Checkpoint
from charlstm.training import state

from test_guard import make

# checkpoint fields that describe the run rather than hold a trainer attribute
ABOUT_THE_RUN = {"charlstm_version", "saved_at", "model_config", "train_config", "vocab",
                 "corpus", "processes", "rng", "format_version"}


def test_every_attribute_of_a_trainer_is_saved_state_or_set_up(tiny_corpus, tmp_path):
    trainer = make(tiny_corpus, tmp_path)
    attributes = set(vars(trainer))
    unlisted = attributes - set(state.SAVED) - state.SET_UP
    assert not unlisted, f"add {sorted(unlisted)} to state.SAVED or state.SET_UP"
    stale = (set(state.SAVED) | state.SET_UP) - attributes
    assert not stale, f"state.py lists attributes the trainer no longer has: {stale}"


def test_every_checkpoint_field_is_written_from_the_trainer_or_describes_the_run():
    written = {name for names in state.SAVED.values() for name in names}
    assert written | ABOUT_THE_RUN == {f.name for f in fields(Checkpoint)}
    assert set(state.LIVE_ON_ROLLBACK) <= written


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # NaN equals NaN here


def test_a_resume_restores_every_saved_field(tiny_corpus, tmp_path):
    trained = make(tiny_corpus, tmp_path, max_steps=6, eval_every=3)
    trained.fit()
    saved = state.capture(trained)
    fresh = make(tiny_corpus, tmp_path / "again", max_steps=6, eval_every=3)
    state.restore(fresh, saved)
    fresh.precision, fresh.scaler = trained.precision, trained.scaler
    again = state.capture(fresh)
    differ = [f.name for f in fields(Checkpoint) if f.name not in {"saved_at", "rng"}
              and not equal(getattr(saved, f.name), getattr(again, f.name))]
    assert not differ, differ


def test_a_rollback_restores_the_saved_record_and_every_generator(tiny_corpus, tmp_path):
    trainer = make(tiny_corpus, tmp_path, max_steps=4, eval_every=2)
    trainer.fit()
    kept = copy.deepcopy(state.capture(trainer))  # capture shares the live lists
    trainer.guard.keep(kept)
    expected_draw = torch.rand(3)  # what the generator gives next after the save
    torch.set_rng_state(kept.rng["torch"])
    trainer.step += 7
    trainer.history.append({"step": 99})
    with torch.no_grad():
        next(trainer.model.parameters()).add_(1.0)
    torch.rand(5)  # the generator moves on
    trainer.guard.lr_scale, trainer.guard.rollbacks = 0.5, 1  # what the guard decided
    trainer.roll_back()
    assert torch.equal(torch.rand(3), expected_draw)
    after = state.capture(trainer)
    assert after.step == kept.step and after.history == kept.history
    assert equal(after.model, kept.model) and equal(after.optimizer, kept.optimizer)
    assert (trainer.guard.lr_scale, trainer.guard.rollbacks) == (0.5, 1)  # live, not restored
