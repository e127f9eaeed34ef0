"""One command line for the first launch and every restart.

`--resume` on a run that has saved nothing yet (no folder, an empty one, or what a launch
killed before its first save left: config.json, temporary files) starts it from scratch
and says so in one line; a saved run is still resumed, and still refused when it differs.
`--save-every` saves last.pt between evaluations without evaluating, and a run resumed
from such a save ends bit for bit as one never stopped. The kill loop that uses one
command line for every launch is in test_restart_loop.py (slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from charlstm import checkpoint
from charlstm.training import milestones, setup as runs
from charlstm.training.callbacks import TrainingCallback
from charlstm.training.loop import Trainer

from conftest import (TINY_SETTINGS, TINY_TEXT, assert_same_training, invoke, isolate_cli,
                      one_line_error)

# a model far too small to learn anything: these tests are about the run folder
FLAGS = ["--num-layers", "1", "--hidden-size", "8", "--embed-size", "4", "--batch-size", "2",
         "--seq-len", "4", "--max-steps", "5", "--eval-every", "5", "--sample-length", "0",
         "--precision", "fp32", "--device", "cpu", "-q"]
NOTICE = "nothing to resume in"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_cli(tmp_path, monkeypatch)
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    return tmp_path


def train(*args):
    return invoke("train", "tiny.txt", *FLAGS, *args)


def notices(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if NOTICE in line]


# ----------------------------------------------------------------------------- --resume


def leave_nothing(run: Path) -> None: ...


def leave_an_empty_folder(run: Path) -> None:
    run.mkdir(parents=True)


def leave_a_config(run: Path) -> None:
    """What a first launch killed between writing config.json and its first save leaves
    (with settings that need not be this launch's: nothing was trained with them)."""
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"run_dir": str(run), "corpus": {},
                                                 "model": {"hidden_size": 999}, "train": {}}))
    (run / "metrics.jsonl").write_text("")


def leave_temporary_files(run: Path) -> None:
    """What a writer killed during the first save leaves."""
    run.mkdir(parents=True)
    (run / ".last.pt.k1ll3d.part").write_bytes(b"half a checkpoint")
    (run / ".config.json.x7.part").write_bytes(b"{")


@pytest.mark.parametrize("leave", [leave_nothing, leave_an_empty_folder, leave_a_config,
                                   leave_temporary_files])
def test_resume_of_a_run_with_no_checkpoint_starts_it_and_says_so(leave, tmp_path):
    run = tmp_path / "runs" / "a"
    leave(run)
    first = train("--out", run, "--resume")
    assert first.exit_code == 0, first.stderr
    assert first.stdout == ""
    assert notices(first.stderr) == [f"charlstm: warning: {NOTICE} {run} (no checkpoint "
                                     "yet): starting the run from scratch"]
    assert checkpoint.load(run / "last.pt")["step"] == 5
    assert not list(run.glob(".*.part"))
    assert json.loads((run / "config.json").read_text())["model"]["hidden_size"] == 8
    again = train("--out", run, "--resume")  # the same command line: now a saved run
    assert again.exit_code == 0, again.stderr
    assert notices(again.stderr) == [] and "already finished" in again.stderr


