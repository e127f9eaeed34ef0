"""Scoring (charlstm.infer.scoring, LanguageModel.score*, `charlstm score`): the batched, padded
and chunked passes give the same bits as a plain loop over characters; unknown characters
cost what the documentation says; the command keeps every line, in order, and behaves in
a pipe.
"""

from __future__ import annotations

import json
import math
import random
import select
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import charlstm
from charlstm.infer import scoring

from conftest import SHAKESPEARE, TINY_TEXT, invoke, isolate_cli, one_line_error, pipe_into

UNKNOWN_BITS = math.log2(0x110000)  # the documented cost of a character the model never saw

# known characters only, unknown ones ('é', 'ö', '→', '7') mixed in, at the start, alone
TEXTS = ["the quick brown fox jumps over the lazy dog.",
         "a stitch in time saves nine.\nall that glitters is not gold.\n",
         "t", "", "\n\n", "héllo wörld → 7 dogs", "éa stitch", "ééé", "xyz zyx",
         "the lazy dog." * 5]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_cli(tmp_path, monkeypatch)


@pytest.fixture(scope="module")
def lm(trained_run) -> charlstm.LanguageModel:
    return charlstm.load(trained_run, device="cpu")


@torch.no_grad()
def reference_bits(lm: charlstm.LanguageModel, text: str) -> float:
    """The bits of `text`, one character at a time through the model's forward."""
    counts = torch.tensor(lm.vocab.counts, dtype=torch.float64)
    first_char_log_probs = (counts / counts.sum()).log()
    bits, state, previous = 0.0, None, None
    for char in text:
        if char not in lm.vocab:
            bits += UNKNOWN_BITS
            continue
        (index,) = lm.vocab.encode(char)
        if previous is None:
            log_prob = first_char_log_probs[index]
        else:
            logits, _, state = lm.model(torch.tensor([[previous]]), state)  # (1, 1, V)
            log_prob = torch.log_softmax(logits[0, -1].double(), dim=-1)[index]
        bits -= log_prob.item() / math.log(2)
        previous = index
    return bits


def assert_scores(record: dict, text: str, bits: float) -> None:
    assert record["text"] == text
    assert record["characters"] == len(text)
    assert record["unknown"] == sum(c not in TINY_TEXT for c in text)
    assert record["bits"] == pytest.approx(bits, rel=1e-5, abs=1e-4)
    if text:
        assert record["bits_per_char"] == pytest.approx(bits / len(text), rel=1e-5, abs=1e-4)
    else:
        assert math.isnan(record["bits_per_char"])


# ----------------------------------------------------------------------------- the library


def test_unknown_character_penalty_is_log2_of_all_code_points():
    assert scoring.UNKNOWN_CHAR_BITS == pytest.approx(20.087, abs=1e-3)
    assert scoring.UNKNOWN_CHAR_BITS == UNKNOWN_BITS


def test_one_text_at_a_time_matches_a_loop_over_characters(lm):
    for text in TEXTS:
        assert_scores(lm.score(text), text, reference_bits(lm, text))


def test_batches_match_a_loop_over_characters(lm):
    # in fp32: auto may measure bf16 faster here and read about 0.3% off
    expected = [reference_bits(lm, text) for text in TEXTS]
    batched = lm.score_lines(TEXTS, precision="fp32")
    for record, text, bits in zip(batched, TEXTS, expected, strict=True):
        assert_scores(record, text, bits)
    # small batches of a few rows: padding, sorting by length and several batches per group
    records = list(scoring.score_texts(lm.model, lm.vocab, TEXTS * 3, batch_positions=90,
                                       max_batch_rows=3, precision="fp32"))
    for record, text, bits in zip(records, TEXTS * 3, expected * 3, strict=True):
        assert_scores(record, text, bits)


