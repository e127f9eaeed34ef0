"""Tests for charlstm.checkpoint: self-contained, safe, atomic checkpoint files."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import charlstm
from charlstm import checkpoint
from charlstm.cli import app
from charlstm.errors import CheckpointError, UsageError
from charlstm.model.charrnn import CharRNN
from charlstm.settings import ModelConfig
from charlstm.data.vocab import Vocabulary


def assert_one_line_error(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert message and "\n" not in message
    assert str(path) in message
    return info.value


# ------------------------------------------------------------------------ round trip


def test_checkpoint_loads_with_weights_only(trained_run):
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    assert payload["format"] == checkpoint.FORMAT
    assert payload["format_version"] == checkpoint.FORMAT_VERSION
    for key in ("format", "format_version", "model_config", "vocab", "model", "optimizer",
                "step", "data", "hidden", "rng", "history"):
        assert key in payload, key
    assert isinstance(payload["model_config"], dict)
    assert isinstance(payload["vocab"]["chars"], str)
    assert all(isinstance(t, torch.Tensor) for t in payload["model"].values())


def test_load_gives_the_saved_model(trained_run):
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    rebuilt = CharRNN(ModelConfig.from_dict(payload["model_config"]))
    rebuilt.load_state_dict(payload["model"])
    rebuilt.eval()
    vocab = Vocabulary.from_dict(payload["vocab"])

    lm = charlstm.load(trained_run / "best.pt", device="cpu")
    assert lm.vocab == vocab
    assert lm.config == rebuilt.config
    assert not lm.model.training
    idx = torch.tensor([vocab.encode("the quick brown fox")])
    with torch.no_grad():
        expected, _, _ = rebuilt(idx)
        got, _, _ = lm.model(idx)
    assert torch.equal(got, expected)
    for name, tensor in rebuilt.state_dict().items():
        assert torch.equal(lm.model.state_dict()[name], tensor), name


def test_directory_picks_best(trained_run, tmp_path):
    assert checkpoint.find(trained_run) == trained_run / "best.pt"
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "last.pt", run / "last.pt")
    assert checkpoint.find(run) == run / "last.pt"  # no best.pt: the last one
    lm = charlstm.load(trained_run, device="cpu")
    best = charlstm.load(trained_run / "best.pt", device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(lm.model.parameters(),
                                                  best.model.parameters()))


def test_missing_path_and_empty_directory_are_usage_errors(tmp_path):
    with pytest.raises(UsageError):
        checkpoint.load(tmp_path / "nope.pt")
    with pytest.raises(UsageError, match="no best.pt or last.pt"):
        checkpoint.load(tmp_path)


def test_save_then_load_round_trip(tmp_path):
    payload = {"model_config": {"vocab_size": 3}, "vocab": {"chars": "abc"},
               "model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 7,
               "history": [{"step": 7, "val_loss": 1.5}]}
    first, second = tmp_path / "a" / "last.pt", tmp_path / "a" / "best.pt"
    checkpoint.save(payload, first, second)
    for path in (first, second):
        loaded = checkpoint.load(path)
        assert loaded["format"] == checkpoint.FORMAT
        assert loaded["format_version"] == checkpoint.FORMAT_VERSION
        assert loaded["step"] == 7 and loaded["history"] == payload["history"]
        assert torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["best.pt", "last.pt"]


# ------------------------------------------------------------------ refused files


class Malicious:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": 1, "model_config": {},
                "vocab": {}, "model": Malicious(marker)}, path)
    error = assert_one_line_error(path)
    assert "refused" in str(error)
    assert not marker.exists()
    with pytest.raises(CheckpointError):
        charlstm.load(path)
    assert not marker.exists()


def test_truncated_checkpoint(trained_run, tmp_path):
    data = (trained_run / "best.pt").read_bytes()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    assert_one_line_error(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    assert_one_line_error(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert_one_line_error(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is not a checkpoint\n" * 10)
    assert_one_line_error(path)


def test_plain_state_dict(trained_run, tmp_path):
    lm = charlstm.load(trained_run, device="cpu")
    path = tmp_path / "state_dict.pt"
    torch.save(lm.model.state_dict(), path)
    error = assert_one_line_error(path)
    assert "not a charlstm checkpoint" in str(error)


def test_nanogpt_style_checkpoint(trained_run, tmp_path):
    lm = charlstm.load(trained_run, device="cpu")
    path = tmp_path / "ckpt.pt"
    torch.save({"model": lm.model.state_dict(), "model_args": {"n_layer": 2, "n_embd": 64},
                "iter_num": 1, "best_val_loss": torch.tensor(1.0)}, path)
    error = assert_one_line_error(path)
    assert "not a charlstm checkpoint" in str(error)


def test_newer_format_version(trained_run, tmp_path):
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    payload["format_version"] = 99
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    error = assert_one_line_error(path)
    assert "99" in str(error)
    with pytest.raises(CheckpointError):
        charlstm.load(path)


def test_incomplete_checkpoint(trained_run, tmp_path):
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    del payload["vocab"]
    path = tmp_path / "incomplete.pt"
    torch.save(payload, path)
    error = assert_one_line_error(path)
    assert "vocab" in str(error)


def test_damaged_weights_are_checkpoint_errors(trained_run, tmp_path):
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    payload["model_config"]["hidden_size"] += 1  # the weights no longer fit
    path = tmp_path / "mismatch.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        charlstm.load(path, device="cpu")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------- atomic writes


def small_payload(value: float) -> dict:
    return {"model_config": {}, "vocab": {"chars": "ab"},
            "model": {"w": torch.full((3,), value)}}


@pytest.mark.parametrize("broken", ["replace", "fsync", "write"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, broken):
    path = tmp_path / "run" / "last.pt"
    checkpoint.save(small_payload(1.0), path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if broken == "replace":
        monkeypatch.setattr(os, "replace", fail)
    elif broken == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    else:
        import charlstm.data.files as files
        real_fdopen = os.fdopen

        class FailingFile:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(files.os, "fdopen", lambda *a, **k: FailingFile(real_fdopen(*a, **k)))

    with pytest.raises(CheckpointError) as info:
        checkpoint.save(small_payload(2.0), path)
    assert "unchanged" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp files
    assert path.read_bytes() == before
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.full((3,), 1.0))


def test_save_writes_nothing_else(tmp_path):
    path = tmp_path / "last.pt"
    for value in (1.0, 2.0, 3.0):
        checkpoint.save(small_payload(value), path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert torch.equal(checkpoint.load(path)["model"]["w"], torch.full((3,), 3.0))


def test_checkpoint_saved_on_a_gpu_loads_on_the_cpu(trained_run, tmp_path):
    """A file whose tensors say `cuda:0` (as a GPU run writes them) loads on this CPU."""
    payload = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=True)
    registry = torch.serialization._package_registry
    claim_cuda = (-1, lambda storage: "cuda:0", lambda storage, location: None)
    registry.insert(0, claim_cuda)  # tag every storage as a CUDA one while saving
    try:
        torch.save(payload, tmp_path / "gpu.pt")
    finally:
        registry.remove(claim_cuda)
    if not torch.cuda.is_available():  # the file really asks for a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "gpu.pt", weights_only=True)
    loaded = checkpoint.load(tmp_path / "gpu.pt")
    assert all(t.device.type == "cpu" for t in loaded["model"].values())
    for name, value in payload["model"].items():
        assert torch.equal(loaded["model"][name], value)
    lm = charlstm.load(tmp_path / "gpu.pt", device="cpu")
    assert len(lm.sample("the", length=5, seed=0)) == 5


# ------------------------------------------------------------------------ the typed record


def test_the_record_holds_every_key_and_writes_the_same_file(trained_run, tmp_path):
    stored = checkpoint.load(trained_run / "last.pt")
    record = checkpoint.read(trained_run / "last.pt")
    assert set(stored) - {"format"} == {f.name for f in dataclasses.fields(record)}
    assert record.step == stored["step"] and record.history == stored["history"]
    record.save(tmp_path / "again.pt")
    again = checkpoint.load(tmp_path / "again.pt")
    assert list(again) == list(stored)  # the same keys, in the same order


def test_an_early_checkpoint_without_the_later_keys_still_reads(tmp_path):
    model = CharRNN(ModelConfig(vocab_size=3, hidden_size=4, embed_size=2))
    payload = {"model_config": model.config.to_dict(),
               "vocab": Vocabulary.from_text("abc").to_dict(), "model": model.state_dict()}
    checkpoint.save(payload, tmp_path / "early.pt")
    record = checkpoint.read(tmp_path / "early.pt")
    assert record.history == [] and record.lr_scale == 1.0 and record.step is None
    assert record.summary(tmp_path / "early.pt")["best_step"] is None
    with pytest.raises(CheckpointError, match="cannot resume this run: 'optimizer'"):
        record.check_resumable()


def test_summary_is_what_info_json_prints(trained_run):
    path = trained_run / "last.pt"
    printed = json.loads(CliRunner().invoke(app, ["info", str(path), "--json"]).stdout)
    assert printed == json.loads(json.dumps(checkpoint.read(path).summary(path)))
