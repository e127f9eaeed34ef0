"""SIGKILL at random moments, many times, then resume: the run ends bitwise identical.

A real `charlstm train` subprocess saves every other step (so kills often land inside a
save) and, once it says it is training, is killed with SIGKILL after a random delay of up
to a third of a second, KILLS times; after every kill the last checkpoint must load, and
the next process resumes from it. The finished
run must equal an uninterrupted one: every parameter, the optimizer state and the
evaluation history (less its wall-clock fields).
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

KILLS = 20
STEPS = 600
FLAGS = ["--num-layers", "1", "--hidden-size", "64", "--embed-size", "16", "--dropout", "0.1",
         "--weight-drop", "0.2", "--locked-dropout",
         "-b", "8", "--seq-len", "16", "--lr", "1e-2", "--max-steps", str(STEPS),
         "--eval-every", "2", "--sample-length", "0", "--precision", "fp32", "--device", "cpu",
         "-q"]


def start(corpus: Path, run: Path, cwd: Path) -> subprocess.Popen:
    resume = ["--resume"] if (run / "last.pt").exists() else []
    env = {**os.environ, "CHARLSTM_CORPORA": str(cwd / "corpora")}
    env.pop("CHARLSTM_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-m", "charlstm", "train", str(corpus), "--out", str(run), *FLAGS,
         *resume], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)


@pytest.mark.slow
def test_twenty_kills_then_the_same_model_as_an_uninterrupted_run(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    reference = run_cli("train", str(corpus), "--out", "reference", *FLAGS, cwd=tmp_path,
                        timeout=600)
    assert reference.returncode == 0, reference.stderr.decode()[-2000:]

    run, rng = tmp_path / "killed", random.Random(1234)
    kills, steps_seen = 0, []
    while True:
        process = start(corpus, run, tmp_path)
        if kills == KILLS:  # enough: let the last one finish the run
            stderr = process.communicate(timeout=600)[1].decode()
            assert process.returncode == 0, stderr[-2000:]
            break
        for line in process.stderr:  # wait until it trains (start-up is mostly imports)
            if b"writing" in line:
                break
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, "finished before it was killed"
        kills += 1
        if (run / "last.pt").exists():  # (a kill before the first save leaves none)
            steps_seen.append(checkpoint.load(run / "last.pt")["step"])  # never half-written

    assert kills == KILLS and len(steps_seen) >= KILLS - 2
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] < STEPS  # real progress
    assert not list(run.glob(".*.part"))  # no temporary file left behind
    ours = checkpoint.load(run / "last.pt")
    theirs = checkpoint.load(tmp_path / "reference" / "last.pt")
    assert ours["step"] == STEPS
    assert_same_training(ours, theirs)
