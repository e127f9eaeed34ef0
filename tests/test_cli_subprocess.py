"""The command line as a real Unix process: `python -m charlstm` and the `charlstm` script,
with real pipes, stdin, exit statuses and signals.

Each subprocess pays for importing torch (about 2 s), so the cheap per-option checks live in
test_cli.py (in-process); here each process proves something only a process can.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import charlstm
from charlstm import checkpoint

from conftest import (TINY_TEXT, body_of, one_line_error, pipe_into, run_cli,
                      with_final_newline)

# the end-to-end command of the brief: a 64-unit LSTM that memorises TINY_TEXT in 100 steps
E2E_FLAGS = ["--num-layers", "1", "--hidden-size", "64", "--embed-size", "16",
             "--batch-size", "8", "--seq-len", "16", "--lr", "0.01", "--max-steps", "100",
             "--eval-every", "50", "--precision", "fp32", "--device", "cpu",
             "--warmup-steps", "5", "--dropout", "0"]
# a model too small to learn, for runs that only need to happen
SMALL_FLAGS = ["--num-layers", "1", "--hidden-size", "16", "--embed-size", "8",
               "--batch-size", "4", "--seq-len", "8", "--precision", "fp32", "--device", "cpu"]
ANSI = b"\x1b["
FORCING_COLOUR = ("FORCE_COLOR", "TTY_COMPATIBLE", "CLICOLOR_FORCE", "CHARLSTM_DEBUG")


@pytest.fixture(scope="module", autouse=True)
def plain_environment():
    """No variable that would force colour on, whatever the machine running the tests has.

    One thread per process: the tiny models here run no slower on one, and two threads
    stall badly when the machine is busy with other work (each op waits for both).
    """
    with pytest.MonkeyPatch.context() as mp:
        for name in FORCING_COLOUR:
            mp.delenv(name, raising=False)
        mp.setenv("OMP_NUM_THREADS", "1")
        yield


def text(data: bytes) -> str:
    return data.decode("utf-8")


def assert_clean_error(result: subprocess.CompletedProcess, code: int) -> str:
    """An expected failure: the exit code, one line on stderr, nothing on stdout."""
    stderr = text(result.stderr)
    assert result.returncode == code, (result.returncode, stderr)
    assert result.stdout == b""
    return one_line_error(stderr)


# ----------------------------------------------------------------------------- entry points


def test_module_entry_point_shows_help_without_colour(tmp_path):
    """`python -m charlstm` (which every run_cli call uses) with the richest output: help."""
    result = run_cli("train", "--help", cwd=tmp_path, env={"NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    out = text(result.stdout)
    assert "Usage" in out and "--max-steps" in out and "Checkpointing" in out
    assert result.stderr == b""
    assert ANSI not in result.stdout


def test_console_script_works(tmp_path):
    script = shutil.which("charlstm")
    if script is None:
        pytest.skip("the charlstm console script is not on PATH")
    result = subprocess.run([script, "--version"], cwd=tmp_path, capture_output=True,
                            stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 0, result.stderr
    assert text(result.stdout) == f"charlstm {charlstm.__version__}\n"
    assert result.stderr == b""


# ----------------------------------------------------------------------------- train, sample


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    """The brief's training command, run once as a real process (with NO_COLOR=1)."""
    folder = tmp_path_factory.mktemp("e2e")
    (folder / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    result = run_cli("train", "tiny.txt", "--out", "run", *E2E_FLAGS, cwd=folder,
                     env={"NO_COLOR": "1"})
    return folder, result


def test_train_writes_only_to_stderr_and_leaves_a_complete_run(e2e):
    folder, result = e2e
    stderr = text(result.stderr)
    assert result.returncode == 0, stderr
    assert result.stdout == b""
    assert "step 50: train loss" in stderr and "step 100: train loss" in stderr
    assert "validation" in stderr
    assert "sample at step 50" in stderr and "sample at step 100" in stderr
    assert "Traceback" not in stderr
    run = folder / "run"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "config.json"):
        assert (run / name).is_file(), name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [50, 100]
    assert all(r["val_loss"] > 0 for r in records)
    json.loads((run / "config.json").read_text())
    assert checkpoint.load(run / "last.pt")["step"] == 100


def test_train_output_has_no_ansi_codes(e2e):
    _, result = e2e
    assert ANSI not in result.stdout
    assert ANSI not in result.stderr


