"""The README's Python example runs as written, against a real (tiny) trained run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from conftest import TINY_TEXT

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    section = README.read_text("utf-8").split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_python_example_runs(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLSTM_CORPORA", str(tmp_path / "corpora"))
    # the files the example names: a finished run, a log to score, a text to train on
    shutil.copytree(trained_run, tmp_path / "checkpoints" / "pystdlib-lstm1x512")
    (tmp_path / "app.log").write_text("the lazy dog\nnot gold\nthe quick fox\n", "utf-8")
    (tmp_path / "my.txt").write_text(TINY_TEXT, "utf-8")
    torch.manual_seed(0)
    exec(compile(python_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    scored = [line for line in out if "\t" in line]
    assert [line.split("\t")[1] for line in scored] == ["the lazy dog", "not gold",
                                                        "the quick fox"]
    assert all(float(line.split("\t")[0]) >= 0 for line in scored)
    assert (tmp_path / "checkpoints" / "my-lstm1x128" / "last.pt").exists()
    assert float(out[-1].split()[0]) < 3.0  # the tiny run's best validation loss
