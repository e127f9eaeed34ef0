"""Shared fixtures: a tiny corpus, a tiny trained run, and a way to run the real CLI.

Everything is CPU, seeded and small, so the default test run stays fast.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import charlstm
from charlstm.cli import app

# One thread: tiny models gain nothing from more, and on a 2-core machine the CLI tests'
# subprocesses would otherwise fight this process's threads (10x slowdowns were seen).
torch.set_num_threads(1)

TINY_TEXT = (
    "the quick brown fox jumps over the lazy dog.\n"
    "a stitch in time saves nine.\n"
    "all that glitters is not gold.\n"
) * 60  # about 6,300 characters, 30 distinct

# a model and schedule small enough to train in a second or two
# (it memorises TINY_TEXT: validation loss ends near 0.14 nats/char)
TINY_SETTINGS = dict(num_layers=1, hidden_size=64, embed_size=16, dropout=0.0,
                     batch_size=8, seq_len=16, lr=1e-2, max_steps=100, eval_every=50,
                     sample_length=40, precision="fp32", device="cpu", warmup_steps=5)

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A finished tiny run folder (last.pt, best.pt, metrics.jsonl, config.json)."""
    root = tmp_path_factory.mktemp("trained")
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    result = charlstm.train(str(corpus), out=root / "run", corpora_dir=root / "corpora",
                            checkpoints_dir=root / "checkpoints", **TINY_SETTINGS)
    return result.run_dir


def isolate_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path, with corpora and runs kept there and no debug tracebacks."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLSTM_CORPORA", str(tmp_path / "corpora"))
    monkeypatch.setenv("CHARLSTM_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("CHARLSTM_DEBUG", raising=False)
    return tmp_path


def invoke(*args, input: str | bytes | None = None, env: dict | None = None):
    """The command line in this process (typer's CliRunner): fast, and output captured."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env,
                              prog_name="charlstm")


def run_cli(*args: str, cwd: Path, stdin: str | bytes | None = None, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m charlstm ARGS` in a real subprocess; stdout and stderr as bytes."""
    full_env = {**os.environ, "CHARLSTM_CORPORA": str(cwd / "corpora"), **(env or {})}
    full_env.pop("CHARLSTM_DEBUG", None)
    data = stdin.encode("utf-8") if isinstance(stdin, str) else stdin
    return subprocess.run([sys.executable, "-m", "charlstm", *args], cwd=cwd, env=full_env,
                          input=data, stdin=None if data is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


def pipe_into(args: list[str], reader: str, cwd: Path, stdin_file: str | None = None,
              timeout: float = 60) -> tuple[str, bytes, bytes]:
    """Run `python -m charlstm ARGS [<stdin_file] | READER` in a shell, as a user would.

    Returns charlstm's exit status (as text), what the reader wrote, and charlstm's stderr.
    The test fails if the pipeline is still running after `timeout` seconds: charlstm did
    not notice that its reader had gone.
    """
    source = f" <{shlex.quote(stdin_file)}" if stdin_file else ""
    command = (f"{{ {shlex.quote(sys.executable)} -m charlstm {shlex.join(args)}{source} "
               f"2>err.txt; echo $? >status.txt; }} | {reader} >out.txt")
    shell = subprocess.Popen(command, shell=True, cwd=cwd, stdin=subprocess.DEVNULL,
                             start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        shell.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()
        pytest.fail(f"charlstm {args[0]} kept running after `{reader}` closed the pipe")
    return ((cwd / "status.txt").read_text().strip(), (cwd / "out.txt").read_bytes(),
            (cwd / "err.txt").read_bytes())


def one_line_error(stderr: str) -> str:
    """An expected failure's stderr: one line naming charlstm and an error, no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("charlstm"), line
    assert "error" in line, line
    assert "internal error" not in line, line  # an expected failure, explained
    return line


def body_of(stdout: str, length: int) -> str:
    """The generated text of a --no-echo sample of `length` characters.

    `sample` ends its output with a newline only when the text does not already end with
    one, so stdout is the text plus "\\n", or exactly the text when it ends with "\\n".
    """
    assert stdout.endswith("\n"), repr(stdout[-20:])
    if len(stdout) == length:
        return stdout
    assert len(stdout) == length + 1, (len(stdout), length)
    return stdout[:-1]


def with_final_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def assert_same_training(ours: dict, theirs: dict) -> None:
    """Two checkpoints (dicts as checkpoint.load returns them) hold bitwise the same
    model, optimizer state and evaluation history (wall-clock fields aside): what an
    interrupted and resumed run must share with an uninterrupted one."""
    assert ours["step"] == theirs["step"]
    for name, value in theirs["model"].items():
        assert torch.equal(ours["model"][name], value), name
    for key, state in theirs["optimizer"]["state"].items():
        for field, value in state.items():
            assert torch.equal(ours["optimizer"]["state"][key][field], value), (key, field)
    wall_clock = ("elapsed", "time")

    def history(saved: dict) -> list[dict]:
        return [{k: v for k, v in record.items() if k not in wall_clock}
                for record in saved["history"]]

    assert history(ours) == history(theirs)
