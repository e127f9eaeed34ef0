"""Nothing of the user's is lost: charlstm writes a run only into a folder that is its own,
and every other command that writes a file writes only its own files, or refuses.

Folders of real user files (a project folder with its own config.json and loss.png, a
home-like folder of dotfiles, a folder holding one other tool's .pt) are tried with train,
train --resume, train --init-from, plot -o, corpus get, corpus prepare and the completion
installer: every file in them is byte for byte the same afterwards (the tree is hashed
before and after). A folder holding only a run of charlstm's, or what a killed start
left, is used as before.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import zlib
from pathlib import Path

import pytest
import torch

from charlstm.data import corpus as corpora
from charlstm.data.files import remove_leftovers
from charlstm.training import plot
from charlstm.training.rundir import RUN_FILES, check_owned, foreign_files

from conftest import TINY_SETTINGS, invoke, isolate_cli, one_line_error, run_cli


def png(software: str | None) -> bytes:
    """A small valid PNG (1x1, grey) whose Software text is `software`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))

    text = chunk(b"tEXt", b"Software\0" + software.encode()) if software else b""
    return (plot.PNG_SIGNATURE + chunk(b"IHDR", bytes([0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]))
            + text + chunk(b"IDAT", zlib.compress(b"\0\x80")) + chunk(b"IEND", b""))


def project_folder(root: Path) -> Path:
    """A project's folder: its own config.json and loss.png (made with matplotlib)."""
    folder = root / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "config.json").write_text('{"name": "my-app", "debug": true}\n')
    (folder / "loss.png").write_bytes(png("Matplotlib version3.8.0, https://matplotlib.org/"))
    (folder / "README.md").write_text("# my app\n")
    (folder / "src" / "main.py").write_text("print('hello')\n")
    return folder


def home_folder(root: Path) -> Path:
    """A home-like folder: dotfiles and a config folder."""
    folder = root / "home"
    (folder / ".config" / "app").mkdir(parents=True)
    (folder / ".bashrc").write_text('alias ll="ls -l"\n')
    (folder / ".profile").write_text("export EDITOR=vi\n")
    (folder / ".config" / "app" / "settings.ini").write_text("[a]\nb = 1\n")
    (folder / "notes.txt").write_text("buy milk\n")
    return folder


def other_tools_folder(root: Path) -> Path:
    """A folder holding one .pt of another tool's (a plain state_dict)."""
    folder = root / "models"
    folder.mkdir()
    torch.save({"weight": torch.ones(3)}, folder / "model.pt")
    return folder


