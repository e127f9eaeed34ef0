"""The command line, run in-process with typer's CliRunner: fast checks of what each
command prints where, the exit codes, and the one-line error messages.

Real subprocesses (pipes, signals, stdin, the console script) are in test_cli_subprocess.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

import charlstm
from charlstm import checkpoint
from charlstm.errors import CharlstmError

from conftest import (SHAKESPEARE, TINY_TEXT, body_of, invoke, isolate_cli, one_line_error,
                      with_final_newline)


# a model far too small to learn anything, for requests that should fail before training
TINY_FLAGS = ["--num-layers", "1", "--hidden-size", "8", "--embed-size", "4",
              "--batch-size", "2", "--seq-len", "4", "--max-steps", "5", "--eval-every", "5",
              "--sample-length", "0", "--precision", "fp32", "--device", "cpu"]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test works in its own folder, with corpora and runs kept there."""
    return isolate_cli(tmp_path, monkeypatch)


def assert_clean_error(result, code: int) -> str:
    """An expected failure: the exit code, one line on stderr, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit), result.exception  # handled, not raised
    assert result.stdout == ""
    return one_line_error(result.stderr)


# ----------------------------------------------------------------------------- version, help


def test_version_prints_the_package_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"charlstm {charlstm.__version__}\n"
    assert result.stderr == ""


@pytest.mark.parametrize("args, expected", [
    ([], "COMMAND"),  # no arguments: the help, not an error
    (["-h"], "COMMAND"),
    (["--help"], "COMMAND"),
    (["train", "-h"], "--max-steps"),
    (["train", "--help"], "--hidden-size"),
    (["sample", "-h"], "--temperature"),
    (["sample", "--help"], "--top-p"),
    (["info", "-h"], "--json"),
    (["info", "--help"], "CHECKPOINT"),
    (["corpus", "-h"], "prepare"),
    (["corpus", "list", "-h"], "Usage"),
    (["corpus", "get", "--help"], "--from"),
    (["corpus", "prepare", "-h"], "--lossy"),
])
def test_help_for_the_app_and_every_command(args, expected):
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    assert "Usage" in result.stdout
    assert expected in result.stdout
    assert result.stderr == ""


def test_app_help_lists_every_command():
    out = invoke("--help").stdout
    for command in ("train", "sample", "info", "corpus"):
        assert command in out


def test_train_help_groups_options_by_purpose():
    out = invoke("train", "--help").stdout
    panels = {}
    for group in ("Data", "Model", "Optimization", "Checkpointing", "Output"):
        marker = f"─ {group} ─"  # a rich panel title
        assert marker in out, group
        panels[group] = out.index(marker)
    # flags sit in their own group: each appears after its group's title
    for flag, group in [("--val-frac", "Data"), ("--hidden-size", "Model"),
                        ("--lr", "Optimization"), ("--resume", "Checkpointing"),
                        ("--quiet", "Output")]:
        assert out.index(flag) > panels[group], flag


# ----------------------------------------------------------------------------- sample


def test_sample_no_echo_prints_exactly_the_generated_characters(trained_run):
    result = invoke("sample", trained_run, "-n", "200", "--seed", "1", "-t", "0", "--no-echo")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    body = body_of(result.stdout, 200)
    assert len(body) == 200
    assert set(body) <= set(TINY_TEXT)
    # temperature 0 is argmax: the library gives the same text
    lm = charlstm.load(trained_run, "cpu")
    assert body == lm.sample("", 200, temperature=0)


def test_sample_with_seed_matches_the_library_and_repeats(trained_run):
    args = ("sample", trained_run, "-n", "120", "--seed", "7", "-t", "1", "--no-echo")
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    lm = charlstm.load(trained_run, "cpu")
    assert body_of(first.stdout, 120) == lm.sample("", 120, temperature=1.0, seed=7)
    other = invoke("sample", trained_run, "-n", "120", "--seed", "8", "-t", "1", "--no-echo")
    assert other.stdout != first.stdout


def test_sample_echo_starts_with_the_prime_and_no_echo_leaves_it_out(trained_run):
    echoed = invoke("sample", trained_run, "-n", "40", "--seed", "1", "-p", "the ", "--echo")
    assert echoed.exit_code == 0, echoed.stderr
    assert echoed.stdout.startswith("the ")
    plain = invoke("sample", trained_run, "-n", "40", "--seed", "1", "-p", "the ", "--no-echo")
    assert plain.exit_code == 0, plain.stderr
    assert echoed.stdout == "the " + plain.stdout
    assert len(body_of(plain.stdout, 40)) == 40


def test_sample_reads_the_prime_from_stdin(trained_run):
    prime = "all that "
    expected = with_final_newline(
        prime + charlstm.load(trained_run, "cpu").sample(prime, 50, seed=3))
    piped = invoke("sample", trained_run, "-n", "50", "--seed", "3", input=prime)
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout == expected
    dash = invoke("sample", trained_run, "-n", "50", "--seed", "3", "--prime-file", "-",
                  input=prime)
    assert dash.stdout == expected


def test_sample_reads_the_prime_from_a_file(trained_run, tmp_path):
    (tmp_path / "prime.txt").write_text("a stitch", encoding="utf-8")
    result = invoke("sample", trained_run, "-n", "30", "--seed", "2", "--prime-file",
                    "prime.txt")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == with_final_newline(
        "a stitch" + charlstm.load(trained_run, "cpu").sample("a stitch", 30, seed=2))


def test_sample_accepts_a_checkpoint_file(trained_run):
    result = invoke("sample", trained_run / "last.pt", "-n", "20", "--seed", "1", "--no-echo")
    assert result.exit_code == 0, result.stderr
    assert set(body_of(result.stdout, 20)) <= set(TINY_TEXT)


def test_sample_several_samples_are_separated_by_a_blank_line(trained_run):
    result = invoke("sample", trained_run, "-n", "30", "-t", "0", "-N", "3", "-p", "the ")
    assert result.exit_code == 0, result.stderr
    expected = with_final_newline("the " + charlstm.load(trained_run, "cpu")
                                  .sample("the ", 30, temperature=0))
    assert result.stdout == "\n".join([expected] * 3)


def test_several_samples_with_a_stop_are_the_librarys(trained_run):
    result = invoke("sample", trained_run, "-n", "60", "--seed", "4", "-N", "3", "-p", "the ",
                    "--no-echo", "--stop-at", "o")
    assert result.exit_code == 0, result.stderr
    texts = charlstm.load(trained_run, "cpu").sample("the ", 60, seed=4, num_samples=3,
                                                     stop_at="o")
    assert result.stdout == "\n".join(with_final_newline(text) for text in texts)


def test_each_line_continuations_are_the_librarys(trained_run):
    lines = ["the qu", "a stitch", "all"]
    result = invoke("sample", trained_run, "--each-line", "-n", "40", "--seed", "5",
                    "--stop-at", r"\n", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    bodies = charlstm.load(trained_run, "cpu").sample(lines, 40, seed=5, stop_at="\n")
    assert result.stdout == "".join(with_final_newline(line + body)
                                    for line, body in zip(lines, bodies))


# ----------------------------------------------------------------------------- sample errors


def _write_bad_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    (tmp_path / "text.pt").write_text("this is not a checkpoint\n", encoding="utf-8")
    (tmp_path / "empty_dir").mkdir()


@pytest.mark.parametrize("args, code, names", [
    (["sample", "missing.pt"], 2, "missing.pt"),
    (["sample", "empty_dir"], 2, "empty_dir"),
    (["sample", "random.pt"], 1, "random.pt"),
    (["sample", "text.pt"], 1, "text.pt"),
])
def test_sample_bad_checkpoint_is_one_line(tmp_path, args, code, names):
    _write_bad_checkpoints(tmp_path)
    line = assert_clean_error(invoke(*args), code)
    assert names in line


@pytest.mark.parametrize("options, names", [
    (["-t", "-1"], "temperature"),
    (["--top-p", "0"], "top-p"),
    (["--top-p", "1.5"], "top-p"),
    (["--top-k", "0"], "top-k"),
    (["--seed", "-1"], "seed"),
    (["-n", "-5"], "length"),
    (["-N", "0"], "samples"),
    (["-n", "0", "-N", "2"], "--num-samples"),
    (["-p", "the", "--prime-file", "prime.txt"], "--prime"),
    (["--prime-file", "no-such-prime.txt"], "no-such-prime.txt"),
    (["--device", "toaster"], "toaster"),
    (["--bogus"], "--bogus"),
])
def test_sample_bad_option_is_a_usage_error(trained_run, options, names):
    line = assert_clean_error(invoke("sample", trained_run, *options), 2)
    assert names in line


def test_sample_prime_with_unknown_characters_names_them(trained_run):
    line = assert_clean_error(invoke("sample", trained_run, "-p", "the QZ€"), 2)
    for char in ("Q", "Z", "€"):
        assert repr(char) in line
    assert "'t'" not in line  # characters the model knows are not blamed


def test_sample_prime_on_stdin_that_is_not_utf8_is_a_usage_error(trained_run):
    line = assert_clean_error(invoke("sample", trained_run, input=b"the \xff\xfe"), 2)
    assert "byte offset 4" in line


# ----------------------------------------------------------------------------- train errors


@pytest.fixture
def bad_corpora(tmp_path: Path) -> Path:
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "short.txt").write_text("the fox", encoding="utf-8")
    (tmp_path / "binary.txt").write_bytes(b"hello\xff\xfe world" * 10)
    return tmp_path


@pytest.mark.parametrize("corpus, options, code, names", [
    ("missing.txt", [], 2, "missing.txt"),
    ("folder", [], 2, "folder"),
    ("empty.txt", [], 2, "empty"),
    ("short.txt", [], 2, "--batch-size"),
    ("binary.txt", [], 1, "byte offset 5"),
    ("tiny.txt", ["--batch-size", "0"], 2, "--batch-size"),
    ("tiny.txt", ["--seq-len", "0"], 2, "--seq-len"),
    ("tiny.txt", ["--hidden-size", "-1"], 2, "--hidden-size"),
    ("tiny.txt", ["--dropout", "1.5"], 2, "--dropout"),
    ("tiny.txt", ["--lr", "0"], 2, "--lr"),
    ("tiny.txt", ["--beta1", "1"], 2, "--beta1"),
    ("tiny.txt", ["--beta2", "1"], 2, "--beta2"),
    ("tiny.txt", ["--stream-block", "-1"], 2, "--stream-block"),
    ("tiny.txt", ["--stream-block", "64", "--shuffle"], 2, "--stream-block"),
    ("tiny.txt", ["--stream-block", "100000"], 2, "--stream-block"),
    ("tiny.txt", ["--early-batch", "64", "--batch-size", "32"], 2, "--early-batch"),
    ("tiny.txt", ["--early-batch", "3", "--batch-size", "8"], 2, "--early-batch"),
    ("tiny.txt", ["--early-share", "1"], 2, "--early-share"),
    ("tiny.txt", ["--time", "5x"], 2, "5x"),
    ("tiny.txt", ["--time", "0s"], 2, "--time"),
    ("tiny.txt", ["--model", "transformer"], 2, "transformer"),
    ("tiny.txt", ["--preset", "huge"], 2, "huge"),
    ("tiny.txt", ["--val-frac", "1"], 2, "--val-frac"),
    ("tiny.txt", ["--seed", "-1"], 2, "--seed"),
    ("tiny.txt", ["--batch-size", "many"], 2, "--batch-size"),
    ("tiny.txt", ["--bogus"], 2, "--bogus"),
])
def test_train_bad_input_is_one_line_and_leaves_no_run(bad_corpora, corpus, options, code,
                                                        names):
    result = invoke("train", corpus, *TINY_FLAGS, "--out", "run", *options)
    line = assert_clean_error(result, code)
    assert names in line
    assert not (bad_corpora / "run").exists()


def test_train_lossy_accepts_invalid_utf8(bad_corpora):
    result = invoke("train", "binary.txt", *TINY_FLAGS, "--batch-size", "1", "--out", "run",
                    "--lossy")
    assert result.exit_code == 0, result.stderr
    assert "\ufffd" in checkpoint.load(bad_corpora / "run")["vocab"]["chars"]


def test_train_unwritable_output_folder_is_a_runtime_error(bad_corpora):
    if os.geteuid() == 0:  # root writes through permissions; nothing writes under a file
        (bad_corpora / "somefile.txt").write_text("not a folder\n")
        out = "somefile.txt/run"
    else:
        locked = bad_corpora / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = "locked/run"
    try:
        line = assert_clean_error(invoke("train", "tiny.txt", *TINY_FLAGS, "--out", out), 1)
    finally:
        if os.geteuid() != 0:
            (bad_corpora / "locked").chmod(0o700)
    assert out in line


def test_debug_env_shows_the_exception(trained_run):
    result = invoke("sample", trained_run, "-t", "-1", env={"CHARLSTM_DEBUG": "1"})
    assert isinstance(result.exception, CharlstmError)  # re-raised, not turned into a line
    assert "charlstm: error" not in result.stderr


# ----------------------------------------------------------------------------- resume


@pytest.fixture
def finished_run(trained_run, tmp_path) -> Path:
    """A private copy of the finished tiny run (resuming writes into the folder)."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_resume_of_a_finished_run_says_so(finished_run):
    before = checkpoint.load(finished_run / "last.pt")["step"]
    result = invoke("train", "--out", finished_run, "--resume")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "already finished" in result.stderr
    assert checkpoint.load(finished_run / "last.pt")["step"] == before


