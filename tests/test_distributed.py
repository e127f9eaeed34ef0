"""Tests for training with several processes (charlstm.training.distributed, under torchrun).

The slow tests launch the real thing: `python -m torch.distributed.run --standalone
--nproc_per_node=2 -m charlstm train ...`, two CPU processes joined by gloo, on the tiny
corpus. Two processes must train the same model as one process with the same global
batch (to float tolerance: only the order of a sum differs), report once, stop together
on SIGTERM with one checkpoint, and resume exactly with two processes and correctly with
one. The fast tests check that the helpers change nothing in one process, and train with
two processes forked from this one through the Python API (forked, not spawned, so that
they start with torch imported: about 10 s instead of 25).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

import charlstm
from charlstm import checkpoint
from charlstm.training import distributed

from conftest import TINY_SETTINGS, TINY_TEXT

STEPS = 200  # long enough to cross epochs; short enough for a few seconds of training
SETTINGS = {**TINY_SETTINGS, "max_steps": STEPS, "sample_length": 0}


def flags(**overrides) -> list[str]:
    return [f"--{key.replace('_', '-')}={value}"
            for key, value in {**SETTINGS, **overrides}.items()]


def environment(root: Path) -> dict:
    env = {**os.environ, "CHARLSTM_CORPORA": str(root / "corpora"), "OMP_NUM_THREADS": "1"}
    env.pop("CHARLSTM_DEBUG", None)
    return env


def command(processes: int | None, *args: str) -> list[str]:
    """`python -m charlstm ARGS`, or the same under torchrun with `processes` processes."""
    launcher = [] if processes is None else [
        "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [sys.executable, *launcher, "-m", "charlstm", *args]


def train(root: Path, processes: int | None, *args: str,
          timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command(processes, "train", *args), cwd=root, env=environment(root),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "last.pt")["model"]


def losses(run: Path, key: str) -> list[float]:
    return [record[key] for record in checkpoint.load(run / "last.pt")["history"]]


def charlstm_lines(stderr: str) -> list[str]:
    """What charlstm itself wrote to stderr (torchrun adds its own lines)."""
    return [line for line in stderr.splitlines()
            if line.startswith(("charlstm", "step ")) or re.match(r"-+ sample", line)]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def two_processes(root) -> tuple[Path, subprocess.CompletedProcess]:
    """A finished run trained by two processes, straight through."""
    done = train(root, 2, "tiny.txt", "--out", "two", *flags())
    assert done.returncode == 0, done.stderr
    return root / "two", done


# ------------------------------------------------------------------ one process: unchanged


def test_helpers_change_nothing_in_one_process():
    assert not distributed.active()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    loss = torch.tensor(2.5)
    state = (torch.ones(1, 4, 3), torch.zeros(1, 4, 3))
    assert distributed.mean(loss) is loss
    assert distributed.all_sum(loss) is loss and loss.item() == 2.5
    assert distributed.gather_streams(state) is state
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.gather(3) == [3]
    assert distributed.run_on_main(lambda: 7) == 7
    assert distributed.main_first(lambda: 8) == 8
    cpu = torch.device("cpu")
    assert distributed.local_device(cpu) == cpu
    assert distributed.host_device(torch.device("cuda", 0)) == cpu
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, cpu) is model
    # each process's dropout seed differs by rank and step, and is a valid torch seed
    assert distributed.process_seed(1337) != distributed.process_seed(1337, 1)
    assert 0 <= distributed.process_seed(2**63 - 1) < 2**64


@pytest.mark.parametrize("backends, expected", [
    ("cpu:gloo,cuda:nccl", "cpu"),  # what start() sets up beside GPUs: agree on the CPU
    ("cpu:gloo,cuda:gloo", "cpu"),
    ("cuda:nccl", "cuda"),  # a group started elsewhere with NCCL alone: on the GPU
])
def test_the_processes_agree_on_the_clock_without_waiting_for_a_gpu(monkeypatch, backends,
                                                                    expected):
    monkeypatch.setattr(distributed, "active", lambda: True)
    monkeypatch.setattr(dist, "get_backend_config", lambda: backends)
    assert distributed.host_device(torch.device("cuda", 0)).type == expected


def api_process(rank: int, world: int, root: Path, settings: dict) -> None:
    """One of `world` processes training through the Python API in a process group the
    caller started (as torchrun's users of the library do)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root / 'rendezvous'}", rank=rank,
                            world_size=world)
    try:
        result = charlstm.train(str(root / "tiny.txt"), out=root / "api", **settings,
                                corpora_dir=root / "corpora", checkpoints_dir=root)
        (root / f"result-{rank}.txt").write_text(repr((result.step, result.reason,
                                                       result.history)))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("extra", [{}, {"early_batch": 4, "early_share": 0.5}],
                         ids=["all-streams", "early-batch"])
