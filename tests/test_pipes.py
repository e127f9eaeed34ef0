"""The command line as a Unix filter: per-line sampling, stop strings, JSON metrics from
training, and the validation sparkline; real subprocesses where pipes matter."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from charlstm.cli.output import sparkline

from conftest import TINY_SETTINGS, invoke, isolate_cli, run_cli


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    return isolate_cli(tmp_path, monkeypatch)


def train_flags(**overrides) -> list[str]:
    settings = {**TINY_SETTINGS, **overrides}
    return [part for key, value in settings.items()
            for part in (f"--{key.replace('_', '-')}", str(value))]


# ------------------------------------------------------------------------- each line


def test_each_line_continues_every_line_in_order(trained_run, tmp_path):
    lines = ["the quick", "", "a stitch in", "all that Ωglitters", "the lazy"]
    result = run_cli("sample", str(trained_run), "--each-line", "--stop-at", r"\n",
                     "-n", "80", "-t", "0", cwd=tmp_path, stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode().split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines)  # one row per input line
    for line, row in zip(lines, out):
        assert row.startswith(line)
    # greedy continuations of the memorised text: each line goes on as in the corpus
    assert out[0].startswith("the quick brown fox")
    stderr = result.stderr.decode()
    assert "1 line(s) had characters the model never saw" in stderr


def test_each_line_batches_many_lines(trained_run, tmp_path):
    lines = [f"the {i}" for i in range(150)]  # digits are unknown to the model: left out
    result = run_cli("sample", str(trained_run), "--each-line", "--no-echo", "--stop-at",
                     r"\n", "-n", "40", "--seed", "3", cwd=tmp_path,
                     stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr.decode()
    rows = result.stdout.decode().splitlines()
    assert len(rows) == 150


def test_each_line_refuses_a_prime(trained_run):
    result = invoke("sample", str(trained_run), "--each-line", "-p", "the")
    assert result.exit_code == 2 and "--each-line" in result.stderr


def test_stop_at_in_plain_sampling(trained_run, tmp_path):
    result = run_cli("sample", str(trained_run), "-p", "the", "--stop-at", ".", "-n", "500",
                     "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    text = result.stdout.decode()
    assert text.endswith(".\n") and text.count(".") == 1


# ------------------------------------------------------------------------ train --json


def test_train_json_writes_one_record_per_evaluation(tiny_corpus, tmp_path):
    result = run_cli("train", str(tiny_corpus), "--out", "run", "--json", "-q",
                     *train_flags(max_steps=60, eval_every=20), cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60]
    assert all(r["val_bpc"] > 0 for r in records)
    assert result.stderr  # progress and messages stay on stderr
    assert b"{" not in result.stderr


def test_train_json_into_head_ends_quietly(tiny_corpus, tmp_path):
    command = (f"{sys.executable} -m charlstm train {tiny_corpus} --out run --json -q "
               + " ".join(train_flags(max_steps=500, eval_every=10)) + " | head -n 1")
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=tmp_path,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 1
    assert "Traceback" not in result.stderr.decode()
    assert (tmp_path / "run" / "last.pt").exists()


# ------------------------------------------------------------------------- sparkline


def test_sparkline_rises_and_falls_with_the_values():
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"  # the middle rounds up: 3.5 of 7 steps
    assert sparkline([1.0, 1.0]) == "▁▁"
    assert len(sparkline([float(i % 7) for i in range(500)], width=40)) == 40


def test_info_shows_the_validation_curve(trained_run):
    result = invoke("info", str(trained_run))
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("validation"))
    assert any(c in row for c in "▁▂▃▄▅▆▇█") and "bits/char" in row


# ------------------------------------------------------------------- shell completion


def test_shell_completion_script_and_what_it_completes(tmp_path):
    # typer finds the shell by walking up the process tree (shellingham): run it from
    # bash, as a user does, not from whatever started pytest (there may be no shell);
    # a second command keeps bash from replacing itself with the first
    script = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m charlstm "
                             "--show-completion; exit $?"], cwd=tmp_path, capture_output=True,
                            stdin=subprocess.DEVNULL, timeout=120)
    assert script.returncode == 0, script.stderr.decode() + script.stdout.decode()
    assert "complete -o default -F _charlstm_completion charlstm" in script.stdout.decode()

    def complete(words: str, index: int) -> set[str]:
        result = run_cli(cwd=tmp_path, env={"_CHARLSTM_COMPLETE": "complete_bash",
                                            "COMP_WORDS": words, "COMP_CWORD": str(index)})
        assert result.returncode == 0, result.stderr.decode()
        return set(result.stdout.decode().split())

    assert {"sample", "score"} <= complete("charlstm s", 1)
    assert "--stop-at" in complete("charlstm sample --st", 2)
    assert complete("charlstm corpus ", 2) >= {"list", "get", "prepare"}
