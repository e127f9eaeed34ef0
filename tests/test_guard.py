"""Tests for the divergence guard: a non-finite loss or gradient never reaches the model.

NaN is injected for real, into the loss of chosen steps or into the weights, and the run
must skip, roll back with a lower learning rate, or give up cleanly with its last good
checkpoint intact.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from charlstm import checkpoint
from charlstm.training import setup as runs, step as training_step
from charlstm.training.optim import make_optimizer
from charlstm.errors import TrainingDiverged
from charlstm.training.guard import BAD_STEPS_BEFORE_ROLLBACK, MAX_ROLLBACKS
from charlstm.training.loop import TrainingCallback

from conftest import TINY_SETTINGS, run_cli


class Notices(TrainingCallback):
    def __init__(self):
        self.notices, self.steps = [], []

    def on_notice(self, message):
        self.notices.append(message)

    def on_step(self, stats):
        self.steps.append(stats)


def make(tiny_corpus: Path, tmp_path: Path, callback=None, **overrides):
    return runs.make_trainer(str(tiny_corpus), out=tmp_path / "run",
                             settings={**TINY_SETTINGS, **overrides}, callback=callback,
                             corpora_dir=tmp_path / "corpora",
                             checkpoints_dir=tmp_path / "checkpoints")


def poison_loss(trainer, bad_steps, once=True):
    """Make the loss (and so every gradient) NaN on the given 1-based steps: the first
    time each is trained (a glitch), or every time (`once=False`: a lasting fault)."""
    forward = trainer.model.forward
    done = set()

    def poisoned(idx, state=None, targets=None):
        logits, loss, state = forward(idx, state, targets)
        step = trainer.step + 1
        if targets is not None and step in bad_steps and not (once and step in done):
            done.add(step)
            loss = loss * math.nan
        return logits, loss, state

    trainer.model.forward = poisoned


def all_finite(model) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_a_single_bad_step_is_skipped(tiny_corpus, tmp_path):
    notices = Notices()
    trainer = make(tiny_corpus, tmp_path, notices)
    poison_loss(trainer, {7})
    result = trainer.fit()
    assert result.reason == "max_steps" and result.step == TINY_SETTINGS["max_steps"]
    assert all_finite(trainer.model)
    assert len(notices.notices) == 1 and "step 7" in notices.notices[0]
    assert "skipped" in notices.notices[0]
    assert trainer.guard.rollbacks == 0 and trainer.guard.lr_scale == 1.0
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
               for r in result.history)


def unfused(trainer):
    """Give the trainer a plain AdamW, which cannot skip a step on the device: the step
    then reads the bad-step flag itself."""
    # charlstm's own optimizer, as it builds it for a device without a fused kernel
    trainer.optimizer = make_optimizer(trainer.model, trainer.config.lr,
                                       trainer.config.weight_decay, torch.device("meta"))
    assert not trainer.optimizer.defaults["fused"]
    return trainer


@pytest.mark.parametrize("fused", [True, False])
def test_skipped_step_changes_nothing(tiny_corpus, tmp_path, fused):
    """The update, the carried state and the loss reports all ignore a skipped step,
    whether the fused optimizer skips it on the device or the step itself does."""
    constant_lr = dict(warmup_steps=0, min_lr_ratio=1.0, eval_every=100)
    trainer = make(tiny_corpus, tmp_path, max_steps=5, **constant_lr)
    clean = make(tiny_corpus, tmp_path / "clean", max_steps=4, **constant_lr)
    assert training_step.skips_on_device(trainer.optimizer)  # torch 2.4+ fuses AdamW on the CPU
    if not fused:
        unfused(trainer), unfused(clean)
    poison_loss(trainer, {5})
    trainer.fit()  # steps 1-4 train, step 5 is skipped, then the run ends
    clean.fit()
    for name, value in clean.optimizer.state_dict()["state"].items():
        for key, tensor in value.items():  # the skipped step left no trace in AdamW either
            assert torch.equal(tensor, trainer.optimizer.state_dict()["state"][name][key])
    for name, value in clean.model.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[name]), name
    assert trainer.losses.eval_steps == 0  # folded into the final evaluation
    assert trainer.history[-1]["train_loss"] == clean.history[-1]["train_loss"]


# what reads a tensor's value on the host: on a GPU each waits for the device to catch up
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def count_host_reads(monkeypatch) -> list[str]:
    """Record every read of a tensor's value made inside a training step."""
    reads, step = [], training_step.train_step

    def watched(*args):
        originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

        def counting(name):
            def read(tensor, *args, **kwargs):
                reads.append(name)
                return originals[name](tensor, *args, **kwargs)
            return read

        for name in HOST_READS:
            setattr(torch.Tensor, name, counting(name))
        try:
            return step(*args)
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)

    monkeypatch.setattr(training_step, "train_step", watched)
    return reads