def test_two_api_processes_train_the_model_one_does(tmp_path, extra):
    """Two processes spawned here (gloo, no torchrun): the library under a process group;
    with an early batch, each trains its share of it (the first 2 of its streams)."""
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    settings = {**SETTINGS, "max_steps": 30, "eval_every": 15, **extra}
    torch.multiprocessing.start_processes(api_process, args=(2, tmp_path, settings),
                                          nprocs=2, start_method="fork")  # torch imported: fast
    step, reason, history = eval((tmp_path / "result-0.txt").read_text())
    assert (step, reason) == (30, "max_steps")
    # the main process evaluated; the other took its records: the histories agree
    assert (tmp_path / "result-1.txt").read_text() == (tmp_path / "result-0.txt").read_text()
    alone = charlstm.train(str(tmp_path / "tiny.txt"), out=tmp_path / "alone", **settings,
                           corpora_dir=tmp_path / "corpora", checkpoints_dir=tmp_path)
    assert [r["val_loss"] for r in history] == pytest.approx(
        [r["val_loss"] for r in alone.history], rel=1e-5)
    expected, got = weights(tmp_path / "alone"), weights(tmp_path / "api")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ several processes


@pytest.mark.slow  # two torchrun launches and one plain run: about 40-60 s on 2 busy cores
def test_two_processes_train_the_model_one_process_does(root, two_processes):
    run, done = two_processes
    one = train(root, None, "tiny.txt", "--out", "one", *flags())
    assert one.returncode == 0, one.stderr
    expected, got = weights(root / "one"), weights(run)
    assert expected.keys() == got.keys()
    for name in expected:  # the same global batch: only the order of sums differs
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)
    for key in ("train_loss", "val_loss"):
        assert losses(run, key) == pytest.approx(losses(root / "one", key), rel=1e-4)
    saved = checkpoint.load(run / "last.pt")
    assert saved["processes"] == 2
    assert saved["hidden"][0].shape[1] == SETTINGS["batch_size"]  # every stream's state
    assert len(saved["rng"]["processes"]) == 2
    # only the main process reports: each line once, and nothing on stdout
    assert done.stdout == ""
    lines = charlstm_lines(done.stderr)
    for start in ("charlstm: training", f"step {SETTINGS['eval_every']}:", f"step {STEPS}:",
                  "charlstm: done after"):
        assert sum(line.startswith(start) for line in lines) == 1, (start, done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.slow  # three torchrun launches and one plain run: about 60-90 s
def test_sigterm_saves_once_and_resumes_exactly(root, two_processes):
    straight, _ = two_processes
    run = root / "stopped"
    launched = subprocess.Popen(command(2, "train", "tiny.txt", "--out", "stopped", *flags()),
                                cwd=root, env=environment(root), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # wait for the first evaluation, so every process is well into training
        deadline = time.monotonic() + 120
        while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text()):
            assert launched.poll() is None, launched.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        launched.send_signal(signal.SIGTERM)  # torchrun passes it on to both processes
        out, err = launched.communicate(timeout=60)
    finally:
        if launched.poll() is None:
            launched.kill()
    saved = checkpoint.load(run / "last.pt")
    assert SETTINGS["eval_every"] <= saved["step"] < STEPS, err
    lines = charlstm_lines(err)
    stopped = [line for line in lines if line.startswith("charlstm: stopped at step")]
    assert stopped == [f"charlstm: stopped at step {saved['step']:,}; saved stopped/last.pt"]
    assert out == ""
    shutil.copytree(run, root / "stopped-copy")

    # two processes again: the very run that was never stopped
    resumed = train(root, 2, "--out", "stopped", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = weights(straight), weights(run)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    for key in ("train_loss", "val_loss"):
        assert losses(run, key) == losses(straight, key)

    # one process: the same streams, now all in one process: the same run to float tolerance
    alone = train(root, None, "--out", "stopped-copy", "--resume")
    assert alone.returncode == 0, alone.stderr
    assert checkpoint.load(root / "stopped-copy" / "last.pt")["processes"] == 1
    got = weights(root / "stopped-copy")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # one torchrun launch: about 15-20 s
def test_batch_not_shared_evenly_is_one_usage_error(root):
    done = train(root, 2, "tiny.txt", "--out", "uneven", *flags(batch_size=7))
    assert done.returncode != 0
    errors = [line for line in charlstm_lines(done.stderr) if "error" in line]
    assert errors == ["charlstm: error: --batch-size 7 must be a multiple of the number of "
                      "processes (2): each process trains an equal share of the streams"]
    assert "exitcode  : 2" in done.stderr  # torchrun's report of the failed processes
    assert not (root / "uneven").exists()
