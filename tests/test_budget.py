"""Tests for charlstm.training.budget and the budget-dependent settings in presets and runs.

Measuring is real (a few tiny steps); what is asserted is the decision made from the
measurements and that measuring leaves a run unchanged, never a speed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from charlstm.training import budget, clock as run_clock, evaluation, optim, setup as runs, loop as training, step as training_step
from charlstm import checkpoint
from charlstm.model.charrnn import CharRNN
from charlstm.settings import ModelConfig
from charlstm.training.presets import PRESETS, regularisation_for
from charlstm.settings import TrainConfig

from conftest import TINY_SETTINGS

CPU = torch.device("cpu")


def dirs(tmp_path: Path) -> dict:
    return dict(corpora_dir=tmp_path / "corpora", checkpoints_dir=tmp_path / "checkpoints")


# --------------------------------------------------------------------------- dropout


def dropout_for(spec: dict, epochs: float) -> float:
    return regularisation_for(spec, epochs)["dropout"]


@pytest.fixture
def small_with_weight_drop(monkeypatch):
    """The small preset with a weight-drop schedule steeper than medium's, so that the
    schedule is tested apart from the values the presets hold."""
    small = PRESETS["small"]
    monkeypatch.setitem(small["model"], "weight_drop", 0.3)
    monkeypatch.setitem(small["dropout_schedule"], "weight_drop_per_epoch", 0.03)
    return small


def test_only_medium_uses_weight_drop_and_only_after_many_passes():
    """Weight drop paid for medium after many passes (pydocs, about 20 at ten minutes)
    and cost small on tinyshakespeare (bench/RESULTS.md)."""
    for name, spec in PRESETS.items():
        if name != "medium":
            assert regularisation_for(spec, 1000)["weight_drop"] == 0.0
    medium = PRESETS["medium"]
    assert regularisation_for(medium, 1)["weight_drop"] == 0.0
    assert 0 < regularisation_for(medium, 5)["weight_drop"] < medium["model"]["weight_drop"]
    assert regularisation_for(medium, 20)["weight_drop"] == medium["model"]["weight_drop"]


@pytest.mark.parametrize("name", ["dropout", "weight_drop"])
def test_regularisation_is_off_while_the_text_is_new_then_rises_to_the_cap(
        name, small_with_weight_drop):
    spec = small_with_weight_drop
    free = spec["dropout_schedule"]["free_epochs"]
    cap = spec["model"][name]
    assert cap > 0
    assert regularisation_for(spec, 0.5)[name] == 0.0
    assert regularisation_for(spec, free)[name] == 0.0
    rising = [regularisation_for(spec, free + k)[name] for k in (1, 2, 4, 8)]
    assert rising == sorted(rising) and 0 < rising[0] < rising[-1]
    assert regularisation_for(spec, 10_000)[name] == cap


def test_preset_without_schedule_keeps_its_amounts():
    spec = {"model": {"dropout": 0.3, "weight_drop": 0.2}}
    assert regularisation_for(spec, 0.1) == regularisation_for(spec, 100) == {
        "dropout": 0.3, "weight_drop": 0.2}


def test_fixed_step_run_gets_dropout_from_its_planned_passes(tiny_corpus, tmp_path):
    settings = {k: v for k, v in TINY_SETTINGS.items() if k not in ("dropout", "num_layers",
                                                                    "hidden_size")}
    short = runs.make_trainer(str(tiny_corpus), out=tmp_path / "a", preset="small",
                              settings={**settings, "max_steps": 1}, **dirs(tmp_path))
    long = runs.make_trainer(str(tiny_corpus), out=tmp_path / "b", preset="small",
                             settings={**settings, "max_steps": 5000}, **dirs(tmp_path))
    assert short.model_config.dropout == 0.0  # 128 characters of a 5,700-character split
    assert long.model_config.dropout == PRESETS["small"]["model"]["dropout"]
    given = runs.make_trainer(str(tiny_corpus), out=tmp_path / "c", preset="small",
                              settings={**settings, "max_steps": 5000, "dropout": 0.05},
                              **dirs(tmp_path))
    assert given.model_config.dropout == 0.05


# ----------------------------------------------------------------------- measuring


def test_step_seconds_leaves_rng_and_gradients_alone():
    model = CharRNN(ModelConfig(vocab_size=20, num_layers=1, hidden_size=32, embed_size=8))
    torch.manual_seed(3)
    state = torch.get_rng_state()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = budget.step_seconds(model, 4, 8, CPU, "fp32")
    assert seconds > 0
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_step_seconds_with_optimizer_trains():
    model = CharRNN(ModelConfig(vocab_size=20, num_layers=1, hidden_size=32, embed_size=8))
    optimizer = optim.make_optimizer(model, 1e-2, 0.0, CPU)
    before = model.head.weight.detach().clone()
    budget.step_seconds(model, 4, 8, CPU, "fp32", optimizer, repeats=2)
    assert not torch.equal(before, model.head.weight)


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU with native bf16 (so precision auto measures) whose step timings are
    scripted: `script({precision: [seconds, ...]})` sets them and returns the list of
    the precisions timed, in order."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")

    def script(timings: dict[str, list[float]]) -> list[str]:
        timed = []

        def fake_step_seconds(model, batch_size, seq_len, device, precision, optimizer=None,
                              repeats=1, warmup=1):
            if not repeats:
                return float("inf")
            timed.append(precision)
            return timings[precision].pop(0)

        monkeypatch.setattr(budget, "step_seconds", fake_step_seconds)
        return timed

    return script


def test_precision_auto_is_not_fooled_by_one_slow_step(bf16_cpu):
    """A step that a busy moment made slow does not decide: bf16, twice as fast in its
    other steps, is chosen though its first timed step was slower than fp32's."""
    timed = bf16_cpu({"fp32": [1.0] * 5, "bf16": [1.2, 0.5, 0.5, 0.5, 0.5]})
    model = CharRNN(ModelConfig(vocab_size=20, num_layers=1, hidden_size=32, embed_size=8))
    precision, note = budget.cpu_precision(model, 4, 8, CPU)
    assert precision == "bf16" and "2.0x faster" in note
    assert timed == ["fp32", "bf16"] * budget.PRECISION_ROUNDS  # in turn


def test_precision_auto_keeps_fp32_when_bf16_is_not_clearly_faster(bf16_cpu):
    bf16_cpu({"fp32": [1.0] * 5, "bf16": [0.9] * 5})
    model = CharRNN(ModelConfig(vocab_size=20, num_layers=1, hidden_size=32, embed_size=8))
    precision, note = budget.cpu_precision(model, 4, 8, CPU)
    assert precision == "fp32" and "1.1x the speed" in note