@pytest.mark.parametrize("scaled", [False, True])
def test_a_training_step_never_waits_for_the_device(tiny_corpus, tmp_path, scaled,
                                                   monkeypatch):
    """A step leaves its loss and its bad-step flag on the device, a skipped step
    included; the loop reads them every LOG_EVERY steps. The watch itself is checked on
    a plain AdamW, whose step has to read the flag."""
    notices = Notices()
    trainer = make(tiny_corpus, tmp_path, notices, max_steps=30, eval_every=30)
    if scaled:  # fp16's path: the gradient scaler, whose skip is on the device as well
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    poison_loss(trainer, {7})
    reads = count_host_reads(monkeypatch)
    result = trainer.fit()
    monkeypatch.undo()
    assert reads == []
    assert result.step == 30 and len(notices.notices) == 1 and "step 7" in notices.notices[0]
    assert all_finite(trainer.model)
    plain = unfused(make(tiny_corpus, tmp_path / "plain", max_steps=30, eval_every=30))
    plain_reads = count_host_reads(monkeypatch)
    plain.fit()
    # its step reads the flag (and torch's unfused AdamW reads its step counts, which
    # live on the host): the watch sees reads where there are some
    assert plain_reads.count("__bool__") == 30


def test_repeated_bad_steps_roll_back_with_a_lower_learning_rate(tiny_corpus, tmp_path):
    notices = Notices()
    trainer = make(tiny_corpus, tmp_path, notices, eval_every=20)
    bad = set(range(31, 31 + BAD_STEPS_BEFORE_ROLLBACK))
    poison_loss(trainer, bad)
    result = trainer.fit()
    assert result.reason == "max_steps" and result.step == TINY_SETTINGS["max_steps"]
    assert all_finite(trainer.model)
    assert trainer.guard.rollbacks == 1 and trainer.guard.lr_scale == 0.5
    rolled = [n for n in notices.notices if "rolled back" in n]
    assert len(rolled) == 1 and "to step 20" in rolled[0]  # the last save
    assert trainer.learning_rate() == pytest.approx(
        0.5 * trainer.config.lr * trainer.config.min_lr_ratio)
    saved = checkpoint.load(result.last_path)
    assert saved["lr_scale"] == 0.5 and saved["rollbacks"] == 1
    # the evaluation history has no repeats and no holes
    assert [r["step"] for r in result.history] == [20, 40, 60, 80, 100]


def test_poisoned_weights_are_rolled_back(tiny_corpus, tmp_path):
    """NaN weights make every later step bad: the rollback restores the saved weights."""

    class Poisoner(Notices):
        def on_step(self, stats):
            super().on_step(stats)
            if stats.step == 30 and not self.notices:
                with torch.no_grad():
                    trainer.model.head.weight.fill_(math.nan)

    callback = Poisoner()
    trainer = make(tiny_corpus, tmp_path, callback, eval_every=20)
    result = trainer.fit()
    assert result.step == TINY_SETTINGS["max_steps"] and trainer.guard.rollbacks == 1
    assert all_finite(trainer.model)
    assert result.history[-1]["val_loss"] < 1.0  # it still learned the tiny text


def test_gives_up_after_bounded_rollbacks_and_keeps_the_last_good_checkpoint(tiny_corpus,
                                                                              tmp_path):
    notices = Notices()
    trainer = make(tiny_corpus, tmp_path, notices, eval_every=10)
    poison_loss(trainer, set(range(15, 10**6)), once=False)
    with pytest.raises(TrainingDiverged, match="diverged") as caught:
        trainer.fit()
    message = str(caught.value)
    assert f"after {MAX_ROLLBACKS} rollbacks" in message and "last.pt" in message
    assert len([n for n in notices.notices if "rolled back" in n]) == MAX_ROLLBACKS
    saved = checkpoint.load(tmp_path / "run" / "last.pt")
    assert saved["step"] == 10
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


def test_guard_state_survives_a_resume(tiny_corpus, tmp_path):
    trainer = make(tiny_corpus, tmp_path, eval_every=20, max_steps=60)
    poison_loss(trainer, set(range(31, 31 + BAD_STEPS_BEFORE_ROLLBACK)))
    trainer.fit()
    resumed = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", resume=True,
                                settings={"max_steps": 100},
                                corpora_dir=tmp_path / "corpora",
                                checkpoints_dir=tmp_path / "checkpoints")
    assert resumed.guard.lr_scale == 0.5 and resumed.guard.rollbacks == 1


def test_absurd_learning_rate_fails_cleanly_on_the_command_line(tiny_corpus, tmp_path):
    """An lr of 1e6 (the largest taken) with no clipping diverges within a few steps,
    before the first evaluation: a clean exit 1."""
    flags = ["--num-layers", "1", "--hidden-size", "32", "--embed-size", "8", "-b", "8",
             "--seq-len", "16", "--max-steps", "200", "--eval-every", "100", "--lr", "1e6",
             "--grad-clip", "0", "--warmup-steps", "0", "--precision", "fp32",
             "--device", "cpu", "-q"]
    result = run_cli("train", str(tiny_corpus), "--out", "run", *flags, cwd=tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert "charlstm: warning" in stderr and "rolled back" in stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("charlstm: error") and "diverged" in lines[-1]
    assert "nothing was saved" in lines[-1]  # it diverged at once, before any evaluation
    assert not (tmp_path / "run" / "last.pt").exists()
    notices = [line for line in lines if "non-finite steps in a row" in line]
    assert len(notices) == MAX_ROLLBACKS  # each said once, as a warning
    assert all(line.startswith("charlstm: warning: ") for line in notices)
