"""Tests for device and precision choice, the fp16 loss-scaling step, the evaluation cap and
--compile: what can be checked without a GPU.

CUDA is stood in for where only the choice is under test (torch.device("cuda") is a plain
value); the gradient scaler runs for real on the CPU, in fp32, so its skip-and-lower-the-
scale path is exercised even though fp16 itself needs a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from charlstm import checkpoint, device
from charlstm.training import setup as runs, step as training_step
from charlstm.infer.streams import eval_batches
from charlstm.errors import UsageError

from conftest import TINY_SETTINGS, one_line_error, run_cli


def make(tiny_corpus: Path, tmp_path: Path, resume: bool = False, **overrides):
    return runs.make_trainer(str(tiny_corpus), out=tmp_path / "run", resume=resume,
                             settings={**TINY_SETTINGS, **overrides},
                             corpora_dir=tmp_path / "corpora",
                             checkpoints_dir=tmp_path / "checkpoints")


# ------------------------------------------------------------------ choice


def test_auto_precision_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.precision_without_measuring("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.precision_without_measuring("auto", cuda) == "fp16"


def test_auto_precision_elsewhere():
    assert device.precision_without_measuring("auto", torch.device("mps")) == "fp32"
    assert device.precision_without_measuring("auto", torch.device("cpu")) is None  # measured


def test_asked_precision_wins_and_fp16_needs_cuda():
    cpu = torch.device("cpu")
    assert device.precision_without_measuring("bf16", cpu) == "bf16"
    assert device.precision_without_measuring("fp16", torch.device("cuda")) == "fp16"
    with pytest.raises(UsageError, match="fp16 needs a CUDA GPU"):
        device.precision_without_measuring("fp16", cpu)
    with pytest.raises(UsageError, match="precision must be one of"):
        device.precision_without_measuring("fp8", cpu)


def test_only_fp16_scales_the_loss():
    assert [p for p in device.PRECISIONS if device.needs_grad_scaler(p)] == ["fp16"]


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_autocast_uses_the_precision_dtype(precision, dtype):
    context = device.autocast(torch.device("cpu"), precision)
    assert isinstance(context, torch.autocast) and context.fast_dtype == dtype


def test_cuda_asked_without_a_gpu_is_a_usage_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError, match="no CUDA GPU"):
        device.choose_device("cuda")


def test_fp16_on_the_cpu_is_one_clean_line(tmp_path, tiny_corpus):
    result = run_cli("train", str(tiny_corpus), "--precision", "fp16", "--max-steps", "1",
                     "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    line = one_line_error(result.stderr.decode())
    assert line.endswith("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on cpu")


def test_cpu_batches_are_not_pinned(tiny_corpus, tmp_path, monkeypatch):
    trainer = make(tiny_corpus, tmp_path)
    assert trainer.scaler is None

    def pinned(tensor):
        raise AssertionError("a CPU batch was pinned")

    monkeypatch.setattr(torch.Tensor, "pin_memory", pinned)
    training_step.train_step(trainer._step_parts(), None, 1e-3)
    assert trainer.trained is trainer.model  # no --compile: the step runs the model itself


# ------------------------------------------------------------------ fp16's gradient scaler


def test_grad_scaler_skips_overflowing_steps_without_the_divergence_guard(tiny_corpus,
                                                                         tmp_path):
    trainer = make(tiny_corpus, tmp_path, max_steps=30, eval_every=30)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    # the first five steps overflow in the backward pass, as fp16 does when the scale is
    # too high: the loss is finite, some gradients are inf
    overflowing = iter([True] * 5)
    trainer.model.head.weight.register_hook(
        lambda grad: grad * float("inf") if next(overflowing, False) else grad)
    first_weights = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    assert trainer.scaler.get_scale() == 1024.0 / 2 ** 5  # halved at each overflow
    assert trainer.guard.rollbacks == 0 and trainer.guard.lr_scale == 1.0  # not treated as divergence
    after = list(trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(first_weights, after))
    assert all(torch.isfinite(p).all() for p in after)
    saved = checkpoint.load(tmp_path / "run" / "last.pt")
    assert saved["scaler"]["scale"] == trainer.scaler.get_scale()


def test_grad_scaler_step_equals_a_plain_step_when_nothing_overflows(tiny_corpus, tmp_path):
    plain = make(tiny_corpus, tmp_path / "a", max_steps=5, eval_every=5)
    plain.fit()
    scaled = make(tiny_corpus, tmp_path / "b", max_steps=5, eval_every=5)
    scaled.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # exact: a power of two
    scaled.fit()
    for a, b in zip(plain.model.parameters(), scaled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_an_fp16_run_resumed_without_a_gpu_chooses_again(tiny_corpus, tmp_path):
    make(tiny_corpus, tmp_path, max_steps=10, eval_every=10).fit()
    path = tmp_path / "run" / "last.pt"
    saved = checkpoint.load(path)
    saved["precision"] = "fp16"  # as if it had been started on an older GPU
    checkpoint.save(saved, path)
    resumed = make(tiny_corpus, tmp_path, resume=True, max_steps=12, precision="auto")
    assert resumed.precision in ("fp32", "bf16") and resumed.scaler is None
    resumed.fit()
    assert resumed.step == 12


# ------------------------------------------------------------------ the evaluation cap


def test_evaluation_reads_at_most_eval_chars_from_the_start_of_the_split(tiny_corpus,
                                                                         tmp_path):
    whole = make(tiny_corpus, tmp_path / "a", eval_chars=0)
    capped = make(tiny_corpus, tmp_path / "b", eval_chars=100)
    assert whole.info()["eval_chars"] == whole.info()["val_chars"] > 100
    assert capped.info()["eval_chars"] == 100
    # the same (untrained) weights: the capped loss is the loss over those 100 characters
    capped.model.load_state_dict(whole.model.state_dict())
    tokens = capped.corpus.tokens
    warmup, chunks = eval_batches(tokens, capped.val_start, capped.val_start + 100, 64,
                                  256, 128)
    model = capped.model.eval()
    with torch.no_grad():
        state = model.advance(warmup)
        total, count = 0.0, 0
        for inputs, targets in chunks:
            logits, _, state = model(inputs, state)
            total += torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), ignore_index=-100,
                reduction="sum").item()
            count += int((targets != -100).sum())
    assert count == 100
    assert capped.evaluate() == pytest.approx(total / count, rel=1e-5)
    assert whole.evaluate() != pytest.approx(capped.evaluate(), rel=1e-6)


def test_eval_chars_must_not_be_negative(tmp_path, tiny_corpus):
    result = run_cli("train", str(tiny_corpus), "--eval-chars", "-1", "--max-steps", "1",
                     "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    assert "--eval-chars must be in [0, " in one_line_error(result.stderr.decode())


# ------------------------------------------------------------------ --compile


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_corpus, tmp_path):
    eager = make(tiny_corpus, tmp_path / "a", max_steps=6, eval_every=6)
    eager.fit()
    compiled = make(tiny_corpus, tmp_path / "b", max_steps=6, eval_every=6, compile=True)
    assert compiled.trained is not compiled.model
    compiled.fit()
    for a, b in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert "_orig_mod" not in "".join(checkpoint.load(tmp_path / "b" / "run" / "last.pt")
                                      ["model"])  # checkpoints hold the plain model


def test_the_library_names_the_setting_and_the_command_line_the_flag():
    # the same error: a Python API user reads `precision`, a shell user `--precision`
    with pytest.raises(UsageError) as caught:
        device.precision_without_measuring("fp16", torch.device("cpu"))
    assert str(caught.value).startswith("precision fp16 needs a CUDA GPU")
    assert "--" not in str(caught.value)
    from charlstm.cli import flag_for

    assert caught.value.spelled(flag_for).startswith("--precision fp16 needs a CUDA GPU")


def test_a_library_error_without_settings_is_spelled_as_it_is():
    error = UsageError("a path with {braces} in it")
    assert error.spelled(lambda name: "--" + name) == "a path with {braces} in it"