def test_resume_continues_to_the_new_limit(finished_run):
    before = checkpoint.load(finished_run / "last.pt")["step"]
    result = invoke("train", "--out", finished_run, "--resume", "--max-steps", str(before + 10),
                    "--eval-every", "5")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"resuming at step {before:,}" in result.stderr
    saved = checkpoint.load(finished_run / "last.pt")
    assert saved["step"] == before + 10
    steps = [json.loads(line)["step"] for line in
             (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [r["step"] for r in saved["history"]]
    assert steps[-2:] == [before + 5, before + 10]


def test_resume_with_another_architecture_is_a_usage_error(finished_run):
    before = (finished_run / "last.pt").read_bytes()
    line = assert_clean_error(
        invoke("train", "--out", finished_run, "--resume", "--hidden-size", "32",
               "--max-steps", "200"), 2)
    assert "--hidden-size" in line
    assert (finished_run / "last.pt").read_bytes() == before


def test_resume_of_a_checkpoint_that_is_not_there_is_a_usage_error(tmp_path):
    # (a run folder with no checkpoint yet is started instead: see test_restart.py)
    assert_clean_error(invoke("train", "--out", tmp_path / "nothing" / "last.pt", "--resume"),
                       2)


def test_training_into_an_existing_run_without_resume_is_a_usage_error(finished_run, tmp_path):
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    before = (finished_run / "last.pt").read_bytes()
    line = assert_clean_error(invoke("train", "tiny.txt", *TINY_FLAGS, "--out", finished_run),
                              2)
    assert "--resume" in line
    assert (finished_run / "last.pt").read_bytes() == before


# ----------------------------------------------------------------------------- train


def test_train_from_stdin_in_process(tmp_path):
    result = invoke("train", "-", *TINY_FLAGS, "--out", "run", input=TINY_TEXT)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    saved = checkpoint.load(tmp_path / "run" / "last.pt")
    assert saved["corpus"]["source"] == "-"
    assert saved["corpus"]["characters"] == len(TINY_TEXT)
    assert set(saved["vocab"]["chars"]) == set(TINY_TEXT)


def test_train_quiet_shows_evaluations_but_no_samples(tmp_path):
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    result = invoke("train", "tiny.txt", *TINY_FLAGS, "--sample-length", "30", "--quiet",
                    "--out", "run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "step 5:" in result.stderr and "validation" in result.stderr
    assert "sample at step" not in result.stderr


# ----------------------------------------------------------------------------- info


def test_info_prints_model_vocabulary_best_loss_and_history(trained_run):
    result = invoke("info", trained_run)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    data = checkpoint.load(trained_run)
    out = result.stdout
    model = data["model_config"]
    assert f"{model['model']}, {model['num_layers']} layers x {model['hidden_size']}" in out
    assert f"{len(data['vocab']['chars'])} characters" in out
    assert f"{data['best_val_loss']:.4f}" in out
    assert "history" in out
    rows = [line.split() for line in out.splitlines()]
    for record in data["history"]:
        assert any(row[:1] == [f"{record['step']:,}"] and f"{record['train_loss']:.4f}" in row
                   for row in rows), record["step"]
    assert "\x1b[" not in out


def test_info_json_is_one_parseable_object(trained_run):
    result = invoke("info", trained_run / "last.pt", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    summary = json.loads(result.stdout)
    assert {"best_val_loss", "history", "model", "vocab_size"} <= set(summary)
    data = checkpoint.load(trained_run / "last.pt")
    assert summary["vocab_size"] == len(data["vocab"]["chars"]) == len(set(TINY_TEXT))
    assert summary["model"] == data["model_config"]
    assert summary["best_val_loss"] == pytest.approx(data["best_val_loss"])
    assert [r["step"] for r in summary["history"]] == [r["step"] for r in data["history"]]
    assert summary["step"] == data["step"]


def test_info_missing_checkpoint_is_a_usage_error():
    assert_clean_error(invoke("info", "nowhere"), 2)


# ----------------------------------------------------------------------------- corpus


def listed_as_here(name: str, table: str) -> bool:
    """Whether `corpus list` says the corpus is here (rather than how to get it)."""
    row = next(line for line in table.splitlines() if line.split()[:1] == [name])
    return f"charlstm corpus get {name}" not in row


def test_corpus_list_shows_the_known_corpora():
    result = invoke("corpus", "list")
    assert result.exit_code == 0, result.stderr
    assert "pystdlib" in result.stdout and "pydocs" in result.stdout
    assert "tinyshakespeare" in result.stdout
    assert listed_as_here("tinyshakespeare", result.stdout) is False  # not downloaded yet
    assert result.stderr == ""


def test_corpus_get_with_wrong_content_fails_and_keeps_nothing(tmp_path):
    (tmp_path / "fake.txt").write_text(TINY_TEXT, encoding="utf-8")
    line = assert_clean_error(invoke("corpus", "get", "tinyshakespeare", "--from", "fake.txt"),
                              1)
    assert "checksum" in line
    corpora_dir = tmp_path / "corpora"
    assert not corpora_dir.exists() or not any(corpora_dir.rglob("*"))


def test_corpus_get_unknown_name_is_a_usage_error():
    line = assert_clean_error(invoke("corpus", "get", "no-such-corpus"), 2)
    assert "no-such-corpus" in line


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="no local copy of tinyshakespeare")
def test_corpus_get_from_a_local_copy_prints_the_path(tmp_path):
    result = invoke("corpus", "get", "tinyshakespeare", "--from", SHAKESPEARE)
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip())
    assert result.stdout.count("\n") == 1
    assert path.resolve() == (tmp_path / "corpora" / "tinyshakespeare.txt").resolve()
    assert hashlib.sha256(path.read_bytes()).digest() == \
        hashlib.sha256(SHAKESPEARE.read_bytes()).digest()
    assert listed_as_here("tinyshakespeare", invoke("corpus", "list").stdout) is True


def test_corpus_prepare_prints_characters_and_vocabulary(tmp_path):
    (tmp_path / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    result = invoke("corpus", "prepare", "tiny.txt")
    assert result.exit_code == 0, result.stderr
    assert f"{len(TINY_TEXT):,} characters" in result.stdout
    assert f"vocabulary {len(set(TINY_TEXT))}" in result.stdout
    assert any((tmp_path / "corpora" / "cache").iterdir())


def test_corpus_prepare_from_stdin(tmp_path):
    result = invoke("corpus", "prepare", "-", input="abcabc\n")
    assert result.exit_code == 0, result.stderr
    assert "7 characters" in result.stdout
    assert "vocabulary 4" in result.stdout


@pytest.mark.parametrize("command", [["train"], ["sample"], ["score"], ["info"], ["plot"],
                                     ["corpus", "list"], ["corpus", "get"],
                                     ["corpus", "prepare"]])
def test_every_command_has_help_with_examples(command):
    result = invoke(*command, "--help", env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert result.exit_code == 0
    examples = result.stdout.split("Examples:", 1)
    assert len(examples) == 2, result.stdout
    assert f"charlstm {' '.join(command)}" in examples[1]  # each shows the command itself
