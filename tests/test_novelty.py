"""Copies of the training text: the suffix array and its searches against brute force,
the cached index (folder corpora, stale, corrupt, missing), the report, --max-copy."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

import charlstm
from charlstm import checkpoint
from charlstm.data import suffix_array
from charlstm.data.copy_index import open_index
from charlstm.errors import CorpusError
from charlstm.infer.novelty import report
from conftest import TINY_TEXT, one_line_error, run_cli


def brute_longest(query: list[int], text: list[int]) -> list[int]:
    found = []
    for i in range(len(query)):
        best = 0
        for length in range(1, len(query) - i + 1):
            pattern = query[i:i + length]
            if not any(text[j:j + length] == pattern for j in range(len(text) - length + 1)):
                break
            best = length
        found.append(best)
    return found


@pytest.mark.parametrize("seed", range(6))
def test_suffix_arrays_and_longest_matches_agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    alphabet = int(rng.integers(1, 5))
    tokens = rng.integers(0, alphabet, int(rng.integers(1, 400))).astype(np.uint8)
    expected = sorted(range(len(tokens)), key=lambda i: tokens[i:].tolist())
    suffixes = suffix_array.build(tokens)
    assert suffixes.tolist() == expected
    assert suffix_array.build_with_numpy(tokens).tolist() == expected
    query = rng.integers(0, alphabet + 1, 60)
    query[query == alphabet] = suffix_array.UNKNOWN  # a character the text lacks
    lengths, places = suffix_array.longest_matches(query, tokens, suffixes)
    assert lengths.tolist() == brute_longest(query.tolist(), tokens.tolist())
    for i, (length, place) in enumerate(zip(lengths, places)):
        if length:
            assert tokens[place:place + length].tolist() == query[i:i + length].tolist()


def test_the_matcher_follows_the_longest_copied_end(tmp_path):
    rng = random.Random(3)
    text = [rng.randrange(3) for _ in range(300)]
    tokens = np.array(text, dtype=np.uint8)
    matcher = suffix_array.Matcher(tokens, suffix_array.build(tokens), 3)
    grown = []
    for token in [rng.randrange(4) for _ in range(80)]:
        grown.append(token if token < 3 else suffix_array.UNKNOWN)
        length = matcher.push(grown[-1])
        ends = [k for k in range(1, len(grown) + 1)
                if any(text[j:j + k] == grown[-k:] for j in range(len(text) - k + 1))]
        assert length == max(ends, default=0)
        if length:
            expected = {text[j + length] for j in range(len(text) - length)
                        if text[j:j + length] == grown[-length:]}
            assert set(matcher.followers().tolist()) == expected
            assert set(matcher.followers(limit=0).tolist()) == expected  # token by token


def folder_corpus(tmp_path):
    """A folder of three files of random words, and its checkpoint record."""
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "lambda"]
    folder = tmp_path / "notes"
    folder.mkdir()
    texts = {}
    for name in ("a.txt", "b.txt", "c.txt"):
        lines = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(20)]
        texts[name] = "\n".join(lines) + "\n"
        (folder / name).write_text(texts[name])
    joined = "".join("\n" + texts[name] for name in sorted(texts))
    record = {"name": "notes", "source": [str(folder)], "globs": [],
              "sha256": hashlib.sha256(joined.encode()).hexdigest()}
    return folder, texts, record


def test_a_planted_copy_is_found_with_its_length_and_place(tmp_path):
    folder, texts, record = folder_corpus(tmp_path)
    index = open_index(record, tmp_path / "corpora")
    assert index.sha256 == record["sha256"]
    line = texts["b.txt"].splitlines()[2]
    planted = line[5:65]  # 60 characters from line 3 of b.txt
    assert len(planted) == 60
    found = report(index, "#" * 40 + planted + "#" * 40, min_length=30)
    longest = found["longest"]
    assert longest["length"] == 60 and longest["start"] == 40
    assert longest["text"] == planted
    place = longest["file"], longest["line"]
    # the stretch may occur elsewhere too; wherever reported, it is really there
    located = (folder / place[0].split("/")[-1]).read_text().splitlines()[place[1] - 1]
    assert located[longest["column"] - 1:].startswith(planted[:len(located)])
    assert found["copied_chars"] == 60 and found["copied_share"] == pytest.approx(60 / 140)


def test_the_index_is_cached_and_rebuilt_when_stale_or_corrupt(tmp_path, caplog):
    folder, texts, record = folder_corpus(tmp_path)
    corpora = tmp_path / "corpora"
    open_index(record, corpora)
    metas = list((corpora / "cache").glob("*.copies.json"))
    assert len(metas) == 1
    meta = json.loads(metas[0].read_text())
    sa_file = corpora / "cache" / meta["sa_file"]
    stamp = sa_file.stat().st_mtime_ns
    open_index(record, corpora)  # from the cache: nothing written
    assert sa_file.stat().st_mtime_ns == stamp
    data = bytearray(sa_file.read_bytes())
    data[:8] = data[8:16]  # two suffixes swapped: corrupt
    sa_file.write_bytes(bytes(data))
    index = open_index(record, corpora)
    assert "damaged" in caplog.text
    assert index.suffixes.tolist() == suffix_array.build(np.asarray(index.tokens)).tolist()
    (folder / "b.txt").write_text("zeta zeta zeta\n")  # the corpus changed: a new index
    changed = open_index(record, corpora)
    assert "changed since the model was trained" in caplog.text
    assert report(changed, "zeta zeta zeta")["longest"]["length"] == 14


def test_a_missing_corpus_uses_its_cached_index_or_names_the_file(tmp_path):
    folder, texts, record = folder_corpus(tmp_path)
    open_index(record, tmp_path / "corpora")
    for name in texts:
        (folder / name).unlink()
    folder.rmdir()
    assert open_index(record, tmp_path / "corpora").sha256 == record["sha256"]
    with pytest.raises(CorpusError, match="notes.* is not on disk"):
        open_index(record, tmp_path / "elsewhere")


def longest_copy(text: str, corpus: str) -> int:
    best = 0
    for i in range(len(text)):
        while i + best < len(text) and text[i:i + best + 1] in corpus:
            best += 1
    return best


@pytest.mark.parametrize("max_copy", [6, 12])
def test_max_copy_output_never_holds_a_longer_copy(trained_run, max_copy):
    lm = charlstm.load(trained_run, corpora_dir=trained_run.parent / "corpora")
    texts = lm.sample(["the ", "a ", ""], length=300, temperature=0.3, seed=4,
                      max_copy=max_copy)
    unguarded = lm.sample("the ", length=300, temperature=0.3, seed=4)
    assert longest_copy(unguarded, TINY_TEXT) > 50  # the tiny model copies when let
    for text in texts:
        assert len(text) > 50
        assert longest_copy(text, TINY_TEXT) <= max_copy


def test_sample_novelty_reports_on_stderr_and_novelty_checks_a_file(trained_run, tmp_path):
    env = {"CHARLSTM_CORPORA": str(trained_run.parent / "corpora")}
    done = run_cli("sample", str(trained_run), "-n", "120", "-t", "0.3", "--seed", "1",
                   "--novelty", "--novelty-min", "10", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    line = done.stderr.decode().strip()
    assert line.startswith("charlstm: novelty: longest copy ") and "tiny.txt:" in line
    assert "novelty" not in done.stdout.decode()
    (tmp_path / "text.txt").write_text("xx a stitch in time saves nine. yy")
    done = run_cli("novelty", str(trained_run), "text.txt", "--json", cwd=tmp_path, env=env)
    found = json.loads(done.stdout)
    assert found["longest"]["length"] == len("a stitch in time saves nine.")
    assert found["longest"]["file"].endswith("tiny.txt")


def test_a_model_without_its_corpus_is_one_line_naming_it(trained_run, tmp_path):
    record = checkpoint.read(trained_run)
    record.corpus = {**record.corpus, "source": str(tmp_path / "gone.txt"),
                     "sha256": "0" * 64}
    record.save(tmp_path / "moved.pt")
    done = run_cli("novelty", "moved.pt", "-", cwd=tmp_path, stdin="the quick")
    assert done.returncode == 1
    assert "gone.txt" in one_line_error(done.stderr.decode())
    done = run_cli("sample", "moved.pt", "--max-copy", "10", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == b""
    assert "gone.txt" in one_line_error(done.stderr.decode())