def test_optimizer_decays_matrices_only():
    model = CharRNN(ModelConfig(vocab_size=20, num_layers=1, hidden_size=32, embed_size=8))
    optimizer = optim.make_optimizer(model, 1e-3, 0.05, CPU)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == model.num_parameters()


# ------------------------------------------------------------------------ planning


def test_short_budget_plans_the_smallest_candidate():
    plan = budget.plan(30.0, 100_000, 40, CPU, "fp32")
    assert plan.preset == "small"
    assert plan.model["hidden_size"] == PRESETS["small"]["model"]["hidden_size"]
    assert plan.precision == "fp32"
    assert plan.chars_per_sec > 0
    assert plan.epochs == pytest.approx(plan.chars_per_sec * 30 / 100_000)
    assert plan.model["dropout"] == dropout_for(PRESETS["small"], plan.epochs)
    steps = plan.chars_per_sec * 30 / (plan.train["batch_size"] * plan.train["seq_len"])
    assert plan.train["eval_every"] == max(1, round(steps / 4))  # four evaluations
    assert "small" in plan.note and "30 s" in plan.note and "chars/s" in plan.note


def test_long_budget_plans_a_bigger_model():
    """With time for far more than medium's minimum, medium is chosen over small."""
    plan = budget.plan(1e7, 1_000_000, 40, CPU, "fp32", candidates=["small", "medium"])
    assert plan.preset == "medium"
    assert plan.model["num_layers"] == PRESETS["medium"]["model"]["num_layers"]
    assert plan.model["dropout"] == PRESETS["medium"]["model"]["dropout"]  # many passes
    # evaluations at most ten minutes apart
    steps_per_second = plan.chars_per_sec / (plan.train["batch_size"] * plan.train["seq_len"])
    assert plan.train["eval_every"] <= round(600 * steps_per_second) + 1


def test_a_smaller_preset_with_text_left_to_learn_from_is_kept(monkeypatch):
    """Time enough for medium's minimum, but on a corpus so large that small makes
    few passes over it: small is kept, and medium is not even timed."""
    timed = []
    real = budget.step_seconds

    def recording(model, *args, **kwargs):
        timed.append(model.config.hidden_size * model.config.num_layers)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(budget, "step_seconds", recording)
    plan = budget.plan(1e7, 10**13, 40, CPU, "fp32", candidates=["small", "medium"])
    assert plan.preset == "small"
    assert plan.epochs <= PRESETS["small"]["outgrown_epochs"]
    # small is timed again at the larger batch the long budget gives it; medium never
    assert set(timed) == {PRESETS["small"]["model"]["hidden_size"]}
    assert f"the {PRESETS['small']['outgrown_epochs']:g} after which" in plan.note


def test_the_batch_doubles_while_the_budget_leaves_enough_steps():
    spec = {"train": {"batch_size": 32, "seq_len": 10},
            "batch_growth": {"min_steps": 100, "max_batch": 256, "max_passes": 4.0}}
    big = 10**15  # a corpus passed over far less than once
    assert budget.batch_for(spec, 64 * 10 * 100 - 1, big) == (32, "")
    batch, why = budget.batch_for(spec, 64 * 10 * 100, big)
    assert batch == 64 and "100 steps of 64" in why
    assert budget.batch_for(spec, 128 * 10 * 100, big)[0] == 128
    assert budget.batch_for(spec, 10**12, big)[0] == 256  # never past max_batch
    assert budget.batch_for({"train": {"batch_size": 32, "seq_len": 10}}, 10**12, big) \
        == (32, "")


