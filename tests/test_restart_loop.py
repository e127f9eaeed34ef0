"""A restart loop: every launch is the same `--resume` command line, killed again and again.

As `until charlstm train my.txt --out runs/a --resume; do sleep 5; done` on a preemptible
machine would run it. Launches are SIGKILLed in turn during start-up (before the model is
built, the first one before the run folder even exists), after training has begun but
before the launch's first save (the second one: a folder with config.json and no
checkpoint), and just after a save made by `--save-every` (between evaluations). The last
launch runs to the end. The run must equal one that was never killed: every parameter,
the optimizer state and the evaluation history (less its wall-clock fields).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from charlstm import checkpoint

from conftest import TINY_TEXT, assert_same_training, run_cli

KILLS = 9  # three rounds of: in start-up, before the launch's first save, after a save
STEPS = 2400
EVAL_EVERY = STEPS // 3
FLAGS = ["--num-layers", "1", "--hidden-size", "64", "--embed-size", "16", "--dropout", "0.1",
         "-b", "8", "--seq-len", "16", "--lr", "1e-2", "--max-steps", str(STEPS),
         "--eval-every", str(EVAL_EVERY), "--save-every", "0.5s", "--sample-length", "0",
         "--precision", "fp32", "--device", "cpu", "-q", "--resume"]
NOTICE = b"nothing to resume in"


def saved_step(run: Path) -> int | None:
    """The step of the run's last.pt (which must load whenever it is there)."""
    return checkpoint.load(run / "last.pt")["step"] if (run / "last.pt").exists() else None


def launch(corpus: Path, run: Path, cwd: Path) -> subprocess.Popen:
    """The one command line of every launch."""
    env = {**os.environ, "CHARLSTM_CORPORA": str(cwd / "corpora")}
    env.pop("CHARLSTM_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "charlstm", "train", str(corpus), "--out", str(run), *FLAGS],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)


def until_training(process: subprocess.Popen) -> bytes:
    """What the launch says on stderr until it starts training."""
    said = b""
    for line in process.stderr:
        said += line
        if b"writing" in line:
            return said
    raise AssertionError(f"the launch ended before training: {said.decode()[-2000:]}")


def file_id(path: Path) -> int | None:
    """Which file is at `path` (a save renames a new file over it)."""
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def until_saved(run: Path, process: subprocess.Popen) -> None:
    """Wait until the launch has saved a checkpoint."""
    before = file_id(run / "last.pt")
    while file_id(run / "last.pt") == before:
        assert process.poll() is None, "the launch ended before it saved"
        time.sleep(0.01)


def kill(process: subprocess.Popen) -> bytes:
    process.send_signal(signal.SIGKILL)
    said = process.communicate(timeout=60)[1]
    assert process.returncode == -signal.SIGKILL, "finished before it was killed"
    return said


@pytest.mark.slow
def test_one_resume_command_line_for_every_launch_ends_as_an_uninterrupted_run(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    reference = run_cli("train", str(corpus), "--out", "reference", *FLAGS, cwd=tmp_path,
                        timeout=600)
    assert reference.returncode == 0, reference.stderr.decode()[-2000:]

    run, rng = tmp_path / "killed", random.Random(1234)
    steps_seen = []
    for kills in range(KILLS):
        before = saved_step(run)
        process = launch(corpus, run, tmp_path)
        if kills % 3 == 0:  # in start-up: imports, the corpus, the model
            time.sleep(rng.uniform(0.05, 0.5))
            said = kill(process)
            assert b"writing" not in said  # it never began to train
        elif kills % 3 == 1:  # training, but before this launch's first save (unless
            # it resumed just before an evaluation)
            said = until_training(process)
            time.sleep(rng.uniform(0.0, 0.3))  # a save is due 0.5 s after the first step
            said += kill(process)
            assert saved_step(run) == before or saved_step(run) % EVAL_EVERY == 0
        else:  # just after a save (mostly one between evaluations, by --save-every)
            said = until_training(process)
            until_saved(run, process)
            time.sleep(rng.uniform(0.0, 0.1))
            said += kill(process)
        if b"writing" in said:  # a launch that began training said whether it started
            assert (NOTICE in said) == (before is None), said.decode()
        if kills == 0:
            assert not run.exists()  # killed before the run folder was made
        if kills == 1:  # what a first launch killed before its first save leaves
            assert (run / "config.json").exists() and not (run / "last.pt").exists()
        steps_seen.append(saved_step(run))

    final = launch(corpus, run, tmp_path)
    said = final.communicate(timeout=600)[1]
    assert final.returncode == 0, said.decode()[-2000:]
    assert NOTICE not in said and b"resuming at step" in said

    saved = [step for step in steps_seen if step is not None]
    assert steps_seen[:2] == [None, None] and len(saved) == KILLS - 2
    assert saved == sorted(saved) and len(set(saved)) >= 3 and saved[-1] < STEPS
    assert any(step % EVAL_EVERY for step in saved)  # saved between evaluations
    assert not list(run.glob(".*.part"))  # no temporary file left behind
    ours = checkpoint.load(run / "last.pt")
    theirs = checkpoint.load(tmp_path / "reference" / "last.pt")
    assert ours["step"] == STEPS
    assert_same_training(ours, theirs)
    assert [r["step"] for r in ours["history"]] == [EVAL_EVERY, 2 * EVAL_EVERY, STEPS]
