"""Saving under stress: a full disk or an unwritable run folder part-way through a run,
more Ctrl-C presses while the stop is being saved, and a run stopped twice and resumed that
still matches one trained straight through.

The file-system tests run the real `charlstm train` command in-process (typer's CliRunner)
and break the file system under it once it has saved; the signal tests send real signals
to real processes.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

import charlstm
from charlstm import checkpoint
from charlstm.cli import progress

from conftest import TINY_SETTINGS, TINY_TEXT, invoke, one_line_error



def cli_flags(**overrides) -> list[str]:
    """TINY_SETTINGS (with overrides) as `charlstm train` flags."""
    settings = {**TINY_SETTINGS, **overrides}
    return [arg for key, value in settings.items()
            for arg in (f"--{key.replace('_', '-')}", str(value))]


# 100 steps, evaluated and saved at 50 and 100; no samples, so stderr holds no generated text
QUIET_FLAGS = cli_flags(sample_length=0) + ["--quiet"]
RUN_FILES = ["best.pt", "config.json", "last.pt", "metrics.jsonl"]


def the_error_line(stderr: str) -> str:
    """The line of a failed run's stderr that reports the failure.

    Before it come the run's own progress lines; it must be the last line, the only one
    that mentions an error, and an expected failure's one line (no traceback).
    """
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert [line for line in lines if "error" in line.lower()] == lines[-1:], stderr
    return one_line_error(lines[-1])


def temp_files(folder: Path) -> list[str]:
    """The atomic writer's temporary files (.NAME.XXXX.part) left in a folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def strip_clock(records: list[dict]) -> list[dict]:
    """Evaluation records without their wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in ("elapsed", "time")} for r in records]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- in-process


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding tiny.txt, where corpora and runs are kept."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHARLSTM_CORPORA", str(tmp_path / "corpora"))
    monkeypatch.setenv("CHARLSTM_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.delenv("CHARLSTM_DEBUG", raising=False)
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    return tmp_path


@pytest.fixture
def after_first_evaluation(monkeypatch: pytest.MonkeyPatch) -> Callable:
    """Registers actions run once, right after the CLI reports its first evaluation (whose
    checkpoint is saved by then): the file system changes under a run that has saved."""
    actions: list[Callable] = []

    class Display(progress.TrainingDisplay):
        def on_eval(self, record: dict) -> None:
            super().on_eval(record)
            while actions:
                actions.pop(0)()

    monkeypatch.setattr(progress, "TrainingDisplay", Display)  # train imports it when run
    return actions.append


def assert_failed_cleanly(result, *names: str) -> str:
    """Exit 1, nothing on stdout, one error line naming the run's last.pt and `names`."""
    assert result.exit_code == 1, (result.exit_code, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # handled, not raised
    assert result.stdout == ""
    line = the_error_line(result.stderr)
    for name in (os.path.join("run", "last.pt"), *names):
        assert name in line, line
    return line


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_fails_the_save_cleanly_and_keeps_the_last_checkpoint(
        workdir, monkeypatch, after_first_evaluation, where):
    """The disk fills up after the step-50 checkpoint: the step-100 save fails with ENOSPC,
    half-way through its write or at its fsync. Exit 1 with one line; last.pt still holds
    step 50, no temporary file is left, and the run resumes once there is space again."""
    disk = {"full": False}
    written: list[int] = []
    real_fdopen, real_fsync = os.fdopen, os.fsync

    def no_space() -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FillingFile:
        """The atomic writer's temporary file on a disk that fills up half-way through."""

        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.file.close()

        def __getattr__(self, name):
            return getattr(self.file, name)

        def write(self, data):
            written.append(self.file.write(data[: len(data) // 2]))
            self.file.flush()  # those bytes reach the file before the failure
            raise no_space()

    def fdopen(fd, *args, **kwargs):
        file = real_fdopen(fd, *args, **kwargs)
        return FillingFile(file) if disk["full"] and where == "write" else file

    def fsync(fd):
        if disk["full"] and where == "fsync":
            raise no_space()
        return real_fsync(fd)

    monkeypatch.setattr(os, "fdopen", fdopen)  # what charlstm.data.files opens its temp file with
    monkeypatch.setattr(os, "fsync", fsync)
    after_first_evaluation(lambda: disk.update(full=True))

    result = invoke("train", "tiny.txt", "--out", "run", *QUIET_FLAGS)

    assert_failed_cleanly(result, "No space left on device")
    if where == "write":
        assert written and written[0] > 0  # the failure came part-way through the file
    run = workdir / "run"
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES  # no temporary files
    assert checkpoint.load(run / "last.pt")["step"] == 50
    assert checkpoint.load(run / "best.pt")["step"] == 50
    assert [r["step"] for r in read_metrics(run)] == [50]

    disk["full"] = False
    resumed = invoke("train", "--out", "run", "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    assert checkpoint.load(run / "last.pt")["step"] == 100


def set_immutable(folder: Path, on: bool) -> bool:
    """chattr +i / -i: a folder in which even root cannot create, rename or remove files."""
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    done = subprocess.run([chattr, "+i" if on else "-i", str(folder)], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=30)
    return done.returncode == 0


def immutable_folders_work(probe: Path) -> bool:
    """Whether chattr +i here really stops root from creating a file in a folder."""
    probe.mkdir()
    try:
        if not set_immutable(probe, True):
            return False
        try:
            (probe / "file").write_bytes(b"")
        except OSError:
            return True
        return False
    finally:
        set_immutable(probe, False)
        shutil.rmtree(probe)


@pytest.fixture
def lock_folder(tmp_path: Path):
    """lock_folder(folder) makes a folder unwritable: chmod 0o500, or for root (whom
    permissions do not stop) the immutable attribute. Undone at teardown."""
    as_root = os.geteuid() == 0
    if as_root and not immutable_folders_work(tmp_path / "probe"):
        pytest.skip("running as root, which chmod does not stop, and chattr +i does not "
                    "work here (test_a_folder_in_the_way_of_last_pt covers root)")
    locked: list[Path] = []

    def lock(folder: Path) -> None:
        locked.append(folder)
        if as_root:
            assert set_immutable(folder, True)
        else:
            folder.chmod(0o500)

    yield lock
    for folder in locked:
        if as_root:
            set_immutable(folder, False)
        else:
            folder.chmod(0o700)


def test_an_unwritable_run_folder_fails_the_save_cleanly_and_keeps_the_last_checkpoint(
        workdir, after_first_evaluation, lock_folder):
    """The run folder turns read-only after the step-50 checkpoint: the step-100 save
    cannot create its temporary file. Exit 1 with one line; last.pt still holds step 50."""
    run = workdir / "run"
    after_first_evaluation(lambda: lock_folder(run))

    result = invoke("train", "tiny.txt", "--out", "run", *QUIET_FLAGS)

    line = assert_failed_cleanly(result)
    assert os.strerror(errno.EACCES) in line or os.strerror(errno.EPERM) in line, line
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    assert checkpoint.load(run / "last.pt")["step"] == 50


def test_a_folder_in_the_way_of_last_pt_fails_the_save_cleanly(workdir, after_first_evaluation):
    """For any user, root included: after the step-50 checkpoint a folder takes last.pt's
    place (the file moved aside), so the step-100 save cannot rename its finished
    temporary file into place. Exit 1 with one line; nothing is left half-written."""
    run = workdir / "run"

    def put_a_folder_in_the_way() -> None:
        os.replace(run / "last.pt", run / "step50.pt")
        (run / "last.pt").mkdir()

    after_first_evaluation(put_a_folder_in_the_way)

    result = invoke("train", "tiny.txt", "--out", "run", *QUIET_FLAGS)

    assert_failed_cleanly(result, os.strerror(errno.EISDIR))
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES + ["step50.pt"])
    assert (run / "last.pt").is_dir() and not any((run / "last.pt").iterdir())
    assert checkpoint.load(run / "step50.pt")["step"] == 50
    assert checkpoint.load(run / "best.pt")["step"] == 50


# ----------------------------------------------------------------------------- processes


def child_env(folder: Path) -> dict:
    env = {**os.environ, "CHARLSTM_CORPORA": str(folder / "corpora"), "OMP_NUM_THREADS": "1"}
    env.pop("CHARLSTM_DEBUG", None)
    return env


@pytest.mark.slow  # a training process: about 5-10 s on a busy 2-core machine
def test_a_file_size_limit_fails_a_real_save_cleanly(tmp_path):
    """A real process whose kernel refuses the write part-way: a resumed run under an
    RLIMIT_FSIZE of half a checkpoint (Python ignores SIGXFSZ, so the write fails with
    EFBIG). Exit 1 with one line; last.pt is byte for byte the step-50 one; no temp files."""
    resource = pytest.importorskip("resource")
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    run = tmp_path / "run"
    charlstm.train(str(corpus), out=run, corpora_dir=tmp_path / "corpora",
                   checkpoints_dir=tmp_path / "checkpoints", **{**TINY_SETTINGS, "max_steps": 50})
    before = (run / "last.pt").read_bytes()
    limit = len(before) // 2

    def limit_file_size() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    result = subprocess.run(
        [sys.executable, "-m", "charlstm", "train", "--out", "run", "--resume",
         "--max-steps", "100", "--quiet"],
        cwd=tmp_path, env=child_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
        timeout=120, preexec_fn=limit_file_size)

    stderr = result.stderr.decode("utf-8")
    assert result.returncode == 1, stderr
    assert result.stdout == b""
    line = the_error_line(stderr)
    assert os.path.join("run", "last.pt") in line and os.strerror(errno.EFBIG) in line, line
    assert sorted(p.name for p in run.iterdir()) == RUN_FILES
    assert (run / "last.pt").read_bytes() == before


def launch(folder: Path, name: str, *args: str) -> subprocess.Popen:
    """`python -m charlstm ARGS` in `folder`; its stdout and stderr go to NAME.out, NAME.err."""
    with open(folder / f"{name}.out", "wb") as out, open(folder / f"{name}.err", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "charlstm", *args], cwd=folder,
                                env=child_env(folder), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)


def end(*processes: subprocess.Popen) -> None:
    """Kill whichever of these is still running (after a failed assertion)."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(process: subprocess.Popen, condition: Callable[[], object], what: str,
               timeout: float = 90, interval: float = 0.01) -> bool:
    """True once `condition()` holds; False if the process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(interval)
    return True


def last_pt_being_written(run: Path) -> bool:
    return any(p.name.startswith(".last.pt.") for p in run.iterdir())


def press_ctrl_c_mid_training(process: subprocess.Popen, run: Path, err: Path) -> bytes:
    """Wait for the step-50 checkpoint (last.pt and best.pt, fully written), let training
    go on a moment, and press Ctrl-C. Returns last.pt as it was before the press."""
    assert wait_until(process, lambda: (run / "best.pt").exists() and not temp_files(run),
                      "first checkpoint"), err.read_text()
    previous = (run / "last.pt").read_bytes()
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    return previous


def reported_stop(stderr: str) -> int | None:
    """The step of the "stopped at step N; saved" report, if the run made one."""
    stopped = re.search(r"stopped at step ([\d,]+); saved", stderr)
    return int(stopped.group(1).replace(",", "")) if stopped else None


def assert_whole_checkpoint(path: Path) -> dict:
    """A checkpoint that loads, whose weights fit its model, with its optimizer in step."""
    saved = checkpoint.load(path)
    charlstm.load(path, device="cpu")
    assert {int(s["step"]) for s in saved["optimizer"]["state"].values()} == {saved["step"]}
    return saved


# When to press Ctrl-C again after the first press: so many seconds after it, or "save":
# as soon as the atomic writer's temporary last.pt shows up in the run folder. (Saving this
# tiny model's 300 kB checkpoint takes about 15 ms, most of it the fsync; a step about 7.)
MORE_PRESSES = {
    "second-during-save": ["save"],
    "second-and-third-during-save": ["save", 0.0],
    "two-more-within-2ms": [0.001, 0.002],
    "two-more-within-10ms": [0.005, 0.010],
    "two-more-within-40ms": [0.020, 0.040],
}


@pytest.mark.slow  # a training process each: about 5-10 s on a busy 2-core machine
@pytest.mark.parametrize("presses", MORE_PRESSES.values(), ids=MORE_PRESSES.keys())
def test_more_ctrl_c_while_saving_never_corrupts_last_pt(workdir, presses):
    """Ctrl-C, then Ctrl-C again (and a third time: quit without saving) while the stop is
    being saved. last.pt is the previous checkpoint or a whole new one, no temporary file
    is left, and the run resumes. (A press that lands after the save, while the process
    exits, is test_ctrl_c_while_exiting_after_the_stop_save_is_quiet.)"""
    run, err = workdir / "run", workdir / "train.err"
    process = launch(workdir, "train", "train", "tiny.txt", "--out", "run",
                     *cli_flags(max_steps=100_000, sample_length=0), "--quiet")
    try:
        previous = press_ctrl_c_mid_training(process, run, err)
        first = time.monotonic()
        for when in presses:
            if when == "save":
                wait_until(process, lambda: last_pt_being_written(run), "save", interval=0)
            else:
                time.sleep(max(0.0, first + when - time.monotonic()))
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        end(process)

    stderr = err.read_text()
    assert code in (130, -signal.SIGINT), (code, stderr)
    # no traceback while training or saving
    assert "Traceback" not in stderr.split("charlstm: resume with:")[0], stderr
    assert (workdir / "train.out").read_bytes() == b""
    assert temp_files(run) == []
    (workdir / "previous.pt").write_bytes(previous)
    previous_step = checkpoint.load(workdir / "previous.pt")["step"]
    if (run / "last.pt").read_bytes() == previous:
        saved = checkpoint.load(run / "last.pt")
        assert saved["step"] == previous_step
    else:
        saved = assert_whole_checkpoint(run / "last.pt")
        assert saved["step"] >= previous_step
    stop = reported_stop(stderr)
    if len(presses) == 1:  # a second press is ignored: the save completes
        assert stop is not None, stderr
    if stop is not None:
        assert saved["step"] == stop

    target = saved["step"] + 10
    resumed = invoke("train", "--out", "run", "--resume", "--max-steps", str(target), "--quiet")
    assert resumed.exit_code == 0, resumed.stderr
    assert checkpoint.load(run / "last.pt")["step"] == target


@pytest.mark.slow  # a training process: about 5-10 s on a busy 2-core machine
def test_ctrl_c_while_exiting_after_the_stop_save_is_quiet(workdir):
    """Ctrl-C; once the stop is saved and reported, Ctrl-C pressed again and again while
    the process exits (with torch loaded, that takes a moment): still exit 130, no
    traceback, and the reported checkpoint intact."""
    run, err = workdir / "run", workdir / "train.err"
    process = launch(workdir, "train", "train", "tiny.txt", "--out", "run",
                     *cli_flags(max_steps=100_000, sample_length=0), "--quiet")
    try:
        press_ctrl_c_mid_training(process, run, err)
        wait_until(process, lambda: reported_stop(err.read_text()) is not None, "stop report",
                   interval=0.001)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            process.send_signal(signal.SIGINT)
            time.sleep(0.002)
        code = process.wait(timeout=30)
    finally:
        end(process)

    stderr = err.read_text()
    stop = reported_stop(stderr)
    assert stop is not None, stderr
    assert assert_whole_checkpoint(run / "last.pt")["step"] == stop
    assert temp_files(run) == []
    assert "Traceback" not in stderr, stderr
    assert code == 130, (code, stderr)


def records_in(metrics: Path) -> int:
    """Evaluation records completely written to a metrics.jsonl (0 if there is none)."""
    return metrics.read_text().count("\n") if metrics.exists() else 0


def stop_after_an_evaluation(folder: Path, name: str, sig: signal.Signals, run: Path,
                             *args: str) -> int:
    """Run `charlstm ARGS`, send `sig` once it has evaluated (and saved), and return its
    exit code."""
    before = records_in(run / "metrics.jsonl")
    process = launch(folder, name, *args)
    try:
        assert wait_until(process, lambda: records_in(run / "metrics.jsonl") > before,
                          "evaluation"), (folder / f"{name}.err").read_text()
        process.send_signal(sig)
        return process.wait(timeout=60)
    finally:
        end(process)


@pytest.mark.slow  # four training processes, two at a time: about 10-15 s
def test_a_run_stopped_twice_and_resumed_matches_one_trained_straight(workdir):
    """Ctrl-C part-way, resume, SIGTERM part-way, resume to the end: the same weights,
    optimizer state and evaluation history (but for wall-clock fields) as an uninterrupted
    run with the same settings, bit for bit."""
    flags = [*cli_flags(max_steps=200, sample_length=0), "--quiet"]
    straight_run, chain = workdir / "straight", workdir / "chain"
    straight = launch(workdir, "straight", "train", "tiny.txt", "--out", "straight", *flags)
    try:
        code = stop_after_an_evaluation(workdir, "first", signal.SIGINT, chain,
                                        "train", "tiny.txt", "--out", "chain", *flags)
        assert code == 130, (workdir / "first.err").read_text()
        first_stop = checkpoint.load(chain / "last.pt")["step"]
        code = stop_after_an_evaluation(workdir, "second", signal.SIGTERM, chain,
                                        "train", "--out", "chain", "--resume")
        assert code == 143, (workdir / "second.err").read_text()
        second_stop = checkpoint.load(chain / "last.pt")["step"]
        final = launch(workdir, "final", "train", "--out", "chain", "--resume")
        try:
            assert final.wait(timeout=120) == 0, (workdir / "final.err").read_text()
        finally:
            end(final)
        assert straight.wait(timeout=120) == 0, (workdir / "straight.err").read_text()
    finally:
        end(straight)
    assert 50 <= first_stop < second_stop < 200, (first_stop, second_stop)

    expected, got = checkpoint.load(straight_run / "last.pt"), checkpoint.load(chain / "last.pt")
    assert expected["step"] == got["step"] == 200
    assert expected["model"].keys() == got["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    for key, state in expected["optimizer"]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(tensor, got["optimizer"]["state"][key][name]), (key, name)
    assert strip_clock(got["history"]) == strip_clock(expected["history"])
    assert [r["step"] for r in got["history"]] == [50, 100, 150, 200]
    assert strip_clock(read_metrics(chain)) == strip_clock(read_metrics(straight_run))
    assert strip_clock(read_metrics(chain)) == strip_clock(got["history"])
    best_expected, best_got = (checkpoint.load(straight_run / "best.pt"),
                               checkpoint.load(chain / "best.pt"))
    assert best_expected["step"] == best_got["step"]
    for name, tensor in best_expected["model"].items():
        assert torch.equal(tensor, best_got["model"][name]), name