def test_the_batch_stays_on_a_corpus_passed_over_many_times():
    spec = {"train": {"batch_size": 32, "seq_len": 10},
            "batch_growth": {"min_steps": 100, "max_batch": 256, "max_passes": 4.0}}
    assert budget.batch_for(spec, 10**12, 10**12 // 4)[0] == 256  # 4 passes: grows
    assert budget.batch_for(spec, 10**12, 10**12 // 4 - 1) == (32, "")  # past 4: stays


def test_a_long_budget_trains_small_with_more_streams_a_step(monkeypatch):
    """A budget that gives small many more characters than `batch_growth` needs: small
    at its largest batch, timed at it, with the passes counted at that speed, and with
    the settings that come with the grown batch (the cosine's end and beta1), which the
    start line names; a short budget keeps the preset's batch and schedule."""
    batches = []
    real = budget.step_seconds

    def recording(model, batch_size, *args, **kwargs):
        batches.append(batch_size)
        return real(model, batch_size, *args, **kwargs)

    monkeypatch.setattr(budget, "step_seconds", recording)
    larger = PRESETS["small"]["batch_growth"]["max_batch"]
    plan = budget.plan(1e7, 10**13, 40, CPU, "fp32", candidates=["small"])
    assert plan.train["batch_size"] == larger and batches == [32, larger]
    assert f"at {larger} streams a step" in plan.note
    assert plan.epochs == pytest.approx(plan.chars_per_sec * 1e7 / 10**13)
    # the cosine's end, beta1, the stream blocks
    with_growth = PRESETS["small"]["batch_growth"]["train"]
    assert {"min_lr_ratio", "beta1", "stream_block", "early_batch"} <= with_growth.keys()
    for name, value in with_growth.items():
        assert plan.train[name] == value != PRESETS["small"]["train"][name]
    assert ("with --min-lr-ratio {min_lr_ratio:g}, --beta1 {beta1:g}, --stream-block "
            "{stream_block:g} and --early-batch {early_batch:g}".format(**with_growth)
            ) in plan.note
    short = budget.plan(1.0, 100_000, 40, CPU, "fp32", candidates=["small"])
    assert short.train["batch_size"] == PRESETS["small"]["train"]["batch_size"]
    assert all(short.train[name] == PRESETS["small"]["train"][name] for name in with_growth)
    assert "streams a step" not in short.note and "--min-lr-ratio" not in short.note


@pytest.fixture
def timed_by_size(monkeypatch):
    """Step timings that follow the model's size: small trains 20,000 chars/s and a model
    of p parameters 20,000 x small's / p; wide needs 4,000 steps. Returns the list of
    (hidden size, batch) timed, and the budget in seconds in which wide makes `steps`
    steps of 128 x 32."""
    small = budget._untrained("small", 40, "lstm", CPU).num_parameters()
    timed = []

    def fake_step_seconds(model, batch_size, seq_len, device, precision, optimizer=None,
                          repeats=1, warmup=1):
        timed.append((model.config.hidden_size, batch_size))
        return batch_size * seq_len * model.num_parameters() / (2e4 * small)

    monkeypatch.setattr(budget, "step_seconds", fake_step_seconds)
    monkeypatch.setitem(PRESETS["wide"], "min_steps", 4000)  # whatever the records set
    wide_speed = 2e4 * small / budget._untrained("wide", 40, "lstm", CPU).num_parameters()
    return timed, lambda steps: steps * 128 * 32 / wide_speed


def test_wide_shares_small_s_settings_and_widens_only_small():
    wide, small = PRESETS["wide"], PRESETS["small"]
    assert wide["model"] == {**small["model"], "hidden_size": 768}
    assert wide["train"] == small["train"] and wide["batch_growth"] == small["batch_growth"]
    assert wide["instead_of"] == "small" and "min_chars" not in wide  # not a candidate
    assert [name for name, spec in PRESETS.items() if "instead_of" in spec] == ["wide"]


@pytest.mark.parametrize("share, chosen, wide_timed", [
    (1.25, "wide", True),  # room for more than wide's steps: it takes small's place
    (0.8, "small", True),  # timed, but too few steps
    (0.4, "small", False),  # too few by the size estimate: not even timed
])
def test_a_long_budget_on_a_large_corpus_widens_small_where_wide_gets_its_steps(
        timed_by_size, share, chosen, wide_timed):
    """With small's batch grown to 128 (a corpus seen a few times), wide is timed at 128
    and takes small's place when the budget gives it `min_steps` steps of 128; the start
    line says how many it gets against how many it needs. A budget that leaves it less
    than half of those by its size does not time it."""
    timed, seconds_for = timed_by_size
    needed = PRESETS["wide"]["min_steps"]
    time_limit = seconds_for(needed * share)
    plan = budget.plan(time_limit, 10**9, 40, CPU, "fp32")
    assert plan.preset == chosen and plan.train["batch_size"] == 128
    assert ((768, 128) in timed) == wide_timed
    assert plan.model["hidden_size"] == PRESETS[chosen]["model"]["hidden_size"]
    assert plan.epochs == pytest.approx(plan.chars_per_sec * time_limit / 10**9)
    assert ("wide at 128 streams a step" in plan.note) == wide_timed
    if wide_timed:
        verdict = "at least" if chosen == "wide" else "fewer than"
        assert (f"{needed * share:,.0f} steps of 128, {verdict} the {needed:,} from which "
                f"it beats small") in plan.note
        assert plan.note.startswith(f"{chosen} preset")
    if chosen == "wide":  # trained with the settings of the grown batch, at wide's speed
        assert plan.chars_per_sec == pytest.approx(needed * share * 128 * 32 / time_limit)
        for name, value in PRESETS["wide"]["batch_growth"]["train"].items():
            assert plan.train[name] == value


def test_a_named_preset_or_a_batch_that_did_not_grow_is_not_widened(timed_by_size):
    timed, seconds_for = timed_by_size
    long = seconds_for(PRESETS["wide"]["min_steps"] * 3)
    named = budget.plan(long, 10**9, 40, CPU, "fp32", candidates=["small"])
    assert named.preset == "small" and named.train["batch_size"] == 128
    # a corpus small passes over more than 10 times keeps its batch of 32
    many_passes = budget.plan(long, int(2e4 * long / 20), 40, CPU, "fp32")
    assert many_passes.preset == "small" and many_passes.train["batch_size"] == 32
    # small grown to 64 streams only: wide's estimate (about 2,100 steps of 64) is more
    # than half of 4,000, but it was measured at 128, and at 64 gets far fewer characters
    chars = 3000 * 64 * 32 * 1.5
    to_64 = budget.plan(chars / 2e4, 10**9, 40, CPU, "fp32")
    assert to_64.preset == "small" and to_64.train["batch_size"] == 64
    assert 768 not in {hidden for hidden, _ in timed}
    assert "wide" not in named.note + many_passes.note + to_64.note


def test_the_evaluations_time_is_not_counted_as_training(monkeypatch):
    """A plan counts the characters of the time its evaluations leave: at 10,000 chars/s,
    700 s give small the 3,200 steps of 64 streams that `batch_growth` asks for here, but
    not once four evaluations have read 500,000 validation characters each (at about
    three times the training speed: 67 s), so the batch stays and the passes, steps and
    evaluation interval are those of the 633 s left."""
    monkeypatch.setattr(budget, "step_seconds",
                        lambda model, batch_size, seq_len, **kwargs: batch_size * seq_len / 1e4)
    growth = PRESETS["small"]["batch_growth"]
    monkeypatch.setitem(growth, "min_steps", 3200)
    seq = PRESETS["small"]["train"]["seq_len"]
    assert 1e4 * 700 >= 64 * seq * 3200 > 1e4 * (700 - 2e6 / 3e4)  # the edge, both sides
    without = budget.plan(700.0, 5_000_000, 40, CPU, "fp32", candidates=["small"])
    assert without.train["batch_size"] == 64
    assert without.epochs == pytest.approx(1e4 * 700 / 5_000_000)
    timed = budget.plan(700.0, 5_000_000, 40, CPU, "fp32", candidates=["small"],
                        eval_chars=500_000)
    assert timed.train["batch_size"] == 32
    assert timed.epochs == pytest.approx(1e4 * (700 - 2e6 / 3e4) / 5_000_000)
    steps = 1e4 * (700 - 2e6 / 3e4) / (32 * seq)
    assert timed.train["eval_every"] == round(steps / 4)
    assert "evaluating" not in timed.note  # four evaluations, as usual


def test_evaluations_take_at_most_half_a_budget():
    assert budget.training_seconds(600.0, 1e4, 0) == 600.0
    assert budget.training_seconds(600.0, 1e4, 300_000) == pytest.approx(600 - 40)
    # one evaluation every ten minutes past 40 minutes
    assert budget.training_seconds(3600.0, 1e4, 300_000) == pytest.approx(3600 - 60)
    assert budget.training_seconds(60.0, 1e4, 10**9) == 30.0


@pytest.mark.parametrize("time_limit, each, count", [
    (600.0, 9.8, 4),  # 10 MB's split in ten minutes: 39 s of 600, as usual
    (105.0, 9.8, 1),  # ... in 105 s: four would take 39 s, more than a tenth
    (105.0, 5.0, 2),
    (1800.0, 55.6, 3),  # 50 MB's split in half an hour
    (60.0, 500.0, 1),  # the final one is always made
    (3600.0, 1.0, 6),  # one every ten minutes, as usual
])
def test_slow_evaluations_are_made_less_often(time_limit, each, count):
    assert budget.evaluations_in(time_limit, each) == count
    assert budget.evaluations_in(time_limit) == max(4, time_limit / 600)


def test_a_plan_whose_evaluations_are_slow_evaluates_less_often_and_says_so(monkeypatch):
    """At 10,000 chars/s a million validation characters take about 33 s to read: in 105
    s, once (the final evaluation), and the start line says why; in 700 s, twice."""
    monkeypatch.setattr(budget, "step_seconds",
                        lambda model, batch_size, seq_len, **kwargs: batch_size * seq_len / 1e4)
    step_chars = PRESETS["small"]["train"]["batch_size"] * PRESETS["small"]["train"]["seq_len"]
    short = budget.plan(105.0, 50_000_000, 40, CPU, "fp32", candidates=["small"],
                        eval_chars=1_000_000)
    assert short.epochs == pytest.approx(1e4 * (105 - 1e6 / 3e4) / 50_000_000)
    assert short.train["eval_every"] == round(1e4 * (105 - 1e6 / 3e4) / step_chars)
    assert short.eval_chars == 1_000_000
    assert ("evaluating only at the end, as each reads 1,000,000 validation characters "
            "(about 33 s) and more would take over 10% of the budget") in short.note
    longer = budget.plan(700.0, 50_000_000, 40, CPU, "fp32", candidates=["small"],
                         eval_chars=1_000_000)
    assert "evaluating 2 times, as each reads 1,000,000" in longer.note
    assert longer.epochs == pytest.approx(1e4 * (700 - 2e6 / 3e4) / 50_000_000)


def test_the_refit_keeps_slow_evaluations_few():
    """Refitted to 2,048 chars/s with 9 s left at step 16 (160 steps of 8 x 16 in all), a
    plan evaluates four times when evaluating is free, and once (at the end) when each of
    its 10,000 characters would take 1.6 s of the 10 s budget."""
    config = TrainConfig(batch_size=8, seq_len=16, time_limit=10.0, eval_every=4)
    amounts = {"dropout": 0.0, "weight_drop": 0.0}
    plan = misjudged_plan(204.8)
    plan.refit = frozenset({"eval_every"})
    free = budget.refit(plan, config, amounts, 2048.0, 16, 9.0, 100_000)
    assert free.eval_every == 40
    plan.eval_chars = 10_000
    slow = budget.refit(plan, config, amounts, 2048.0, 16, 9.0, 100_000)
    assert slow.eval_every == 160


def test_the_plan_is_told_how_much_each_evaluation_reads(tiny_corpus, tmp_path, monkeypatch):
    told = []
    real = budget.plan

    def recording(*args, **kwargs):
        told.append(kwargs["eval_chars"])
        return real(*args, **kwargs)

    monkeypatch.setattr(budget, "plan", recording)
    for eval_chars in (0, 100):
        settings = {"time_limit": 20.0, "precision": "fp32", "device": "cpu",
                    "eval_chars": eval_chars}
        trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / f"run{eval_chars}",
                                    settings=settings, **dirs(tmp_path))
    val_chars = len(trainer.corpus.tokens) - trainer.val_start
    assert told == [val_chars, 100] and val_chars > 100


def test_plan_skips_timing_presets_that_cannot_fit(monkeypatch):
    timed = []
    real = budget.step_seconds

    def recording(model, *args, **kwargs):
        timed.append(model.config.hidden_size)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(budget, "step_seconds", recording)
    budget.plan(5.0, 100_000, 40, CPU, "fp32")
    assert timed == [PRESETS["small"]["model"]["hidden_size"]]


def test_time_budget_without_sizes_uses_the_plan(tiny_corpus, tmp_path):
    settings = {"time_limit": 20.0, "precision": "fp32", "device": "cpu"}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                **dirs(tmp_path))
    assert trainer.plan is not None and trainer.plan.preset == "small"
    assert trainer.model_config.hidden_size == PRESETS["small"]["model"]["hidden_size"]
    assert trainer.config.max_steps is None and trainer.config.time_limit == 20.0
    assert trainer.config.eval_every == trainer.plan.train["eval_every"]
    assert trainer.info()["plan"] == trainer.plan.note