USER_FOLDERS = [project_folder, home_folder, other_tools_folder]


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`: its relative path -> a hash of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            if path.is_file() else "folder" for path in sorted(folder.rglob("*"))}


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_cli(tmp_path, monkeypatch)


def tiny_flags(**overrides) -> list[str]:
    settings = {**TINY_SETTINGS, "max_steps": 4, "eval_every": 2, "sample_length": 0,
                **overrides}
    return [part for key, value in settings.items()
            for part in (f"--{key.replace('_', '-')}", str(value))]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog.\n" * 100)
    return path


# ---------------------------------------------------------------- what is charlstm's


def test_a_finished_run_holds_nothing_foreign(trained_run):
    assert sorted(p.name for p in trained_run.iterdir()) >= ["best.pt", "config.json",
                                                             "last.pt", "metrics.jsonl"]
    assert foreign_files(trained_run) == []


def test_what_a_killed_start_leaves_is_charlstms(trained_run, tmp_path):
    folder = tmp_path / "killed"
    folder.mkdir()
    shutil.copy(trained_run / "config.json", folder / "config.json")
    (folder / "metrics.jsonl").write_bytes(b"")
    for name in RUN_FILES:
        (folder / f".{name}.k3y_9abc.part").write_bytes(b"half")
    (folder / ".DS_Store").write_bytes(b"\0")  # a file manager's, in any folder
    assert foreign_files(folder) == []


@pytest.mark.parametrize("name, content", [
    ("config.json", b'{"name": "mine"}'),
    ("config.json", b"not json at all"),
    ("metrics.jsonl", b'{"user": 1}\n'),
    ("loss.png", png("Matplotlib version3.8.0")),  # no charlstm checkpoint beside it
    ("loss.png", png(None)),
    ("last.pt", None),  # another tool's checkpoint under charlstm's name
    ("best.pt", b"PK\x03\x04 not really a zip"),
    (".download.part", b"a browser's"),
    (".last.pt.part", b"not the writer's pattern"),
    ("notes.txt", b"mine"),
])
def test_a_file_is_charlstms_only_by_its_content(tmp_path, name, content):
    folder = tmp_path / "f"
    folder.mkdir()
    if content is None:
        torch.save({"weight": torch.ones(2)}, folder / name)
    else:
        (folder / name).write_bytes(content)
    assert foreign_files(folder) == [name]


def test_an_old_plot_beside_its_run_is_charlstms(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "loss.png").write_bytes(png("Matplotlib version3.7.1, https://matplotlib.org/"))
    assert foreign_files(run) == []  # drawn before charlstm marked its plots
    (run / "loss.png").write_bytes(png("GIMP 2.10"))
    assert foreign_files(run) == ["loss.png"]


def test_a_symlink_or_a_subfolder_is_never_charlstms(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "best.pt").unlink()
    (run / "best.pt").symlink_to(run / "last.pt")
    (run / "logs").mkdir()
    assert foreign_files(run) == ["best.pt", "logs"]


def test_the_refusal_names_the_first_files_and_how_many_more(tmp_path):
    folder = home_folder(tmp_path)
    with pytest.raises(Exception) as caught:
        check_owned(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{folder} holds files charlstm did not write "
                              "(.bashrc, .config, .profile and 1 more)")
    assert "--out" in message
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="is not a folder but a file"):
        check_owned(tmp_path / "file")


def test_leftovers_are_removed_only_for_a_runs_own_files(tmp_path):
    (tmp_path / ".last.pt.ab12_xyz.part").write_bytes(b"half")
    (tmp_path / ".download.part").write_bytes(b"a browser's")
    (tmp_path / ".movie.mkv.ab12_xyz.part").write_bytes(b"another writer's")
    removed = remove_leftovers(tmp_path, RUN_FILES)
    assert [p.name for p in removed] == [".last.pt.ab12_xyz.part"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".download.part",
                                                          ".movie.mkv.ab12_xyz.part"]


# ------------------------------------------------------------- train into user folders


TRAIN_CALLS = {
    "train": [],
    "train --resume": ["--resume"],
}


@pytest.mark.parametrize("make_folder", USER_FOLDERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("call", sorted(TRAIN_CALLS))
def test_train_never_writes_into_a_users_folder(make_folder, call, tmp_path, corpus_file):
    folder = make_folder(tmp_path)
    before = tree(folder)
    result = invoke("train", corpus_file, "--out", folder, *TRAIN_CALLS[call], *tiny_flags())
    assert result.exit_code == 2, result.stderr
    line = one_line_error(result.stderr)
    assert "charlstm did not write" in line and str(folder) in line
    assert tree(folder) == before


@pytest.mark.parametrize("make_folder", USER_FOLDERS, ids=lambda f: f.__name__)
def test_fine_tuning_never_writes_into_a_users_folder(make_folder, tmp_path, corpus_file,
                                                      trained_run):
    folder = make_folder(tmp_path)
    before = tree(folder)
    for resume in ([], ["--resume"]):
        result = invoke("train", corpus_file, "--init-from", trained_run, "--out", folder,
                        *resume, "--max-steps", "2")
        assert result.exit_code == 2, result.stderr
        assert "charlstm did not write" in one_line_error(result.stderr)
    assert tree(folder) == before


def test_a_run_folder_with_a_users_file_added_is_not_resumed(trained_run, tmp_path,
                                                             corpus_file):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "notes.md").write_text("lr 1e-2 was too high\n")
    before = tree(run)
    result = invoke("train", "--out", run, "--resume", "--max-steps", "200")
    line = one_line_error(result.stderr)
    assert result.exit_code == 2 and "(notes.md)" in line
    assert tree(run) == before


def test_a_foreign_checkpoint_named_last_pt_is_not_taken_for_a_run(tmp_path, corpus_file):
    folder = tmp_path / "other"
    folder.mkdir()
    torch.save({"weight": torch.ones(2)}, folder / "last.pt")
    before = tree(folder)
    for resume in ([], ["--resume"]):
        result = invoke("train", corpus_file, "--out", folder, *resume, *tiny_flags())
        assert result.exit_code == 2
        assert "(last.pt)" in one_line_error(result.stderr)
    assert tree(folder) == before


def test_the_real_command_line_refuses_a_project_folder(tmp_path, corpus_file):
    folder = project_folder(tmp_path)
    before = tree(folder)
    result = run_cli("train", str(corpus_file), "--out", str(folder), "--resume",
                     *tiny_flags(), cwd=tmp_path)
    assert result.returncode == 2
    line = one_line_error(result.stderr.decode())
    assert line == (f"charlstm: error: {folder} holds files charlstm did not write "
                    "(README.md, config.json, loss.png and 1 more); a run goes only into a "
                    "new or empty folder or its own run folder: choose another --out, e.g. "
                    "a new folder inside this one")
    assert result.stdout == b""
    assert tree(folder) == before


def test_a_killed_start_is_resumed_in_its_folder(trained_run, tmp_path, corpus_file):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_bytes((trained_run / "config.json").read_bytes())
    (folder / "metrics.jsonl").write_bytes(b"")
    (folder / ".last.pt.q1w2e3r4.part").write_bytes(b"half a checkpoint")
    result = invoke("train", corpus_file, "--out", folder, "--resume",
                    *tiny_flags(max_steps=2, eval_every=2))
    assert result.exit_code == 0, result.stderr
    assert "nothing to resume" in result.stderr
    assert not (folder / ".last.pt.q1w2e3r4.part").exists()
    assert json.loads((folder / "config.json").read_text())["step"] == 0
    assert foreign_files(folder) == []  # the plot it wrote is marked as charlstm's
    if plot.available():
        assert plot.software(folder / "loss.png") == plot.SOFTWARE


# ------------------------------------------------------------------ the other writers


@pytest.mark.parametrize("target", ["project/loss.png", "home/.bashrc", "models/model.pt",
                                    "project"])
def test_plot_never_replaces_a_file_it_did_not_write(trained_run, tmp_path, target):
    for make in USER_FOLDERS:
        make(tmp_path)
    before = tree(tmp_path)
    result = invoke("plot", trained_run, "-o", tmp_path / target)
    assert result.exit_code == 2, result.stderr
    assert "charlstm did not write it" in one_line_error(result.stderr)
    assert tree(tmp_path) == before


def test_plot_replaces_its_own_plot(trained_run, tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for _ in range(2):  # the second time over the first's plot
        result = invoke("plot", run)
        assert result.exit_code == 0, result.stderr
    assert plot.software(run / "loss.png") == plot.SOFTWARE


def test_corpus_get_never_replaces_a_users_file(tmp_path, monkeypatch):
    folder = home_folder(tmp_path)
    data = b"the text of the corpus\n"
    (folder / "fake.txt").write_text("my own fake.txt\n")
    monkeypatch.setattr(corpora, "registry", lambda: {"fake": {
        "description": "a fake", "url": "https://example.invalid/fake.txt",
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}})
    source = tmp_path / "source.txt"
    source.write_bytes(data)
    before = tree(folder)
    monkeypatch.setenv("CHARLSTM_CORPORA", str(folder))
    result = invoke("corpus", "get", "fake", "--from", source)
    assert result.exit_code == 2
    assert "is not the corpus fake" in one_line_error(result.stderr)
    assert tree(folder) == before
    (folder / "fake.txt").unlink()
    assert invoke("corpus", "get", "fake", "--from", source).exit_code == 0
    assert (folder / "fake.txt").read_bytes() == data


def test_the_token_cache_adds_only_its_own_files(tmp_path, monkeypatch, corpus_file):
    folder = home_folder(tmp_path)
    (folder / "cache").mkdir()
    (folder / "cache" / "text.tokens").write_text("a user's file of that name\n")
    before = tree(folder)
    monkeypatch.setenv("CHARLSTM_CORPORA", str(folder))
    result = invoke("corpus", "prepare", corpus_file)
    assert result.exit_code == 0, result.stderr
    after = tree(folder)
    assert {k: v for k, v in after.items() if k in before} == before
    added = set(after) - set(before)
    assert added and all(re.fullmatch(r"cache/text-[0-9a-f]{16}\.(tokens|json)", name)
                         for name in added), added


def test_the_completion_installer_writes_only_its_own_script(tmp_path, monkeypatch):
    home = home_folder(tmp_path)
    before = tree(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHELL", "/bin/bash")
    monkeypatch.setattr("charlstm.cli.completion.current_shell", lambda: "bash")
    for _ in range(2):  # the second time over its own script
        result = invoke("--install-completion")
        assert result.exit_code == 0, result.stderr
        assert "source ~/.bash_completions/charlstm.sh" in result.stderr
    after = tree(home)
    assert {k: v for k, v in after.items() if k in before} == before  # .bashrc untouched
    assert set(after) - set(before) == {".bash_completions",
                                        ".bash_completions/charlstm.sh"}
    script = home / ".bash_completions" / "charlstm.sh"
    script.write_text("# my own completion for another charlstm\n")
    mine = tree(home)
    result = invoke("--install-completion")
    assert result.exit_code == 2
    assert "is not charlstm's completion script" in one_line_error(result.stderr)
    assert tree(home) == mine


def test_a_default_named_folder_of_someone_elses_is_not_taken_again(tmp_path):
    from charlstm.training.rundir import new_run_dir

    model = {"model": "lstm", "num_layers": 1, "hidden_size": 8}
    checkpoints = tmp_path / "checkpoints"
    (checkpoints / "tiny-lstm1x8").mkdir(parents=True)
    (checkpoints / "tiny-lstm1x8" / "notes.txt").write_text("mine\n")
    chosen = new_run_dir(None, "tiny", model, checkpoints, reuse_unsaved=True)
    assert chosen == checkpoints / "tiny-lstm1x8-2"
    (checkpoints / "tiny-lstm1x8-2").mkdir()  # empty: a launch killed before it wrote
    assert new_run_dir(None, "tiny", model, checkpoints, reuse_unsaved=True) == chosen