def test_resume_without_out_starts_the_default_run_once(tmp_path):
    half_started = tmp_path / "checkpoints" / "tiny-lstm1x8"
    leave_a_config(half_started)
    first = train("--resume")
    assert first.exit_code == 0, first.stderr
    assert notices(first.stderr) == [f"charlstm: warning: {NOTICE} {half_started} (no "
                                     "checkpoint yet): starting the run from scratch"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["tiny-lstm1x8"]
    assert (half_started / "last.pt").exists()
    again = train("--resume", "--max-steps", "8")
    assert again.exit_code == 0, again.stderr
    assert notices(again.stderr) == [] and "resuming at step 5" in again.stderr
    assert checkpoint.load(half_started / "last.pt")["step"] == 8


def test_a_saved_run_with_another_corpus_is_still_refused(tmp_path):
    assert train("--out", "run", "--resume").exit_code == 0
    (tmp_path / "other.txt").write_text(TINY_TEXT.upper(), encoding="utf-8")
    before = (tmp_path / "run" / "last.pt").read_bytes()
    result = invoke("train", "other.txt", *FLAGS, "--out", "run", "--resume")
    assert result.exit_code == 2 and result.stdout == ""
    assert "not the text this run was trained on" in one_line_error(result.stderr)
    assert (tmp_path / "run" / "last.pt").read_bytes() == before


def test_a_run_that_lost_its_last_checkpoint_is_not_started_again(tmp_path):
    assert train("--out", "run", "--resume").exit_code == 0
    (tmp_path / "run" / "last.pt").unlink()
    result = train("--out", "run", "--resume")
    assert result.exit_code == 2 and result.stdout == ""
    assert "best.pt but no last.pt" in one_line_error(result.stderr)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_of_a_named_checkpoint_that_is_absent_is_a_usage_error(tmp_path):
    result = train("--out", tmp_path / "nothing" / "last.pt", "--resume")
    assert result.exit_code == 2 and result.stdout == ""
    assert "nothing to resume" in one_line_error(result.stderr)
    assert not (tmp_path / "nothing").exists()


class Notices(TrainingCallback):
    def __init__(self):
        self.said: list[str] = []

    def on_notice(self, message: str) -> None:
        self.said.append(message)


def test_the_library_notices_a_fresh_start_through_the_callback(tmp_path):
    said = Notices()
    trainer = runs.make_trainer("tiny.txt", out=tmp_path / "run", resume=True,
                                settings=dict(TINY_SETTINGS, max_steps=3), callback=said,
                                corpora_dir=tmp_path / "corpora")
    assert trainer.step == 0 and trainer.run_dir == tmp_path / "run"
    assert len(said.said) == 1 and "starting the run from scratch" in said.said[0]


# ----------------------------------------------------------------------------- --save-every


@pytest.mark.parametrize("text, seconds", [("off", 0.0), ("0", 0.0), ("90s", 90.0),
                                           ("1m30s", 90.0), ("0.5s", 0.5)])
def test_save_every_is_a_duration_saved_with_the_run(text, seconds):
    result = train("--out", "run", "--save-every", text)
    assert result.exit_code == 0, result.stderr
    assert checkpoint.load(Path("run") / "last.pt")["train_config"]["save_every"] == seconds


@pytest.mark.parametrize("text", ["soon", "-5", "5 parsecs", ""])
def test_a_bad_save_every_is_a_usage_error_naming_it(text):
    result = train("--out", "run", "--save-every", text)
    assert result.exit_code == 2 and result.stdout == ""
    assert "--save-every" in one_line_error(result.stderr)


def spy_on_saves(monkeypatch, snapshot_at: int | None = None,
                 snapshot: Path | None = None) -> list[tuple[int, bool]]:
    """The (step, best) of every save; at step `snapshot_at`, a copy of the run folder
    as that save left it (as if the process were killed right after it)."""
    saves: list[tuple[int, bool]] = []
    save = milestones.save

    def spied(trainer: Trainer, best: bool) -> None:
        save(trainer, best)
        saves.append((trainer.step, best))
        if trainer.step == snapshot_at:
            shutil.copytree(trainer.run_dir, snapshot)

    monkeypatch.setattr(milestones, "save", spied)
    return saves


def fit(tmp_path: Path, out: str, resume: bool = False, **settings):
    settings = dict(TINY_SETTINGS, max_steps=12, eval_every=6, sample_length=0, **settings)
    trainer = runs.make_trainer("tiny.txt", out=tmp_path / out, resume=resume,
                                settings=settings, corpora_dir=tmp_path / "corpora")
    trainer.fit()
    return checkpoint.load(tmp_path / out / "last.pt")


def test_save_every_saves_between_evaluations_without_evaluating(tmp_path, monkeypatch):
    saves = spy_on_saves(monkeypatch)
    # any time at all is due: a save after every other step (the interval begins after
    # the first step of the session, and after the first step that follows a save)
    saved = fit(tmp_path, "often", save_every=1e-9)
    assert [step for step, _ in saves] == [2, 4, 6, 8, 10, 12]
    assert [step for step, best in saves if best] == [6, 12]  # the evaluations' saves
    assert [r["step"] for r in saved["history"]] == [6, 12]
    metrics = (tmp_path / "often" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in metrics] == saved["history"]
    saves.clear()
    never = fit(tmp_path, "never", save_every=0)
    assert saves == [(6, True), (12, True)]
    assert_same_training(saved, never)


def test_a_run_resumed_from_a_save_between_evaluations_ends_the_same(tmp_path, monkeypatch):
    spy_on_saves(monkeypatch, snapshot_at=8, snapshot=tmp_path / "killed")
    straight = fit(tmp_path, "straight", save_every=1e-9)
    killed = checkpoint.load(tmp_path / "killed" / "last.pt")
    assert killed["step"] == 8 and [r["step"] for r in killed["history"]] == [6]
    resumed = fit(tmp_path, "killed", resume=True)
    assert_same_training(resumed, straight)