def test_explicit_flags_win_over_the_plan(tiny_corpus, tmp_path):
    settings = {"time_limit": 20.0, "precision": "fp32", "device": "cpu", "lr": 1e-4,
                "dropout": 0.4, "batch_size": 4}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                **dirs(tmp_path))
    assert trainer.plan is not None
    assert (trainer.config.lr, trainer.model_config.dropout, trainer.config.batch_size) == \
        (1e-4, 0.4, 4)


def tiny_model_for(time_limit: float, **given) -> dict:
    """TINY_SETTINGS' model and batch with --time, and no dropout or evaluation interval
    unless `given`."""
    kept = {key: value for key, value in TINY_SETTINGS.items()
            if key not in ("max_steps", "eval_every", "dropout")}
    return {**kept, "time_limit": time_limit, **given}


@pytest.mark.parametrize("per_step", [0.01, 0.1])
def test_a_model_size_given_stays_and_its_speed_fits_dropout_and_evaluations(
        tiny_corpus, tmp_path, monkeypatch, per_step):
    monkeypatch.setattr(budget, "step_seconds", lambda *args, **kwargs: per_step)
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run",
                                settings=tiny_model_for(20.0), **dirs(tmp_path))
    plan, model, config = trainer.plan, trainer.model_config, trainer.config
    assert (model.num_layers, model.hidden_size, model.embed_size, config.batch_size) == \
        (1, 64, 16, 8)  # as given: the plan chose no preset
    speed = 8 * 16 / per_step
    assert plan.chars_per_sec == pytest.approx(speed) and plan.preset == "small"
    steps = speed * budget.training_seconds(20.0, speed, plan.eval_chars) / (8 * 16)
    assert config.eval_every == round(steps / 4)  # four evaluations, not every 250 steps
    assert plan.epochs == pytest.approx(steps * 8 * 16 / trainer.val_start)
    assert model.dropout == dropout_for(PRESETS["small"], plan.epochs)
    assert plan.refit == {"dropout", "weight_drop", "eval_every"}
    assert trainer.info()["plan"] == plan.note
    assert plan.note.startswith("the model given, for the 20 s budget") and \
        f"evaluating every {config.eval_every:,} steps" in plan.note


def test_a_model_given_keeps_its_given_dropout_and_interval(tiny_corpus, tmp_path,
                                                            monkeypatch):
    monkeypatch.setattr(budget, "step_seconds", lambda *args, **kwargs: 0.01)
    settings = tiny_model_for(20.0, dropout=0.3, eval_every=7)
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                **dirs(tmp_path))
    assert (trainer.model_config.dropout, trainer.config.eval_every) == (0.3, 7)
    assert trainer.plan.refit == {"weight_drop"}
    assert "dropout" not in trainer.plan.note and "weight drop" in trainer.plan.note


def test_plan_precision_auto_is_reused_by_the_trainer(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run",
                                settings={"time_limit": 20.0, "device": "cpu"},
                                **dirs(tmp_path))
    assert trainer.precision == "fp32"
    assert trainer.precision_note == trainer.plan.precision_note
    assert "no native bf16" in trainer.precision_note


