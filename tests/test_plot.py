"""Tests for the training plot: the curve the trainer records, `charlstm plot`, the PNG
written at the end of training, and the message when matplotlib is missing."""

from __future__ import annotations

import io
import shutil
import struct
import sys
from pathlib import Path

import pytest

from charlstm import checkpoint
from charlstm.training.losses import CURVE_POINTS, LOG_EVERY

from conftest import TINY_SETTINGS, invoke, isolate_cli, one_line_error, run_cli

import matplotlib  # noqa: E402,F401  (the plot extra; `pip install -e .[test]` brings it)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HIDE_MATPLOTLIB = ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")


def check_png(data: bytes) -> tuple[int, int]:
    """A valid, non-trivial PNG: signature, header, and a picture that is not blank."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    assert len(data) > 10_000  # lines, labels and a legend, not an empty canvas
    from matplotlib import image

    pixels = image.imread(io.BytesIO(data), format="png")  # (H, W, 4) floats in [0, 1]
    assert pixels.shape[:2] == (height, width)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((blue > 0.6) & (red < 0.3)).sum() > 200  # the training curve (blue)
    assert ((red > 0.9) & (green > 0.4) & (green < 0.6) & (blue < 0.2)).sum() > 50  # validation
    return width, height


def test_each_evaluation_carries_the_training_curve_since_the_last(trained_run):
    history = checkpoint.load(trained_run / "last.pt")["history"]
    every = TINY_SETTINGS["eval_every"]
    curve_every = LOG_EVERY * max(1, every // (CURVE_POINTS * LOG_EVERY))
    previous = 0
    for record in history:
        steps = [step for step, _ in record["train_curve"]]
        assert steps == list(range(previous + curve_every, record["step"] + 1, curve_every))
        assert all(loss > 0 for _, loss in record["train_curve"])
        previous = record["step"]
    first, last = history[0]["train_curve"], history[-1]["train_curve"]
    assert last[-1][1] < first[0][1]  # it learned


def test_plot_writes_a_png_into_the_run_folder(trained_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "loss.png").unlink(missing_ok=True)
    isolate_cli(tmp_path, monkeypatch)
    result = invoke("plot", run)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / "loss.png")
    # the loss, and under it the gradient norm (the run records it)
    assert check_png((run / "loss.png").read_bytes()) == (800, 650)
    assert not list(run.glob(".*.part"))  # written atomically


def test_plot_to_stdout_and_to_a_named_file(trained_run, tmp_path):
    to_stdout = run_cli("plot", str(trained_run / "best.pt"), "-o", "-", cwd=tmp_path)
    assert to_stdout.returncode == 0 and to_stdout.stderr == b""
    check_png(to_stdout.stdout)
    named = tmp_path / "figures" / "curve.png"
    result = run_cli("plot", str(trained_run), "--output", str(named), cwd=tmp_path)
    assert result.returncode == 0
    check_png(named.read_bytes())


def test_plot_without_matplotlib_says_how_to_install_it(trained_run, tmp_path, monkeypatch):
    isolate_cli(tmp_path, monkeypatch)
    for name in HIDE_MATPLOTLIB:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    result = invoke("plot", trained_run, "-o", tmp_path / "x.png")
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert line.endswith("plotting needs matplotlib: pip install matplotlib (charlstm's "
                         "[plot] extra)")
    assert not (tmp_path / "x.png").exists()


def test_plot_of_a_run_with_no_evaluations_is_one_clean_line(trained_run, tmp_path):
    saved = checkpoint.load(trained_run / "last.pt")
    saved["history"] = []
    checkpoint.save(saved, tmp_path / "fresh.pt")
    result = run_cli("plot", str(tmp_path / "fresh.pt"), cwd=tmp_path)
    assert result.returncode == 1
    assert "nothing to plot" in one_line_error(result.stderr.decode())


def test_training_ends_by_writing_the_plot(tiny_corpus, tmp_path, monkeypatch):
    isolate_cli(tmp_path, monkeypatch)
    result = invoke("train", tiny_corpus, "--out", tmp_path / "run", "--max-steps", "40",
                    "--eval-every", "20", "--num-layers", "1", "--hidden-size", "32",
                    "--batch-size", "8", "--seq-len", "16", "--precision", "fp32", "-q")
    assert result.exit_code == 0, result.output
    assert f"loss plot: {tmp_path / 'run' / 'loss.png'}" in result.stderr
    check_png((tmp_path / "run" / "loss.png").read_bytes())


def test_training_without_matplotlib_still_succeeds_and_hints(tiny_corpus, tmp_path,
                                                              monkeypatch):
    isolate_cli(tmp_path, monkeypatch)
    for name in HIDE_MATPLOTLIB:
        monkeypatch.setitem(sys.modules, name, None)
    result = invoke("train", tiny_corpus, "--out", tmp_path / "run", "--max-steps", "20",
                    "--eval-every", "20", "--num-layers", "1", "--hidden-size", "32",
                    "--batch-size", "8", "--seq-len", "16", "--precision", "fp32", "-q")
    assert result.exit_code == 0, result.output
    assert ("no loss plot written; for one: pip install matplotlib (charlstm's [plot] "
            "extra)") in result.stderr
    assert not (tmp_path / "run" / "loss.png").exists()
    assert (tmp_path / "run" / "last.pt").exists()
