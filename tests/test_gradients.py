"""The gradient during training: each step's norm before clipping and whether clipping
acted, in metrics.jsonl, the display and the plot."""

from __future__ import annotations

import io
import json

import pytest
import torch

import charlstm
from charlstm.cli.progress import TrainingDisplay
from charlstm.training.callbacks import StepStats

from conftest import TINY_SETTINGS


def train_watching_norms(tmp_path, monkeypatch, grad_clip: float):
    """A tiny run of 20 steps (evaluations at 10 and 20), and every norm
    clip_grad_norm_ returned, in order."""
    returned = []
    clip = torch.nn.utils.clip_grad_norm_

    def watched(*args, **kwargs):
        norm = clip(*args, **kwargs)
        returned.append(float(norm))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", watched)
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 80)
    result = charlstm.train(str(corpus), out=tmp_path / "run", corpora_dir=tmp_path / "c",
                            checkpoints_dir=tmp_path / "k",
                            **{**TINY_SETTINGS, "max_steps": 20, "eval_every": 10,
                               "sample_length": 0, "grad_clip": grad_clip})
    records = [json.loads(line) for line in
               (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return records, returned


def test_metrics_hold_clip_grad_norms_return_and_the_steps_clipped(tmp_path, monkeypatch):
    records, norms = train_watching_norms(tmp_path, monkeypatch, grad_clip=0.5)
    assert len(norms) == 20 and [r["step"] for r in records] == [10, 20]
    for record, window in zip(records, (norms[:10], norms[10:])):
        assert record["grad_norm"] == pytest.approx(sum(window) / 10, rel=1e-6)
        assert record["grad_norm_max"] == pytest.approx(max(window), rel=1e-6)
        assert record["grad_clipped"] == sum(norm > 0.5 for norm in window)
        assert record["grad_steps"] == 10 and record["grad_clip"] == 0.5
        assert record["grad_curve"] == [[record["step"], pytest.approx(sum(window) / 10)]]
    assert sum(r["grad_clipped"] for r in records) > 0  # the tiny run's early steps clip


def test_with_clipping_off_nothing_is_reported_clipped(tmp_path, monkeypatch):
    records, norms = train_watching_norms(tmp_path, monkeypatch, grad_clip=0.0)
    assert max(norms) > 0.5  # clipping at 0.5 would have acted
    assert all(r["grad_clipped"] == 0 and r["grad_clip"] is None for r in records)
    assert records[0]["grad_norm"] == pytest.approx(sum(norms[:10]) / 10, rel=1e-6)


def test_the_display_says_how_often_clipping_acted():
    stream = io.StringIO()
    display = TrainingDisplay(stream=stream, live=False)
    display.last_plain_report = -1e9
    display.on_step(StepStats(20, 0.5, 1.5, 1e-3, 1000.0, 3.0, 2.25, 4, 10))
    assert "grad 2.25 (clipped 4 of 10)" in stream.getvalue()
    display.last_plain_report = -1e9
    display.on_step(StepStats(30, 0.5, 1.5, 1e-3, 1000.0, 3.0, 0.8, 0, 10))
    assert "grad 0.8  " in stream.getvalue().splitlines()[-1]


def test_the_plot_draws_the_gradient_under_the_loss(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from charlstm.training.plot import plot_history

    records, _ = train_watching_norms(tmp_path, monkeypatch, grad_clip=0.5)
    buffer = io.BytesIO()
    plot_history(records, buffer, "run")
    assert buffer.getvalue().startswith(b"\x89PNG")