# --------------------------------------------------------------- the clock of --time


def test_setup_before_training_counts_against_the_time_limit(tiny_corpus, tmp_path):
    """A process that started long ago has spent its budget before its first step."""
    settings = {**TINY_SETTINGS, "max_steps": None, "time_limit": 5.0}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                launched_at=time.monotonic() - 60, **dirs(tmp_path))
    result = trainer.fit()
    assert result.reason == "time" and result.step == 1
    assert result.history[-1]["elapsed"] >= 60


def test_training_stops_early_enough_for_the_final_evaluation(tiny_corpus, tmp_path):
    settings = {**TINY_SETTINGS, "max_steps": None, "time_limit": 2.0, "eval_every": 10**6}
    started = time.monotonic()
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                launched_at=started, **dirs(tmp_path))
    result = trainer.fit()
    finished = time.monotonic() - started
    assert result.reason == "time" and result.step > 1
    stopped_at = result.history[-1]["elapsed"]
    # the reserve (half a second plus a tiny evaluation's estimate) was kept back, no more
    assert 1.0 < stopped_at < 2.0
    assert trainer.clock.eval_seconds > 0
    assert finished < 2.0 + 1.0  # the final evaluation, save and sample fit in the slack


class VirtualClock:
    """time.monotonic for the trainer: only training steps take time, `per_step` each,
    or `per_step(now)` if it is a function (the first `first_step`, if given)."""

    def __init__(self, per_step, first_step: float | None = None):
        self.now, self.per_step, self.first_step = 0.0, per_step, first_step

    def monotonic(self) -> float:
        return self.now

    def step_seconds(self) -> float:
        first, self.first_step = self.first_step, None
        if first is not None:
            return first
        return self.per_step(self.now) if callable(self.per_step) else self.per_step

    def timed(self, step):
        def timed_step(*args):
            self.now += self.step_seconds()
            return step(*args)
        return timed_step

    def step(self, run: run_clock.RunClock, chars: int, count: int = 1) -> None:
        """`count` steps of `chars` characters, counted by `run`."""
        for _ in range(count):
            started = self.now
            self.now += self.step_seconds()
            run.count_step(started, chars)


@pytest.mark.parametrize("eval_every, evaluated", [
    (36, [36, 80]),  # step 72 is due 1 s before the end: under half of a 4.5 s interval
    (24, [24, 48, 80]),  # step 72 again: under half of 3 s
    (14, [14, 28, 42, 56, 70, 80]),  # step 70 is due 1.25 s before: over half of 1.75 s
])
def test_an_evaluation_due_just_before_the_end_is_left_to_the_final_one(
        tiny_corpus, tmp_path, monkeypatch, eval_every, evaluated):
    clock = VirtualClock(per_step=0.125)  # 80 steps in the 10 s, in exact binary sums
    monkeypatch.setattr(run_clock, "time", clock)
    settings = {**TINY_SETTINGS, "max_steps": None, "time_limit": 10.0,
                "eval_every": eval_every, "sample_length": 0}
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                launched_at=0.0, **dirs(tmp_path))
    monkeypatch.setattr(training_step, "train_step", clock.timed(training_step.train_step))
    result = trainer.fit()
    assert result.reason == "time" and result.step == 80  # evaluations take no time here
    assert [record["step"] for record in result.history] == evaluated


@pytest.mark.parametrize("per_step, steps, seconds", [
    # 64 chars/s: evaluating the 630 validation characters needs about 3.8 s of the 10
    (2.0, 4, 4),
    (6.0, 1, 10),  # 21 chars/s: about 10 s, after the one step
    (0.125, 75, None),  # 1,024 chars/s: about 0.7 s, which is no warning
])
def test_a_final_evaluation_that_takes_much_of_the_budget_is_explained(
        tiny_corpus, tmp_path, monkeypatch, per_step, steps, seconds):
    clock = VirtualClock(per_step=per_step)
    monkeypatch.setattr(run_clock, "time", clock)
    settings = {**TINY_SETTINGS, "max_steps": None, "time_limit": 10.0, "eval_every": 1000,
                "sample_length": 0}
    recorder = NoticeRecorder()
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                callback=recorder, launched_at=0.0, **dirs(tmp_path))
    monkeypatch.setattr(training_step, "train_step", clock.timed(training_step.train_step))
    result = trainer.fit()
    assert result.reason == "time" and result.step == steps
    if seconds is not None:
        [notice] = recorder.notices
        chars = trainer.val_end - trainer.val_start
        assert chars == 630
        assert notice.startswith(f"the final evaluation of {chars:,} validation characters "
                                 f"needs about {seconds} s of the 10 s budget, so "
                                 f"training stopped after {steps} step{'s' * (steps > 1)}:")
        assert "--eval-chars" in notice
    else:
        assert recorder.notices == []


@pytest.mark.parametrize("compiled", [True, False])
def test_a_first_step_that_compiles_the_model_does_not_end_a_time_budget(
        tiny_corpus, tmp_path, monkeypatch, compiled):
    # with --compile the first step compiles the model: 6 s of the 10 here, then 0.125 s a
    # step. Judged by that first step, the final evaluation of the 630 validation
    # characters would need the rest of the budget (as it does below, without --compile,
    # where so slow a first step may well be the speed).
    clock = VirtualClock(per_step=0.125, first_step=6.0)
    monkeypatch.setattr(run_clock, "time", clock)
    monkeypatch.setattr(training.torch, "compile", lambda model: model)  # no time but the clock's
    settings = {**TINY_SETTINGS, "max_steps": None, "time_limit": 10.0, "eval_every": 1000,
                "sample_length": 0, "compile": compiled}
    recorder = NoticeRecorder()
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                                callback=recorder, launched_at=0.0, **dirs(tmp_path))
    monkeypatch.setattr(training_step, "train_step", clock.timed(training_step.train_step))
    result = trainer.fit()
    assert result.reason == "time"
    if not compiled:
        assert result.step == 1 and "training stopped after 1 step" in recorder.notices[0]
        return
    # the speed is the later steps' (the first is left out of it), so the reserve is
    # about 0.7 s, as for a run at that speed throughout: 6 s, then 27 steps to 9.375 s,
    # the first past 10 - 0.7
    chars = TINY_SETTINGS["batch_size"] * TINY_SETTINGS["seq_len"]
    assert trainer.clock.speed() == pytest.approx(chars / 0.125)
    assert result.step == 28 and recorder.notices == []


