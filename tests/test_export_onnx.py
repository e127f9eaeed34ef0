"""charlstm export --format onnx, run by onnxruntime: the logits of PyTorch, and the
docs' NumPy sampler."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import charlstm
from charlstm.export.exporting import export

from conftest import TINY_TEXT, invoke
from exporting import save_random_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"


def session_and_state(path: Path, lm):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    config = lm.config
    names = [i.name for i in session.get_inputs()][1:]
    zeros = np.zeros((config.num_layers, 1, config.hidden_size), np.float32)
    return session, {name: zeros for name in names}


def torch_logits(lm, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        logits, _, _ = lm.model(torch.tensor([ids]))
    return logits[0].numpy()


@pytest.mark.parametrize("model", ["trained", "lstm", "gru", "rnn"])
def test_onnx_logits_equal_pytorch_over_1000_characters(tmp_path, trained_run, model):
    source = trained_run if model == "trained" else save_random_model(tmp_path, model, 2)
    lm = charlstm.load(source)
    path = export(source, "onnx", tmp_path / f"{model}.onnx")
    text = (TINY_TEXT * 2)[:1000] if model == "trained" else "".join(
        np.random.default_rng(0).choice(list(lm.vocab.chars), 1000))
    ids = lm.vocab.encode(text)
    expected = torch_logits(lm, ids)  # (1000, V)
    session, state = session_and_state(path, lm)

    whole, *_ = session.run(None, {"ids": np.array([ids], np.int64), **state})
    assert np.abs(whole[0] - expected).max() < 1e-4

    stepped = []
    for i in ids:  # the one-character step, its state fed back
        logits, *new_state = session.run(None, {"ids": np.array([[i]], np.int64), **state})
        state = dict(zip(state, new_state))
        stepped.append(logits[0, -1])
    assert np.abs(np.stack(stepped) - expected).max() < 1e-4


def test_the_graph_carries_its_vocabulary_and_takes_batches(tmp_path):
    source = save_random_model(tmp_path, "lstm", 1)
    lm = charlstm.load(source)
    path = export(source, "onnx")
    session, _ = session_and_state(path, lm)
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["charlstm_format"] == "charlstm-onnx"
    assert json.loads(meta["vocab"])["chars"] == lm.vocab.chars
    assert json.loads(meta["model_config"])["hidden_size"] == 24
    batch = np.array([lm.vocab.encode("the fox"), lm.vocab.encode("lazy do")], np.int64)
    zeros = np.zeros((1, 2, 24), np.float32)
    logits, h, c = session.run(None, {"ids": batch, "h": zeros, "c": zeros})
    assert logits.shape == (2, 7, len(lm.vocab)) and h.shape == c.shape == (1, 2, 24)
    for row in range(2):
        assert np.abs(logits[row] - torch_logits(lm, batch[row].tolist())).max() < 1e-4


def test_the_docs_numpy_sampler_runs_without_torch(tmp_path, trained_run):
    export(trained_run, "onnx", tmp_path / "best.onnx")
    section = DOCS.read_text(encoding="utf-8").split("### Sampling with onnxruntime")[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    guarded = "import sys\nsys.modules['torch'] = None  # importing torch now fails\n"
    result = subprocess.run([sys.executable, "-c", guarded + snippet], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("the ") and len(result.stdout) == len("the ") + 200 + 1
    assert set(result.stdout) <= set(TINY_TEXT)


def test_a_foreign_onnx_file_is_not_replaced(tmp_path):
    source = save_random_model(tmp_path, "rnn", 1)
    foreign = tmp_path / "theirs.onnx"
    foreign.write_bytes(b"\x08\x07")
    result = invoke("export", source, "-f", "onnx", "-o", foreign)
    assert result.exit_code == 2 and "not a charlstm onnx export" in result.stderr
    assert foreign.read_bytes() == b"\x08\x07"
    mine = export(source, "onnx", tmp_path / "mine.onnx")
    assert export(source, "onnx", mine) == mine  # its own export it may replace