def test_texts_longer_than_a_time_slice_match(lm):
    long_text = TINY_TEXT[:700] + "é" + TINY_TEXT[700:1000]  # slices of 16 characters below
    tiny_slices = 16 * max(lm.config.hidden_size, lm.config.vocab_size)
    expected = reference_bits(lm, long_text)
    assert_scores(scoring.score(lm.model, lm.vocab, long_text, max_elements=tiny_slices),
                  long_text, expected)
    # in a batch with short texts: three rows, so slices of 5 characters
    texts = ["the dog", long_text, "", "a stitch in time"]
    records = scoring.score_texts(lm.model, lm.vocab, texts, max_elements=tiny_slices,
                                  precision="fp32")
    for record, text in zip(records, texts, strict=True):
        assert_scores(record, text, reference_bits(lm, text))


def test_a_text_in_pieces_scores_as_the_whole(lm):
    text = "é" + TINY_TEXT[:400] + "→→" + TINY_TEXT[400:600]
    cuts = [0, 1, 2, 50, 51, 51, 200, 401, 402, 403, len(text)]
    pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]
    record = lm.score_stream(pieces)
    whole = lm.score(text)
    assert record["text"] is None
    assert record["characters"] == whole["characters"] == len(text)
    assert record["unknown"] == whole["unknown"] == 3
    assert record["bits"] == pytest.approx(reference_bits(lm, text), rel=1e-5)
    assert whole["bits"] == pytest.approx(record["bits"], rel=1e-5)
    small_slices = scoring.score_stream(lm.model, lm.vocab, pieces, max_elements=64 * 5)
    assert small_slices["bits"] == pytest.approx(record["bits"], rel=1e-5)
    assert math.isnan(lm.score_stream([])["bits_per_char"])


def test_a_long_text_is_read_as_streams_close_to_exact(lm):
    """Long enough for several warmed streams: within the documented 0.005 bits/char of
    the exact reading, which --exact keeps; the counts are the same either way."""
    text = TINY_TEXT * 3 + "→"  # about 19,000 characters: 18 streams
    pieces = [text[i:i + 777] for i in range(0, len(text), 777)]
    streamed = lm.score_stream(pieces)
    exact = lm.score_stream(pieces, exact=True)
    assert set(streamed) == set(exact) == {"text", "characters", "bits", "bits_per_char",
                                           "unknown"}
    assert (streamed["characters"], streamed["unknown"]) == (len(text), 1)
    assert (exact["characters"], exact["unknown"]) == (len(text), 1)
    assert abs(streamed["bits_per_char"] - exact["bits_per_char"]) < 0.005
    assert lm.score(text)["bits"] == pytest.approx(streamed["bits"], rel=1e-9)
    assert lm.score(text, exact=True)["bits"] == pytest.approx(exact["bits"], rel=1e-6)
    assert lm.score(text)["text"] == text