def run_with_paced_evaluations(tiny_corpus, tmp_path, monkeypatch, per_step,
                               pace_at, time_limit: float = 20.0, eval_warmup: int = 128,
                               callback=None, eval_every: int = 10**6,
                               **clock_constants) -> tuple[list, float]:
    """A run of `time_limit` s on a virtual clock whose steps take `per_step` (see
    VirtualClock) and whose evaluations take `pace_at(now)` seconds a character read
    (each stream's warm-up included), evaluating every `eval_every` steps (by default
    only at the end), each stream warmed up on `eval_warmup` characters, with clock.py's
    constants set to `clock_constants`, and `callback`: its evaluations, and when it
    ended."""
    clock = VirtualClock(per_step=per_step)
    monkeypatch.setattr(run_clock, "time", clock)
    real_evaluate = evaluation.evaluate

    def paced(model, tokens, start, end, *args):
        streams = min(evaluation.EVAL_STREAMS, end - start)
        clock.now += pace_at(clock.now) * (end - start + streams * evaluation.EVAL_WARMUP)
        return real_evaluate(model, tokens, start, end, *args)

    monkeypatch.setattr(evaluation, "evaluate", paced)
    monkeypatch.setattr(evaluation, "EVAL_WARMUP", eval_warmup)
    for name, value in {"PROBE_CHARS": 128, **clock_constants}.items():
        monkeypatch.setattr(run_clock, name, value)
    settings = {**TINY_SETTINGS, "max_steps": None, "time_limit": time_limit,
                "eval_every": eval_every, "sample_length": 0}
    out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    trainer = runs.make_trainer(str(tiny_corpus), out=out, settings=settings,
                                callback=callback, launched_at=0.0, **dirs(tmp_path))
    monkeypatch.setattr(training_step, "train_step", clock.timed(training_step.train_step))
    result = trainer.fit()
    assert result.reason == "time"
    return result.history, clock.now


# the validation characters an evaluation reads, each stream's warm-up counted
EVAL_READS = 630 + evaluation.EVAL_STREAMS * evaluation.EVAL_WARMUP


@pytest.mark.parametrize("per_step, pace", [(0.125, 4e-4), (1.0, 1e-5)])
def test_a_run_that_evaluates_only_at_its_end_times_one_to_keep_the_right_reserve(
        tiny_corpus, tmp_path, monkeypatch, per_step, pace):
    # training goes 1,024 (or 128) chars/s, so the guess for evaluating the 630
    # validation characters is 0.5 s + 630 / (3 x 1,024) = 0.7 s (or 2.1 s); here an
    # evaluation takes about 3.5 s (slower than the guess), or 0.09 s (faster)
    history, ended = run_with_paced_evaluations(tiny_corpus, tmp_path, monkeypatch,
                                                per_step, lambda now: pace, PROBE_MIN=256)
    assert len(history) == 1  # only the final evaluation: the reserve was never measured
    added, factor = run_clock.PROBE_MARGIN
    # the timed slice's extrapolation is kept back, with the margin: the run ends within
    # its budget, and no more than the margin and a step before it
    assert 20.0 - added - (factor - 1) * pace * EVAL_READS - per_step <= ended <= 20.0
    # without the timed slice the guess is kept: a slow evaluation overruns the budget,
    # and a fast one ends the run earlier
    _, guessed_end = run_with_paced_evaluations(tiny_corpus, tmp_path, monkeypatch,
                                                per_step, lambda now: pace, PROBE_MIN=10**9)
    if pace > 1e-4:
        assert guessed_end > 20.5
    else:
        assert guessed_end < ended


class SpeedRecorder(training.TrainingCallback):
    def __init__(self):
        self.speeds = []

    def on_step(self, stats):
        self.speeds.append(stats.chars_per_sec)


def test_an_evaluation_that_slows_after_half_the_budget_is_timed_again(
        tiny_corpus, tmp_path, monkeypatch):
    # in 100 s, with streams warmed up on 2 characters, evaluations (758 characters
    # read) take 3 s until 60 s into the run, then twice that: the timing at half the
    # budget (about 50 s) keeps back 4.3 s, the one at 90% (about 86 s) 7.7 s, and
    # itself takes 2.4 s of the 9.6 s left
    slowing = lambda now: 4e-3 if now < 60.0 else 8e-3
    runs_like_this = dict(time_limit=100.0, eval_warmup=2, PROBE_MIN=256)
    speeds = SpeedRecorder()
    _, ended = run_with_paced_evaluations(tiny_corpus, tmp_path, monkeypatch, 0.125,
                                          slowing, callback=speeds, **runs_like_this)
    added, factor = run_clock.PROBE_MARGIN
    whole = 8e-3 * (630 + evaluation.EVAL_STREAMS * 2)
    assert 100.0 - added - (factor - 1) * whole - 0.125 <= ended <= 100.0
    # the speed shown counts the steps alone, not the timings between them
    chars = TINY_SETTINGS["batch_size"] * TINY_SETTINGS["seq_len"]
    assert len(speeds.speeds) > 10
    assert speeds.speeds == pytest.approx([chars / 0.125] * len(speeds.speeds))
    # timed only at half the budget, the run overruns by the evaluation's slowing
    _, timed_once = run_with_paced_evaluations(tiny_corpus, tmp_path, monkeypatch, 0.125,
                                               slowing, PROBE_AT=(0.5,), **runs_like_this)
    assert timed_once > 101.0


def test_no_second_timing_where_the_time_left_would_not_hold_it(
        tiny_corpus, tmp_path, monkeypatch):
    # in 20 s at 3.5 s an evaluation, 90% of the budget leaves about 1 s, less than
    # twice the 4 s the first timing took: the run is timed once, and ends in time
    timings = []
    real_timed = run_clock.RunClock.timed_evaluation
    monkeypatch.setattr(run_clock.RunClock, "timed_evaluation",
                        lambda clock, *args: (timings.append(clock.elapsed),
                                              real_timed(clock, *args)))
    _, ended = run_with_paced_evaluations(tiny_corpus, tmp_path, monkeypatch, 0.125,
                                          lambda now: 4e-4, PROBE_MIN=256)
    assert len(timings) == 1 and timings[0] == pytest.approx(10.0, abs=0.5)
    assert ended <= 20.0
    # with room for any timing, the second one is made, and it overruns the budget
    timings.clear()
    _, crowded = run_with_paced_evaluations(tiny_corpus, tmp_path, monkeypatch, 0.125,
                                            lambda now: 4e-4, PROBE_MIN=256, PROBE_ROOM=0.0)
    assert len(timings) == 2 and crowded > 20.0