def test_sample_prints_only_the_text(e2e):
    folder, _ = e2e
    result = run_cli("sample", "run", "-n", "200", "--seed", "1", "-t", "0", "--no-echo",
                     cwd=folder, env={"NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    body = body_of(text(result.stdout), 200)
    assert set(body) <= set(TINY_TEXT)
    assert ANSI not in result.stdout


def test_sample_with_a_seed_is_reproducible_across_processes(e2e):
    """The same seed gives the same text in another process (here: this one's library)."""
    folder, _ = e2e
    result = run_cli("sample", "run", "-n", "100", "--seed", "5", "-t", "1.2", "--no-echo",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    lm = charlstm.load(folder / "run", "cpu")
    assert body_of(text(result.stdout), 100) == lm.sample("", 100, temperature=1.2, seed=5)
    assert lm.sample("", 100, temperature=1.2, seed=6) != lm.sample("", 100, temperature=1.2,
                                                                     seed=5)


def test_sample_echo_starts_with_the_prime(e2e):
    folder, _ = e2e
    result = run_cli("sample", "run", "-n", "50", "--seed", "1", "-p", "the ", "--echo",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    out = text(result.stdout)
    assert out.startswith("the ")
    assert len(body_of(out[len("the "):], 50)) == 50


# ----------------------------------------------------------------------------- stdin


@pytest.mark.parametrize("options", [[], ["--prime-file", "-"]])
def test_sample_takes_the_prime_from_stdin(trained_run, tmp_path, options):
    prime = "the \n"  # what `echo "the "` writes
    result = run_cli("sample", str(trained_run), "-n", "50", "--seed", "1", *options,
                     cwd=tmp_path, stdin=prime)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    out = text(result.stdout)
    assert out.startswith(prime)
    lm = charlstm.load(trained_run, "cpu")
    assert out == with_final_newline(prime + lm.sample(prime, 50, seed=1))


def test_train_reads_the_corpus_from_stdin(tmp_path):
    result = run_cli("train", "-", "--out", "run", *SMALL_FLAGS, "--max-steps", "10",
                     "--eval-every", "10", cwd=tmp_path, stdin=TINY_TEXT,
                     env={"NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    assert ANSI not in result.stderr
    saved = checkpoint.load(tmp_path / "run" / "last.pt")
    assert saved["step"] == 10
    assert saved["corpus"]["source"] == "-"
    assert saved["corpus"]["characters"] == len(TINY_TEXT)
    assert set(saved["vocab"]["chars"]) == set(TINY_TEXT)


def train_reporting_every_step(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`charlstm train ARGS` in a real process whose stderr is a pipe, not a terminal, with
    the plain step lines due at every report (not every 10 s), so a short run shows them."""
    script = ("import sys; import charlstm.cli.progress as progress; "
              "progress.PLAIN_REPORT_SECONDS = 0; from charlstm.cli import main; "
              "sys.argv = ['charlstm', *sys.argv[1:]]; main()")
    env = {**os.environ, "CHARLSTM_CORPORA": str(cwd / "corpora"), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-c", script, "train", *args], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


def test_train_quiet_prints_the_evaluations_and_the_end_but_no_step_lines(tmp_path):
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    flags = ["tiny.txt", *SMALL_FLAGS, "--max-steps", "40", "--eval-every", "20",
             "--sample-length", "20"]
    step_line = re.compile(r"^step [\d,]+/[\d,]+  loss ", re.MULTILINE)
    loud = train_reporting_every_step([*flags, "--out", "loud"], tmp_path)
    assert loud.returncode == 0, text(loud.stderr)
    assert step_line.search(text(loud.stderr))  # the plain step lines this run would show
    quiet = train_reporting_every_step([*flags, "--out", "quiet", "-q"], tmp_path)
    stderr = text(quiet.stderr)
    assert quiet.returncode == 0, stderr
    assert quiet.stdout == b""
    assert not step_line.search(stderr), stderr
    assert "sample at step" not in stderr
    assert "step 20: train loss" in stderr and "step 40: train loss" in stderr
    assert "charlstm: done after 40 steps" in stderr and "charlstm: sample with:" in stderr


# ----------------------------------------------------------------------------- pipes


def test_endless_sample_into_head_ends_quietly(trained_run, tmp_path):
    """`charlstm sample RUN -n 0 | head -c 200`: the sampler stops when head leaves."""
    started = time.monotonic()
    status, out, err = pipe_into(["sample", str(trained_run), "-n", "0"], "head -c 200",
                                 tmp_path, timeout=30)
    assert time.monotonic() - started < 30
    assert len(out) == 200
    assert status == "0"
    assert err == b""


# ----------------------------------------------------------------------------- no colour


@pytest.mark.parametrize("args", [["info", "RUN"], ["corpus", "list"]])
def test_no_ansi_codes_with_no_color_or_on_a_pipe(trained_run, tmp_path, args):
    args = [str(trained_run) if a == "RUN" else a for a in args]
    result = run_cli(*args, cwd=tmp_path, env={"NO_COLOR": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert ANSI not in result.stdout
    assert ANSI not in result.stderr


# ----------------------------------------------------------------------------- errors


@pytest.fixture
def bad_inputs(tmp_path: Path) -> Path:
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    (tmp_path / "binary.txt").write_bytes(b"plain text, then \xc3\x28 a broken sequence")
    (tmp_path / "random.pt").write_bytes(os.urandom(2048))
    return tmp_path


@pytest.mark.parametrize("args, code, names", [
    (["train", "binary.txt", "--out", "run"], 1, "byte offset 17"),
    (["train", "tiny.txt", "--no-such-option"], 2, "--no-such-option"),
    (["sample", "random.pt"], 1, "random.pt"),
])
def test_bad_input_is_one_line_on_stderr(bad_inputs, args, code, names):
    line = assert_clean_error(run_cli(*args, cwd=bad_inputs), code)
    assert names in line
    assert not (bad_inputs / "run").exists()


def test_debug_env_shows_the_traceback(tmp_path):
    env = {**os.environ, "CHARLSTM_DEBUG": "1"}
    result = subprocess.run([sys.executable, "-m", "charlstm", "sample", "missing.pt"],
                            cwd=tmp_path, env=env, capture_output=True,
                            stdin=subprocess.DEVNULL, timeout=120)
    stderr = text(result.stderr)
    assert result.returncode != 0
    assert "Traceback" in stderr
    assert "missing.pt" in stderr
    assert result.stdout == b""


# ----------------------------------------------------------------------------- signals


def stop_training(folder: Path, sig: signal.Signals) -> tuple[int, str]:
    """Start a long training run, signal it once it has saved, and wait for it to end."""
    (folder / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    env = {**os.environ, "CHARLSTM_CORPORA": str(folder / "corpora")}
    with open(folder / "out.txt", "wb") as out, open(folder / "err.txt", "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "charlstm", "train", "tiny.txt", "--out", "run",
             *SMALL_FLAGS, "--max-steps", "100000", "--eval-every", "20",
             "--sample-length", "20"],
            cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 90
            while not (folder / "run" / "last.pt").exists():
                assert process.poll() is None, (folder / "err.txt").read_text()
                assert time.monotonic() < deadline, "no checkpoint within 90 s"
                time.sleep(0.05)
            process.send_signal(sig)
            code = process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert (folder / "out.txt").read_bytes() == b""
    return code, (folder / "err.txt").read_text()


@pytest.mark.slow  # two training processes: about 10-20 s
def test_ctrl_c_saves_and_the_run_resumes(tmp_path):
    code, stderr = stop_training(tmp_path, signal.SIGINT)
    assert code == 130, stderr
    assert "resume" in stderr
    assert "Traceback" not in stderr
    step = checkpoint.load(tmp_path / "run" / "last.pt")["step"]
    assert step >= 20  # at least the first evaluation's checkpoint, then one more save

    target = step + 20
    resumed = run_cli("train", "--out", "run", "--resume", "--max-steps", str(target),
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == b""
    assert f"resuming at step {step:,}" in text(resumed.stderr)
    assert checkpoint.load(tmp_path / "run" / "last.pt")["step"] == target


def test_sigterm_saves_and_exits_143(tmp_path):
    code, stderr = stop_training(tmp_path, signal.SIGTERM)
    assert code == 143, stderr
    assert "resume" in stderr
    assert "Traceback" not in stderr
    assert checkpoint.load(tmp_path / "run" / "last.pt")["step"] >= 20