@pytest.mark.slow
def test_streams_match_exact_on_shakespeare_with_a_trained_model(tmp_path):
    """A real text the model was not trained on: the whole-text score within 0.005
    bits per character of the exact one."""
    if not SHAKESPEARE.exists():
        pytest.skip(f"{SHAKESPEARE} is not here")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    held_out = text[len(text) - len(text) // 10:]
    train_on = tmp_path / "train.txt"
    train_on.write_text(text[:len(text) - len(text) // 10], encoding="utf-8")
    run = charlstm.train(str(train_on), out=tmp_path / "run", corpora_dir=tmp_path / "c",
                         checkpoints_dir=tmp_path / "k", preset="tiny", max_steps=300,
                         eval_every=300, eval_chars=2000, sample_length=0, precision="fp32",
                         device="cpu").run_dir
    trained = charlstm.load(run, device="cpu")
    streamed = trained.score_stream([held_out])
    exact = trained.score_stream([held_out], exact=True)
    assert exact["bits_per_char"] < 3.5  # it learned something
    assert abs(streamed["bits_per_char"] - exact["bits_per_char"]) < 0.005


def test_unknown_characters_are_counted_penalised_and_skipped(lm):
    known = lm.score("the lazy dog")
    # an unknown character adds its fixed cost; the state goes on as if it were not there
    marked = lm.score("the l→azy dog")
    assert marked["unknown"] == 1
    assert marked["characters"] == len("the l→azy dog")
    assert marked["bits"] == pytest.approx(known["bits"] + UNKNOWN_BITS, rel=1e-6)
    only_unknown = lm.score("7→ö")
    assert only_unknown["unknown"] == 3
    assert only_unknown["bits"] == pytest.approx(3 * UNKNOWN_BITS)
    assert only_unknown["bits_per_char"] == pytest.approx(UNKNOWN_BITS)


def test_empty_text_scores_nothing_and_nan_per_character(lm):
    record = lm.score("")
    assert (record["characters"], record["bits"], record["unknown"]) == (0, 0.0, 0)
    assert math.isnan(record["bits_per_char"])


def test_the_training_text_costs_fewer_bits_than_its_characters_shuffled(lm):
    characters = list(TINY_TEXT)
    random.Random(0).shuffle(characters)
    trained = lm.score(TINY_TEXT)["bits_per_char"]
    shuffled = lm.score("".join(characters))["bits_per_char"]
    assert trained < 1.0 < 3.0 < shuffled  # a memorised text vs. noise over 30 characters


def test_scoring_leaves_the_model_in_its_mode(lm):
    lm.model.train()
    try:
        lm.score("the dog")
        assert lm.model.training
    finally:
        lm.model.eval()


# ----------------------------------------------------------------------------- the command


def test_score_prints_bits_per_character_of_the_whole_input(trained_run, lm, tmp_path):
    (tmp_path / "in.txt").write_text(TINY_TEXT[:500], encoding="utf-8")
    expected = f"{lm.score(TINY_TEXT[:500])['bits_per_char']:.4f}\n"
    from_file = invoke("score", trained_run, tmp_path / "in.txt")
    assert from_file.exit_code == 0, from_file.stderr
    assert (from_file.stdout, from_file.stderr) == (expected, "")
    from_stdin = invoke("score", trained_run, input=TINY_TEXT[:500])
    assert (from_stdin.exit_code, from_stdin.stdout) == (0, expected)
    dash = invoke("score", trained_run, "-", input=TINY_TEXT[:500])
    assert (dash.exit_code, dash.stdout) == (0, expected)


def test_exact_reads_the_whole_input_one_character_after_another(trained_run, lm,
                                                                   tmp_path, monkeypatch):
    text = TINY_TEXT * 3
    (tmp_path / "in.txt").write_text(text, encoding="utf-8")
    streamed = invoke("score", trained_run, "--json", tmp_path / "in.txt")
    assert streamed.exit_code == 0, streamed.stderr
    assert json.loads(streamed.stdout)["bits"] == pytest.approx(lm.score(text)["bits"],
                                                                rel=1e-6)

    def no_streams(*args, **kwargs):
        raise AssertionError("--exact read the input as parallel streams")

    monkeypatch.setattr(scoring, "text_loss", no_streams)
    exact = invoke("score", trained_run, "--exact", "--json", tmp_path / "in.txt")
    assert exact.exit_code == 0, exact.stderr
    assert json.loads(exact.stdout)["bits"] == pytest.approx(
        lm.score(text, exact=True)["bits"], rel=1e-6)
    assert invoke("score", trained_run, tmp_path / "in.txt").exit_code == 1  # streams


def test_per_line_keeps_every_line_in_order(trained_run, lm, tmp_path):
    lines = ["the lazy dog.", "", "héllo → wörld", "", "", "all that glitters", "\t", "end"]
    (tmp_path / "in.txt").write_text("\n".join(lines), encoding="utf-8")  # no final newline
    result = invoke("score", trained_run, "--per-line", tmp_path / "in.txt",
                    "--precision", "fp32")  # as lm.score reads a short text
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.split("\n")
    assert rows[-1] == ""  # every row ends with a newline
    rows = rows[:-1]
    assert len(rows) == len(lines)
    for row, line in zip(rows, lines):
        bits_per_char, text = row.split("\t", 1)
        assert text == line
        assert bits_per_char == f"{lm.score(line)['bits_per_char']:.4f}"
    assert rows[1] == "nan\t"
    # the unknown characters are counted on stderr, one line, never on stdout
    assert result.stderr.count("\n") == 1 and "4 character(s)" in result.stderr


def test_json_lines_parse(trained_run, lm):
    text = "the lazy dog.\n\nhéllo\n"
    result = invoke("score", trained_run, "--per-line", "--json", "--precision", "fp32",
                    input=text)  # as lm.score reads a short text
    assert result.exit_code == 0, result.stderr
    records = [json.loads(row) for row in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["the lazy dog.", "", "héllo"]
    assert records[1]["bits_per_char"] is None  # JSON has no NaN
    assert records[2]["unknown"] == 1
    for record in records:
        assert set(record) == {"text", "characters", "bits", "bits_per_char", "unknown"}
        assert record["bits"] == pytest.approx(lm.score(record["text"])["bits"], rel=1e-5)
    whole = invoke("score", trained_run, "--json", input=text)
    (row,) = whole.stdout.splitlines()
    record = json.loads(row)
    assert record["text"] is None  # the whole input is not repeated back
    assert record["characters"] == len(text) and record["unknown"] == 1
    assert record["bits"] == pytest.approx(lm.score(text)["bits"], rel=1e-5)


def test_hundred_thousand_short_lines_keep_count_and_order(trained_run, tmp_path):
    sentences = TINY_TEXT.splitlines()[:3]
    lines = [sentences[i % 3][: i % 41] for i in range(100_000)]  # 0 to 40 characters
    (tmp_path / "many.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = invoke("score", trained_run, "-l", tmp_path / "many.txt")
    assert result.exit_code == 0, result.stderr
    rows = result.stdout.splitlines()
    assert len(rows) == 100_000
    assert [row.split("\t", 1)[1] for row in rows] == lines
    assert all(row.startswith("nan\t") == (not line) for row, line in zip(rows, lines))


def test_invalid_utf8_is_one_clean_error(trained_run, tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"the dog\nthe \xff cat\n")
    for args in (["-l"], []):
        result = invoke("score", trained_run, *args, tmp_path / "bad.txt")
        assert result.exit_code == 1
        # per line, the lines before the bad one were scored (as a filter streams them)
        assert [row.split("\t")[1] for row in result.stdout.splitlines()] == (
            ["the dog"] if args else [])
        line = one_line_error(result.stderr)
        assert "not valid UTF-8" in line and "byte offset 12" in line
    lossy = invoke("score", trained_run, "-l", "--lossy", tmp_path / "bad.txt")
    assert lossy.exit_code == 0 and len(lossy.stdout.splitlines()) == 2


def test_missing_file_is_a_usage_error(trained_run, tmp_path):
    result = invoke("score", trained_run, tmp_path / "nowhere.txt")
    assert result.exit_code == 2 and result.stdout == ""
    assert "no such file" in one_line_error(result.stderr)


def test_help_has_examples():
    result = invoke("score", "--help")
    assert result.exit_code == 0
    assert "--per-line" in result.stdout and "sort -rn" in result.stdout


def test_per_line_into_head_ends_quietly(trained_run, tmp_path):
    """`charlstm score RUN --per-line < file | head -n 2`: exit 0, nothing on stderr."""
    lines = TINY_TEXT.splitlines() * 20  # about 140 kB of rows: more than a pipe holds
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, out, err = pipe_into(["score", str(trained_run), "--per-line"], "head -n 2",
                                 tmp_path, stdin_file="in.txt")
    rows = out.decode("utf-8").splitlines()
    assert [row.split("\t", 1)[1] for row in rows] == lines[:2]
    assert status == "0"
    assert err == b""


def test_per_line_scores_come_as_lines_arrive_not_in_big_groups(trained_run, tmp_path):
    """A slow writer (tail -f) gets each line's score before it writes the next."""
    process = subprocess.Popen([sys.executable, "-m", "charlstm", "score", str(trained_run),
                                "--per-line"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        for line in ("the quick brown fox", "a stitch in time", "all that glitters"):
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
            # the score arrives while the writer still holds the next line back
            ready, _, _ = select.select([process.stdout], [], [], 60)
            assert ready, f"no score for {line!r} within 60 s"
            row = process.stdout.readline().decode()
            assert row.endswith(f"\t{line}\n") and float(row.split("\t")[0]) > 0
        process.stdin.close()
        assert process.stdout.read() == b""
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
        process.wait()