def test_a_session_resumed_past_both_timings_times_the_evaluation_once(monkeypatch):
    clock = VirtualClock(per_step=1.0)
    monkeypatch.setattr(run_clock, "time", clock)
    # a resumed session: 95 of its 200 s spent before, then a step of 1,024 characters;
    # the guess for evaluating 300,000 characters is 98 s, so that is 94% of the budget
    run = run_clock.RunClock(TrainConfig(time_limit=200.0), eval_chars=300_000,
                             elapsed=95.0)
    run.start(launched_at=None)
    clock.step(run, 1024)
    assert run.evaluation_needs_timing()
    # it was past 90% with the reserve it had: both timings are done, though with the
    # reserve this one gives (100 s) it is still past 90%, and has the time for another
    run.timed_evaluation(90.0, took=0.5)
    added, factor = run_clock.PROBE_MARGIN
    assert run.final_reserve() == pytest.approx(added + factor * 90.0)
    assert run.progress() > 0.9 and run.time_left() > 1.0
    assert not run.evaluation_needs_timing()


def steady_clock(monkeypatch) -> tuple[VirtualClock, run_clock.RunClock]:
    """A run's clock on a virtual one, its pace taken over 8 s, after 12 steps of 1,024
    characters in 1 s each."""
    clock = VirtualClock(per_step=1.0)
    monkeypatch.setattr(run_clock, "time", clock)
    monkeypatch.setattr(run_clock, "PACE_WINDOW", 8.0)
    run = run_clock.RunClock(TrainConfig(time_limit=10_000.0), eval_chars=300_000)
    run.start(launched_at=None)
    clock.step(run, 1024, count=12)
    return clock, run


def test_the_reserve_follows_the_pace_training_goes_at_in_steps_of_one_size(monkeypatch):
    clock, run = steady_clock(monkeypatch)
    assert run.pace() == pytest.approx(1024.0)
    run.evaluated(10.0)  # measured while training went 1,024 chars/s
    assert run.final_reserve() == pytest.approx(10.0)
    clock.per_step = 2.0  # the machine slows down: so will the final evaluation
    clock.step(run, 1024, count=12)
    assert run.pace() == pytest.approx(512.0)
    assert run.final_reserve() == pytest.approx(20.0)
    clock.per_step = 0.5  # and speeds up
    clock.step(run, 1024, count=40)
    assert run.final_reserve() == pytest.approx(5.0)
    # steps of four times the characters in 1 s each: a pace that says nothing of the
    # machine's, so the evaluation is kept as it was measured
    clock.per_step = 1.0
    clock.step(run, 4096, count=12)
    assert run.pace() == pytest.approx(4096.0)
    assert run.final_reserve() == pytest.approx(10.0)


def test_the_longer_timing_at_todays_pace_is_kept(monkeypatch):
    clock, run = steady_clock(monkeypatch)
    added, factor = run_clock.PROBE_MARGIN
    run.timed_evaluation(90.0, took=1.0)  # at 1,024 chars/s
    clock.per_step = 2.0
    clock.step(run, 1024, count=12)
    assert run.final_reserve() == pytest.approx(added + factor * 180.0)
    # timed again at half the pace, shorter than the first at this pace: that one stays
    run.timed_evaluation(100.0, took=1.0)
    assert run.final_reserve() == pytest.approx(added + factor * 180.0)
    clock.per_step = 1.0  # back to the first pace: 90 s, and the second's 50 s
    clock.step(run, 1024, count=12)
    assert run.final_reserve() == pytest.approx(added + factor * 90.0)


def test_a_run_whose_training_slows_after_its_last_evaluation_still_ends_in_time(
        tiny_corpus, tmp_path, monkeypatch):
    # in 100 s, steps take 0.125 s and evaluations (758 characters read) 3 s until 50 s
    # into the run, then both twice that: the evaluation at step 300 (37.5 s) is the
    # last before the final one, which then takes 6 s
    slowing_steps = lambda now: 0.125 if now < 50.0 else 0.25
    slowing_evaluations = lambda now: 4e-3 if now < 50.0 else 8e-3
    runs_like_this = dict(time_limit=100.0, eval_warmup=2, eval_every=300)
    history, ended = run_with_paced_evaluations(
        tiny_corpus, tmp_path, monkeypatch, slowing_steps, slowing_evaluations,
        PACE_WINDOW=8.0, **runs_like_this)
    assert [record["step"] for record in history][0] == 300 and len(history) == 2
    # it stops at the first step past the budget less the reserve, so it ends within
    # a step of the budget, one way or the other
    assert ended == pytest.approx(100.0, abs=0.25)
    # with the evaluation kept at the pace it was measured, the run ends 3 s late
    _, unscaled = run_with_paced_evaluations(
        tiny_corpus, tmp_path, monkeypatch, slowing_steps, slowing_evaluations,
        PACE_WINDOW=1e9, **runs_like_this)
    assert unscaled > 102.5


def test_finished_time_budget_stays_finished_on_resume(tiny_corpus, tmp_path):
    settings = {**TINY_SETTINGS, "max_steps": None, "time_limit": 1.0}
    first = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", settings=settings,
                              **dirs(tmp_path)).fit()
    assert first.reason == "time"
    assert checkpoint.load(first.last_path)["time_spent"] == 1.0
    again = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", resume=True,
                              settings={"time_limit": 1.0}, **dirs(tmp_path)).fit()
    assert again.reason == "already finished" and again.step == first.step
    more = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", resume=True,
                             settings={"time_limit": 3.0}, **dirs(tmp_path)).fit()
    assert more.reason == "time" and more.step > first.step


# ------------------------------------------------------------ refitting to the real speed


class NoticeRecorder(training.TrainingCallback):
    def __init__(self):
        self.notices = []

    def on_notice(self, message):
        self.notices.append(message)


def misjudged_plan(chars_per_sec: float):
    """A budget plan for TINY_SETTINGS' shape under the small preset, fitted to a speed
    that the run will not have."""
    train = {**PRESETS["small"]["train"], "batch_size": 8, "seq_len": 16, "warmup_steps": 5,
             "eval_every": 4, "sample_length": 0, "precision": "fp32", "device": "cpu"}
    model = {"num_layers": 1, "hidden_size": 64, "embed_size": 16, "dropout": 0.0,
             "weight_drop": 0.0}
    return budget.BudgetPlan("small", model, train, "fp32", "fp32 (as asked)", chars_per_sec,
                             0.36, "a plan measured while the machine was busy")


def planned_trainer(tiny_corpus, tmp_path, monkeypatch, plan, **settings):
    """A trainer for a 10 s budget from `plan`, on a virtual clock at 2,048 chars/s (160
    steps of 8 x 16 in the budget), and the recorder of its notices."""
    clock = VirtualClock(per_step=0.0625)
    monkeypatch.setattr(run_clock, "time", clock)
    monkeypatch.setattr(runs, "_plan", lambda *args: plan)
    recorder = NoticeRecorder()
    trainer = runs.make_trainer(str(tiny_corpus), out=tmp_path / "run",
                                settings={"time_limit": 10.0, **settings}, callback=recorder,
                                launched_at=0.0, **dirs(tmp_path))
    monkeypatch.setattr(training_step, "train_step", clock.timed(training_step.train_step))
    return trainer, recorder


