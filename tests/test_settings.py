"""Tests for charlstm.settings: the config dataclasses, their defaults and `resolve`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from charlstm.cli import flag_for
from charlstm.training.presets import PRESETS, DEFAULT_PRESET
from charlstm.settings import (MAX_SEED, Layer, ModelConfig, SettingError, TrainConfig,
                               defaults, resolve, saved_layer)


def test_the_dataclass_defaults_are_the_default_preset():
    model, train = defaults()
    assert DEFAULT_PRESET == "small"
    # neither the cell nor the output layer's rank is a preset's to choose
    assert PRESETS["small"]["model"] == {k: v for k, v in model.items()
                                         if k not in ("model", "head_rank")}
    assert PRESETS["small"]["train"] == train
    assert (model["num_layers"], model["hidden_size"], train["seq_len"]) == (1, 512, 32)


def test_every_preset_spells_out_every_setting():
    for spec in PRESETS.values():
        assert set(spec["train"]) == set(TrainConfig().to_dict())
        assert "model" not in spec["model"]  # the cell is not a preset's to choose


def test_layers_apply_in_order():
    preset = Layer({"hidden_size": 128, "dropout": 0.0}, {"lr": 1e-2, "batch_size": 16})
    plan = Layer({"hidden_size": 256}, {"lr": 3e-3, "eval_every": 7})
    explicit = Layer({"dropout": 0.2}, {"eval_every": 9})
    model, train = resolve(preset, explicit, plan=plan, vocab_size=40)
    assert (model.vocab_size, model.hidden_size, model.dropout) == (40, 256, 0.2)
    assert (train.lr, train.batch_size, train.eval_every) == (3e-3, 16, 9)
    assert train.seq_len == TrainConfig().seq_len  # nobody said: the default


def test_an_early_batch_not_given_goes_with_the_batch_it_came_with():
    """A plan's early batch of 32 was chosen for its batch of 128: another batch given
    drops it (100 streams could not even be shared by it), the same batch keeps it, and
    an early batch given stays."""
    plan = Layer({}, {"batch_size": 128, "early_batch": 32})
    for given, early in (({"batch_size": 100}, 0), ({"batch_size": 128}, 32), ({}, 32),
                         ({"batch_size": 64, "early_batch": 16}, 16)):
        _, train = resolve(Layer({}, {}), Layer({}, given), plan=plan, vocab_size=10)
        assert train.early_batch == early, given


def test_an_early_batch_must_divide_the_batch():
    with pytest.raises(SettingError, match="early_batch"):
        TrainConfig(batch_size=128, early_batch=48)
    assert TrainConfig(batch_size=128, early_batch=32).early_batch == 32


def test_explicit_limits_replace_all_earlier_ones():
    _, train = resolve(Layer({}, {"max_steps": 500}), Layer({}, {"time_limit": 60.0}),
                       vocab_size=10)
    assert (train.max_steps, train.epochs, train.time_limit) == (None, None, 60.0)


def test_a_saved_run_keeps_its_architecture():
    saved = saved_layer(ModelConfig(vocab_size=30, hidden_size=64).to_dict(),
                        TrainConfig(lr=5e-3).to_dict())
    model, train = resolve(Layer({}, {}), Layer({"dropout": 0.3}, {"max_steps": 9}),
                           saved=saved)
    assert (model.vocab_size, model.hidden_size, model.dropout) == (30, 64, 0.3)
    assert (train.lr, train.max_steps) == (5e-3, 9)
    with pytest.raises(SettingError, match="hidden_size 32 differs from the run's 64"):
        resolve(Layer({}, {}), Layer({"hidden_size": 32}, {}), saved=saved)


def test_a_run_saved_before_weight_drop_existed_keeps_training_without_it():
    saved_model = ModelConfig(vocab_size=5, dropout=0.1).to_dict()
    del saved_model["weight_drop"], saved_model["locked_dropout"]
    model, _ = resolve(Layer({}, {}), Layer({}, {}),
                       saved=saved_layer(saved_model, TrainConfig().to_dict()))
    assert (model.weight_drop, model.locked_dropout, model.dropout) == (0.0, False, 0.1)


def test_a_run_saved_before_beta1_existed_keeps_training_with_0_9():
    train_config = TrainConfig().to_dict()
    del train_config["beta1"]
    _, train = resolve(Layer({}, {}), Layer({}, {}),
                       saved=saved_layer(ModelConfig(vocab_size=5).to_dict(), train_config))
    assert train.beta1 == 0.9


def test_the_preset_regularisation_follows_the_passes_a_run_makes():
    def schedule(epochs):
        return {"dropout": round(epochs, 2), "weight_drop": round(epochs / 2, 2)}

    model, _ = resolve(Layer({}, {"max_steps": 10, "batch_size": 2, "seq_len": 5}),
                       Layer({}, {}), vocab_size=3, preset_regularisation=schedule,
                       corpus_chars=1000)
    assert model.dropout == round(10 * 2 * 5 / 900, 2)
    assert model.weight_drop == round(10 * 2 * 5 / 900 / 2, 2)
    given, _ = resolve(Layer({}, {"max_steps": 10, "batch_size": 2, "seq_len": 5}),
                       Layer({"dropout": 0.5}, {}), vocab_size=3,
                       preset_regularisation=schedule, corpus_chars=1000)
    assert given.dropout == 0.5 and given.weight_drop == model.weight_drop


@pytest.mark.parametrize("bad, setting, flag", [
    ({"min_lr_ratio": 2.0}, "min_lr_ratio", "--min-lr-ratio"),
    ({"time_limit": -1.0}, "time_limit", "--time"),
    ({"lr": 0.0}, "lr", "--lr"),
    ({"seed": MAX_SEED}, "seed", "--seed"),
    ({"eval_chars": -1}, "eval_chars", "--eval-chars"),
])
def test_errors_name_the_setting_and_the_command_line_its_flag(bad, setting, flag):
    with pytest.raises(SettingError) as caught:
        TrainConfig(**bad)
    message = str(caught.value)
    assert message.startswith(f"{setting} must be") and "--" not in message
    assert caught.value.spelled(flag_for).startswith(f"{flag} must be")


def test_model_errors_name_the_setting():
    with pytest.raises(SettingError, match=r"^hidden_size must be in \[1, 65,536\], not 0"):
        ModelConfig(vocab_size=3, hidden_size=0)


def test_settings_need_no_torch():
    code = ("import sys, charlstm.settings, charlstm.training.presets; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
