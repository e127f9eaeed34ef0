"""Tests for charlstm.training.loop (and the run handling in charlstm.training.setup).

Tiny models on the tiny corpus, CPU, seeded: the loss falls, metrics are written, the
learning-rate schedule has its shape, and a stopped-and-resumed run is bitwise identical to
one trained straight through.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

import charlstm
from charlstm import checkpoint
from charlstm.training import optim, setup as runs
from charlstm.errors import UsageError
from charlstm.settings import TrainConfig
from charlstm.training.loop import TrainingCallback

from conftest import TINY_SETTINGS, TINY_TEXT

LN2 = math.log(2)


def dirs(tmp_path: Path) -> dict:
    return dict(corpora_dir=tmp_path / "corpora", checkpoints_dir=tmp_path / "checkpoints")


def train(corpus: Path, out: Path, tmp_path: Path, **overrides):
    return charlstm.train(str(corpus), out=out, **dirs(tmp_path),
                          **{**TINY_SETTINGS, **overrides})


def read_metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines]


class Recorder(TrainingCallback):
    """Keeps every event; can ask the trainer to stop once a step is reached."""

    def __init__(self, stop_at: int | None = None):
        self.stop_at, self.trainer = stop_at, None
        self.started, self.steps, self.evals, self.samples, self.ended = [], [], [], [], []

    def on_start(self, info):
        self.started.append(info)

    def on_step(self, stats):
        self.steps.append(stats)
        if self.stop_at is not None and stats.step >= self.stop_at:
            self.trainer.request_stop()

    def on_eval(self, record):
        self.evals.append(record)

    def on_sample(self, step, text):
        self.samples.append((step, text))

    def on_end(self, result):
        self.ended.append(result)


# ---------------------------------------------------------------- learning works


def test_tiny_model_overfits_tiny_text(trained_run):
    history = read_metrics(trained_run)
    losses = [record["val_loss"] for record in history]
    assert len(losses) == TINY_SETTINGS["max_steps"] // TINY_SETTINGS["eval_every"]
    assert losses[-1] < 0.5  # memorised: 30 characters, ln(30) = 3.4 nats if uniform
    assert losses[-1] < losses[0]
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_metrics_one_line_per_evaluation(trained_run):
    history = read_metrics(trained_run)
    every = TINY_SETTINGS["eval_every"]
    assert [r["step"] for r in history] == list(range(every, TINY_SETTINGS["max_steps"] + 1,
                                                       every))
    for record in history:
        assert record["val_bpc"] == pytest.approx(record["val_loss"] / LN2, rel=1e-12)
        assert record["train_bpc"] == pytest.approx(record["train_loss"] / LN2, rel=1e-12)
        assert record["val_loss"] > 0
    # the checkpoint carries the same history
    last = checkpoint.load(trained_run / "last.pt")
    assert [r["val_loss"] for r in last["history"]] == [r["val_loss"] for r in history]
    assert last["step"] == TINY_SETTINGS["max_steps"]


def test_best_checkpoint_has_lowest_val_loss(trained_run):
    history = read_metrics(trained_run)
    lowest = min(history, key=lambda r: r["val_loss"])
    best = checkpoint.load(trained_run / "best.pt")
    assert best["step"] == lowest["step"]
    assert best["best_val_loss"] == lowest["val_loss"]
    assert [r["best"] for r in history] == [
        r["val_loss"] == min(h["val_loss"] for h in history[:i + 1])
        for i, r in enumerate(history)]


def test_trained_model_reproduces_text(trained_run):
    lm = charlstm.load(trained_run, device="cpu")
    prime = "the quick brown "
    text = lm.sample(prime, length=20, temperature=0)
    assert text == TINY_TEXT[len(prime):len(prime) + 20]


def test_callbacks_and_no_printing(tiny_corpus, tmp_path, capsys):
    recorder = Recorder()
    result = charlstm.train(str(tiny_corpus), out=tmp_path / "run", callback=recorder,
                            **dirs(tmp_path), **{**TINY_SETTINGS, "max_steps": 30,
                                                  "eval_every": 20})
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert len(recorder.started) == 1 and recorder.ended == [result]
    assert [s.step for s in recorder.steps] == [10, 20, 30]
    assert [e["step"] for e in recorder.evals] == [20, 30]
    assert [step for step, _ in recorder.samples] == [20, 30]
    assert all(len(text) == TINY_SETTINGS["sample_length"] for _, text in recorder.samples)
    assert all(s.loss > 0 and s.chars_per_sec > 0 for s in recorder.steps)
    assert result.reason == "max_steps" and result.step == 30
    info = recorder.started[0]
    assert info["vocab_size"] == len(set(TINY_TEXT))
    assert info["train_chars"] + info["val_chars"] == len(TINY_TEXT)


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_train(tiny_corpus, tmp_path, cell):
    result = train(tiny_corpus, tmp_path / "run", tmp_path, model=cell)
    losses = [r["val_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert losses[-1] < 1.0
    assert checkpoint.load(result.best_path)["model_config"]["model"] == cell
    lm = charlstm.load(result.run_dir, device="cpu")
    assert len(lm.sample("the ", length=30, seed=1)) == 30


# ------------------------------------------------------------- learning-rate schedule


@pytest.mark.parametrize("preset, given, expected", [
    ("small", None, 0.8),  # the small preset's own momentum
    ("medium", None, 0.9),
    ("small", 0.5, 0.5),  # an explicit --beta1 wins
])
def test_adam_momentum_comes_from_the_preset_unless_given(tiny_corpus, tmp_path, preset, given,
                                                          expected):
    settings = {"max_steps": 1, "batch_size": 2, "seq_len": 8, "beta1": given}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", preset=preset,
                                settings=settings, **dirs(tmp_path))
    assert trainer.config.beta1 == expected
    assert {group["betas"] for group in trainer.optimizer.param_groups} == {(expected, 0.99)}


@pytest.mark.parametrize("given, expected", [(None, 0.99), (0.95, 0.95)])
def test_adam_second_moment_decay_is_0_99_unless_given(tiny_corpus, tmp_path, given, expected):
    settings = {"max_steps": 1, "batch_size": 2, "seq_len": 8, "beta2": given}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", **dirs(tmp_path),
                                settings=settings)
    assert trainer.config.beta2 == expected
    assert {group["betas"][1] for group in trainer.optimizer.param_groups} == {expected}


def test_learning_rate_schedule(tiny_corpus, tmp_path):
    lr, warmup, steps, ratio = 1e-2, 10, 100, 0.1
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", **dirs(tmp_path),
                                settings={**TINY_SETTINGS, "lr": lr, "warmup_steps": warmup,
                                          "max_steps": steps, "min_lr_ratio": ratio})
    rates = []
    for step in range(steps + 1):
        trainer.step = step
        rates.append(trainer.learning_rate())
    # warm-up: rises linearly from lr / warmup (the cosine barely moves in 10 steps)
    assert rates[0] == pytest.approx(lr / warmup, rel=0.01)
    for step in range(warmup):
        assert rates[step] == pytest.approx(lr * (step + 1) / warmup, rel=0.03)
    assert all(a < b for a, b in zip(rates[:warmup - 1], rates[1:warmup]))
    # then a cosine decay: half-way between lr and the floor at the middle of the run
    assert all(a >= b for a, b in zip(rates[warmup - 1:], rates[warmup:]))
    assert rates[steps // 2] == pytest.approx((lr + lr * ratio) / 2, rel=1e-9)
    assert rates[steps] == pytest.approx(lr * ratio, rel=1e-9)
    assert max(rates) <= lr


def test_the_schedule_is_a_pure_function_of_where_the_run_is():
    config = TrainConfig(lr=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    assert optim.learning_rate(0, 0.0, config) == pytest.approx(1e-3)
    assert optim.learning_rate(50, 0.5, config) == pytest.approx((1e-2 + 1e-3) / 2)
    assert optim.learning_rate(99, 1.0, config) == pytest.approx(1e-3)
    assert optim.learning_rate(50, 0.5, config, lr_scale=0.5) == pytest.approx(
        optim.learning_rate(50, 0.5, config) / 2)


def test_learning_rate_recorded_during_training(trained_run):
    history = read_metrics(trained_run)
    lr, floor = TINY_SETTINGS["lr"], TINY_SETTINGS["lr"] * 0.1
    # the last step ran just before the end of the schedule: close to the floor
    assert history[-1]["lr"] == pytest.approx(floor, rel=0.01)
    assert floor < history[0]["lr"] < lr


# ---------------------------------------------------------------------- exact resume


def params(run_dir: Path) -> dict:
    return checkpoint.load(run_dir / "last.pt")["model"]


@pytest.mark.parametrize("variant, stop_at", [
    ({}, 50),
    ({}, 30),  # between evaluations: the training-loss window straddles the resume
    ({"shuffle": True, "bptt_warmup": 8}, 50),
    ({"num_layers": 2, "dropout": 0.3}, 50),
    ({"num_layers": 2, "dropout": 0.3}, 30),
    ({"bptt_warmup": 4}, 50),  # contiguous with warm-up; 100 steps cross epoch boundaries
    ({"num_layers": 2, "dropout": 0.2, "weight_drop": 0.3}, 30),  # the masks continue
    ({"dropout": 0.2, "locked_dropout": False}, 30),
    # stopped while 2 of the 8 streams train, resumed across the end of that share
    ({"early_batch": 2, "early_share": 0.45, "stream_block": 32}, 30),
], ids=["contiguous", "contiguous-stop-30", "shuffle-warmup", "dropout", "dropout-stop-30",
        "contiguous-warmup", "weight-drop-stop-30", "fresh-dropout-stop-30",
        "early-batch-blocks-stop-30"])
def test_resume_is_exact(tiny_corpus, tmp_path, variant, stop_at):
    settings = {**TINY_SETTINGS, **variant}
    straight = train(tiny_corpus, tmp_path / "straight", tmp_path, **variant)
    assert straight.step == 100

    recorder = Recorder(stop_at=stop_at)
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "stopped", settings=settings,
                                callback=recorder, **dirs(tmp_path))
    recorder.trainer = trainer
    first = trainer.fit()
    assert (first.reason, first.step) == ("interrupted", stop_at)
    assert checkpoint.load(tmp_path / "stopped" / "last.pt")["step"] == stop_at

    resumed = runs.make_trainer(str(tiny_corpus), out=tmp_path / "stopped", resume=True,
                                **dirs(tmp_path)).fit()
    assert (resumed.reason, resumed.step) == ("max_steps", 100)

    expected, got = params(tmp_path / "straight"), params(tmp_path / "stopped")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    assert [r["train_loss"] for r in resumed.history] == [
        r["train_loss"] for r in straight.history]
    assert [r["step"] for r in read_metrics(tmp_path / "stopped")] == [50, 100]


def test_an_early_batch_trains_only_its_streams_for_the_early_share(tiny_corpus, tmp_path):
    """--early-batch 2 of 8 streams for the first quarter of 20 steps: the first 5 steps
    train every fourth stream (0 and 4) only, the waiting streams keep their state (here
    the zero state they start with) and the clock counts the characters trained, not
    those skipped."""
    settings = {**TINY_SETTINGS, "early_batch": 2, "early_share": 0.25, "max_steps": 20,
                "eval_every": 20}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                **dirs(tmp_path))
    seen, model = [], trainer.trained

    def recording(idx, state, targets):
        seen.append((idx.size(0), state))
        return model(idx, state, targets)

    trainer.trained = recording
    assert trainer.fit().step == 20
    assert [streams for streams, _ in seen] == [2] * 5 + [8] * 15
    assert trainer.clock.trained_chars == (5 * 2 + 15 * 8) * TINY_SETTINGS["seq_len"]
    h, c = seen[5][1]  # the state the first step of all 8 streams starts from
    trained, waited = [0, 4], [1, 2, 3, 5, 6, 7]
    assert h.shape[1] == 8 and torch.count_nonzero(h[:, waited]) == 0
    assert all(torch.count_nonzero(s[:, [k]]) > 0 for s in (h, c) for k in trained)


def test_resume_can_extend_a_finished_run(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = runs.make_trainer(out=run, resume=True, settings={"max_steps": 120},
                               **dirs(tmp_path)).fit()
    assert (result.reason, result.step) == ("max_steps", 120)
    assert [r["step"] for r in read_metrics(run)] == [50, 100, 120]


def test_resume_finished_run_is_already_finished(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = (run / "last.pt").read_bytes()
    recorder = Recorder()
    result = runs.make_trainer(out=run, resume=True, callback=recorder,
                               **dirs(tmp_path)).fit()
    assert result.reason == "already finished"
    assert result.step == TINY_SETTINGS["max_steps"]
    assert recorder.ended == [result] and recorder.steps == []
    assert (run / "last.pt").read_bytes() == before
    assert len(read_metrics(run)) == len(read_metrics(trained_run))


def test_resume_with_other_architecture_is_usage_error(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with pytest.raises(UsageError, match="hidden_size"):
        runs.make_trainer(out=run, resume=True, settings={"hidden_size": 32},
                          **dirs(tmp_path))
    with pytest.raises(UsageError, match="model"):
        runs.make_trainer(out=run, resume=True, settings={"model": "gru"}, **dirs(tmp_path))


def test_resume_with_other_corpus_is_usage_error(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    other = tmp_path / "other.txt"
    other.write_text(TINY_TEXT.upper(), encoding="utf-8")
    with pytest.raises(UsageError, match="not the text"):
        runs.make_trainer(str(other), out=run, resume=True, **dirs(tmp_path))


def test_resume_of_a_checkpoint_that_is_not_there_is_usage_error(tmp_path):
    # (a run folder with no checkpoint yet is started instead: see test_restart.py)
    with pytest.raises(UsageError, match="nothing to resume"):
        runs.make_trainer(out=tmp_path / "empty" / "last.pt", resume=True, **dirs(tmp_path))


def test_new_run_refuses_to_overwrite(trained_run, tiny_corpus, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with pytest.raises(UsageError, match="add resume to continue"):
        runs.make_trainer(str(tiny_corpus), out=run, settings=dict(TINY_SETTINGS),
                          **dirs(tmp_path))


# -------------------------------------------------------------------------- limits


def test_time_limit_stops(tiny_corpus, tmp_path):
    started = time.monotonic()
    result = train(tiny_corpus, tmp_path / "run", tmp_path, max_steps=10**6, time_limit=1.0)
    wall = time.monotonic() - started
    assert result.reason == "time"
    assert 0 < result.step < 10**6
    assert result.history[-1]["elapsed"] >= 0.45  # 1 s less the reserve for evaluating
    assert wall < 15  # a second of training, plus start-up, the evaluation and the save
    assert checkpoint.load(result.last_path)["step"] == result.step


def test_epochs_limit(tiny_corpus, tmp_path):
    settings = {**TINY_SETTINGS, "max_steps": None, "epochs": 0.5}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                **dirs(tmp_path))
    steps_per_epoch = trainer.batches.steps_per_epoch
    assert trainer.config.max_steps is None
    result = trainer.fit()
    assert result.reason == "epochs"
    assert result.step == math.ceil(0.5 * steps_per_epoch)
    assert result.history[-1]["epoch"] >= 0.5


def test_no_validation_split(tiny_corpus, tmp_path):
    result = train(tiny_corpus, tmp_path / "run", tmp_path, val_frac=0.0, max_steps=30,
                   eval_every=10)
    assert result.reason == "max_steps" and result.step == 30
    assert result.best_val_loss is None
    assert result.best_path is None
    assert not (tmp_path / "run" / "best.pt").exists()
    assert (tmp_path / "run" / "last.pt").exists()
    history = read_metrics(tmp_path / "run")
    assert [r["step"] for r in history] == [10, 20, 30]
    assert all(r["val_loss"] is None and r["val_bpc"] is None for r in history)
    assert all(r["train_loss"] > 0 for r in history)
    lm = charlstm.load(tmp_path / "run", device="cpu")  # falls back to last.pt
    assert len(lm.sample("the", length=10, seed=0)) == 10


def test_same_seed_same_run(tiny_corpus, tmp_path):
    a = train(tiny_corpus, tmp_path / "a", tmp_path, max_steps=20, eval_every=20)
    b = train(tiny_corpus, tmp_path / "b", tmp_path, max_steps=20, eval_every=20)
    c = train(tiny_corpus, tmp_path / "c", tmp_path, max_steps=20, eval_every=20, seed=7)
    assert a.history[-1]["val_loss"] == b.history[-1]["val_loss"]
    assert a.history[-1]["val_loss"] != c.history[-1]["val_loss"]


def test_corpus_too_short_for_batches(tmp_path):
    corpus = tmp_path / "short.txt"
    corpus.write_text("abc" * 20, encoding="utf-8")
    with pytest.raises(UsageError, match="too few"):
        train(corpus, tmp_path / "run", tmp_path)


# ---------------------------------------------------------------------- precision


@pytest.mark.parametrize("capability", ["AVX2", "DEFAULT"])
def test_auto_precision_is_fp32_without_native_bf16(tiny_corpus, tmp_path, monkeypatch,
                                                    capability):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run",
                                settings={**TINY_SETTINGS, "precision": "auto"},
                                **dirs(tmp_path))
    assert trainer.precision == "fp32"
    assert "no native bf16" in trainer.precision_note


def test_auto_precision_measurement_leaves_the_run_unchanged(tiny_corpus, tmp_path):
    """Measuring bf16 against fp32 must not shift the seeded run (RNG, gradients)."""
    measured = train(tiny_corpus, tmp_path / "auto", tmp_path, precision="auto", max_steps=20,
                     eval_every=20)
    chosen = checkpoint.load(measured.last_path)["precision"]
    assert chosen in ("fp32", "bf16")
    fixed = train(tiny_corpus, tmp_path / "fixed", tmp_path, precision=chosen,
                  max_steps=20, eval_every=20)
    auto_params = checkpoint.load(measured.last_path)["model"]
    fixed_params = checkpoint.load(fixed.last_path)["model"]
    assert all(torch.equal(auto_params[k], fixed_params[k]) for k in auto_params)