def test_plan_settings_are_refitted_to_the_speed_training_shows(tiny_corpus, tmp_path,
                                                                 monkeypatch,
                                                                 small_with_weight_drop):
    # the plan measured a tenth of the speed: 16 steps, so an evaluation every 4, and dropout 0
    trainer, recorder = planned_trainer(tiny_corpus, tmp_path, monkeypatch,
                                        misjudged_plan(204.8))
    assert trainer.plan.refit == {"dropout", "weight_drop", "eval_every"}
    result = trainer.fit()
    # refitted after a tenth of the budget (step 16): 160 steps, so an evaluation every 40
    assert result.step == 160 and trainer.config.eval_every == 40
    assert [record["step"] for record in result.history] == [4, 8, 12, 40, 80, 120, 160]
    amounts = regularisation_for(PRESETS["small"], 160 * 8 * 16 / trainer.val_start)
    dropout, weight_drop = amounts["dropout"], amounts["weight_drop"]
    assert dropout > 0 and weight_drop > 0
    assert trainer.model.config.dropout == dropout and trainer.model_config.dropout == dropout
    assert trainer.model_config.weight_drop == weight_drop
    saved_model = checkpoint.load(result.last_path)["model_config"]
    assert saved_model["dropout"] == dropout and saved_model["weight_drop"] == weight_drop
    saved = json.loads((result.run_dir / "config.json").read_text())
    assert saved["model"]["dropout"] == dropout and saved["train"]["eval_every"] == 40
    assert len(recorder.notices) == 1
    assert "2,048 chars/s, not the 205 measured" in recorder.notices[0]


def test_given_settings_are_not_refitted(tiny_corpus, tmp_path, monkeypatch):
    trainer, recorder = planned_trainer(tiny_corpus, tmp_path, monkeypatch,
                                        misjudged_plan(204.8), dropout=0.1, eval_every=50,
                                        weight_drop=0.05)
    assert trainer.plan.refit == frozenset()
    result = trainer.fit()
    assert result.step == 160 and trainer.config.eval_every == 50
    assert trainer.model.config.dropout == 0.1 and recorder.notices == []
    assert trainer.model_config.weight_drop == 0.05
    assert [record["step"] for record in result.history] == [50, 100, 160]


def test_a_good_plan_is_left_as_it_is(tiny_corpus, tmp_path, monkeypatch):
    plan = misjudged_plan(2048.0)  # right: 160 steps, an evaluation every 40
    plan.train["eval_every"] = 40
    trainer, recorder = planned_trainer(tiny_corpus, tmp_path, monkeypatch, plan,
                                        dropout=0.0, weight_drop=0.0)
    result = trainer.fit()
    assert recorder.notices == [] and trainer.config.eval_every == 40
    assert [record["step"] for record in result.history] == [40, 80, 120, 160]


def test_the_schedule_a_plan_gives_trains_unless_one_is_given(tiny_corpus, tmp_path,
                                                               monkeypatch):
    """A plan's training settings (here the cosine's end that comes with a grown batch)
    are the run's, below the flags given."""
    plan = misjudged_plan(2048.0)
    plan.train["min_lr_ratio"] = 0.01
    trainer, _ = planned_trainer(tiny_corpus, tmp_path / "a", monkeypatch, plan)
    assert trainer.config.min_lr_ratio == 0.01
    trainer, _ = planned_trainer(tiny_corpus, tmp_path / "b", monkeypatch, plan,
                                 min_lr_ratio=0.2)
    assert trainer.config.min_lr_ratio == 0.2


def test_refit_is_a_pure_function_of_the_plan_and_the_speed_seen(small_with_weight_drop):
    plan = misjudged_plan(204.8)
    plan.refit = frozenset({"dropout", "weight_drop", "eval_every"})
    config = TrainConfig(batch_size=8, seq_len=16, eval_every=4, time_limit=10.0)
    # a tenth of the budget trained (16 steps) at 2,048 chars/s: 144 steps in the 9 s left
    now = {"dropout": 0.0, "weight_drop": 0.0}
    change = budget.refit(plan, config, now, 2048.0, 16, 9.0, 5000)
    assert change.eval_every == 40 and config.eval_every == 4  # returned, not applied
    assert change.regularisation == regularisation_for(PRESETS["small"], 160 * 8 * 16 / 5000)
    assert "2,048 chars/s, not the 205 measured" in change.notice()
    assert "weight drop" in change.notice()
    assert budget.refit(plan, config, now, 220.0, 16, 9.0, 5000) is None  # within the margin
    plan.refit = frozenset({"eval_every"})
    assert budget.refit(plan, config, now, 2048.0, 16, 9.0, 5000).regularisation == {}
    plan.refit = frozenset()
    assert budget.refit(plan, config, now, 2048.0, 16, 9.0, 5000) is None  # all were given


def test_steps_count_the_early_batchs_smaller_steps():
    """With --early-batch 32 of 128 for the first 15%, a run's characters make a quarter
    as many characters a step for 15% of them; counted from 10% of the way through, a
    ninth... of the rest (5 of the 90 points left) are early; past 15%, none."""
    config = TrainConfig(batch_size=128, seq_len=32, early_batch=32, early_share=0.15)
    chars = 4096 * 1000.0
    assert budget.steps_for(chars, config) == pytest.approx(150 * 4 + 850)
    assert budget.steps_for(chars, config, 0.1) == pytest.approx(
        1000 * (0.05 / 0.9 * 4 + 0.85 / 0.9))
    assert budget.steps_for(chars, config, 0.2) == pytest.approx(1000)
    assert budget.steps_for(chars, TrainConfig(batch_size=128, seq_len=32)) == 1000


def test_the_refit_counts_the_characters_trained_not_the_steps():
    """Refitted during an early batch: 16 steps of 2 of 8 streams have trained 512
    characters, not 16 whole steps' 2,048; the passes and the evaluation interval
    follow."""
    config = TrainConfig(batch_size=8, seq_len=16, time_limit=10.0, eval_every=4,
                         early_batch=2, early_share=0.5)
    plan = misjudged_plan(204.8)
    plan.refit = frozenset({"dropout", "eval_every"})
    amounts = {"dropout": 0.25, "weight_drop": 0.0}
    change = budget.refit(plan, config, amounts, 2048.0, 16, 9.0, 5000, trained=512,
                          progress=0.1)
    ahead = 2048.0 * 9.0
    assert change.epochs == pytest.approx((512 + ahead) / 5000)
    steps = 16 + ahead * (0.4 / 0.9 / 32 + 0.5 / 0.9 / 128)
    assert change.eval_every == round(steps / 4)
