"""Tests for charlstm.data.folders and collection_encoding: folders and several files
trained on as one corpus (walk order, skipping, the joined text, the validation split
from every file, the cache, resume, bounded memory), through `corpus.encode` and the real
command line."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import charlstm
import charlstm.data.folders as collection
import charlstm.data.folder_encoding as collection_encoding
import charlstm.data.corpus as corpus
from charlstm.errors import CorpusError, UsageError
from charlstm.data.split import split_point
from conftest import TINY_SETTINGS, TINY_TEXT, invoke, isolate_cli, one_line_error, run_cli

SEP = collection_encoding.SEPARATOR


def decoded(c: corpus.Corpus) -> str:
    return c.vocab.decode(np.asarray(c.tokens).tolist())


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def paths_of(files: collection.Collection, root: Path) -> list[str]:
    return [Path(m.path).relative_to(root).as_posix() for m in files.members]


# ------------------------------------------------------------------------- the walk


def test_folders_are_walked_in_sorted_path_order_without_hidden_names(tmp_path):
    for rel in ["b/z.txt", "a.txt", "b/a/y.txt", "b.txt", "c/x.txt", ".git/config",
                "b/.hidden.txt", "c/.cache/deep.txt"]:
        write(tmp_path / rel, f"text of {rel}\n")
    found = collection.collect([str(tmp_path)])
    assert paths_of(found, tmp_path) == ["a.txt", "b/a/y.txt", "b/z.txt", "b.txt", "c/x.txt"]


def test_arguments_keep_their_order_and_a_file_is_taken_once(tmp_path):
    write(tmp_path / "a.txt", "a\n")
    write(tmp_path / "d/b.txt", "b\n")
    (tmp_path / "d/link.txt").symlink_to(tmp_path / "a.txt")  # the same file again
    found = collection.collect([str(tmp_path / "d"), str(tmp_path / "a.txt")])
    assert paths_of(found, tmp_path) == ["d/b.txt", "d/link.txt"]  # a.txt, through its link
    assert [m.named for m in found.members] == [False, False]
    found = collection.collect([str(tmp_path / "a.txt"), str(tmp_path / "d")])
    assert paths_of(found, tmp_path) == ["a.txt", "d/b.txt"]
    assert [m.named for m in found.members] == [True, False]


def test_glob_selects_names_in_folders_but_never_files_named_directly(tmp_path):
    for rel in ["src/a.py", "src/pkg/b.py", "src/c.md", "src/pkg/d.txt", "notes.txt"]:
        write(tmp_path / rel, rel + "\n")
    found = collection.collect([str(tmp_path / "notes.txt"), str(tmp_path / "src")],
                               globs=["*.py", "*.md"])
    assert paths_of(found, tmp_path) == ["notes.txt", "src/a.py", "src/c.md", "src/pkg/b.py"]


def test_links_to_folders_are_not_followed_so_loops_end(tmp_path):
    write(tmp_path / "d/sub/a.txt", "a\n")
    (tmp_path / "d/sub/loop").symlink_to(tmp_path / "d")
    (tmp_path / "d/outside").symlink_to(tmp_path / "elsewhere")
    write(tmp_path / "elsewhere/b.txt", "b\n")
    (tmp_path / "d/broken.txt").symlink_to(tmp_path / "nothing")
    found = collection.collect([str(tmp_path / "d")])
    assert paths_of(found, tmp_path) == ["d/sub/a.txt"]
    assert [(Path(p).name, why.split(" ")[0]) for _, p, why in found.skipped] == [
        ("broken.txt", "unreadable")]


@pytest.mark.parametrize("paths, globs, message", [
    (["missing"], [], "no such file or folder: 'missing'"),
    (["empty"], [], "no text files in empty"),
    (["d"], ["*.rs"], "no text files matching '*.rs' in d"),
])
def test_nothing_to_collect_is_a_usage_error(tmp_path, monkeypatch, paths, globs, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    write(tmp_path / "d/a.txt", "a\n")
    with pytest.raises(UsageError, match=re.escape(message)):
        collection.collect(paths, globs)


# -------------------------------------------------------- the joined text and the split


def test_held_out_characters_are_exact_and_proportional():
    rng = random.Random(3)
    for _ in range(300):
        lengths = [rng.choice([1, 2, 5, 40, 1000, rng.randrange(1, 5000)])
                   for _ in range(rng.randrange(1, 40))]
        val_frac = rng.choice([0.0, 0.01, 0.1, 0.25, 0.5])
        total = sum(lengths) + len(lengths)
        try:
            shares = collection_encoding.held_out(lengths, val_frac)
        except UsageError:
            assert total - split_point(total, val_frac) > sum(lengths)
            continue
        assert sum(shares) == total - split_point(total, val_frac)
        held = sum(shares)
        for n, share in zip(lengths, shares):
            assert 0 <= share <= n
            # within one character of its proportion, unless it is all of the file
            assert abs(share - held * (n + 1) / total) < 1 or share == n


def collection_of(tmp_path: Path, texts: dict[str, str]) -> Path:
    for rel, text in texts.items():
        write(tmp_path / "c" / rel, text)
    return tmp_path / "c"


TEXTS = {"a.txt": "alpha " * 50 + "\n", "b/b.txt": "bravo é " * 90 + "\n",
         "b/c.txt": "charlie 世界 " * 30, "d.txt": "delta 😀\n" * 70}


@pytest.mark.parametrize("val_frac", [0.0, 0.1, 0.3])
def test_every_file_gives_its_last_part_to_the_validation_split(tmp_path, val_frac):
    folder = collection_of(tmp_path, TEXTS)
    c = corpus.encode([str(folder)], tmp_path / "corpora", val_frac=val_frac)
    text = decoded(c)
    order = sorted(TEXTS, key=lambda k: k.split("/"))  # sorted path order
    texts = [TEXTS[k] for k in order]
    assert len(text) == sum(len(t) + 1 for t in texts)
    held = collection_encoding.held_out([len(t) for t in texts], val_frac)
    cut = split_point(len(text), val_frac)  # what training and evaluation hold out
    assert text[:cut] == "".join(SEP + t[:len(t) - n] for t, n in zip(texts, held))
    tails = [t[len(t) - n:] for t, n in zip(texts, held)]
    shuffled = collection_encoding._tail_order([str(folder / k) for k in order])
    assert text[cut:] == "".join(tails[i] for i in shuffled)
    for t, tail in zip(texts, tails):  # the last val_frac of every file, to a character
        assert abs(len(tail) - val_frac * len(t)) <= 2, (len(tail), len(t))


def test_sha256_is_of_the_joined_text_in_file_order_whatever_the_split(tmp_path):
    folder = collection_of(tmp_path, TEXTS)
    joined = "".join(SEP + TEXTS[k] for k in sorted(TEXTS, key=lambda k: k.split("/")))
    expected = hashlib.sha256(joined.encode("utf-8")).hexdigest()
    shas = {corpus.encode([str(folder)], tmp_path / "corpora", val_frac=f).sha256
            for f in (0.0, 0.1, 0.2)}
    assert shas == {expected}


def test_one_file_in_a_list_is_the_file_exactly_as_before(tmp_path):
    path = write(tmp_path / "one.txt", TINY_TEXT)
    alone = corpus.encode(str(path), tmp_path / "corpora", val_frac=0.1)
    listed = corpus.encode([str(path)], tmp_path / "corpora", val_frac=0.1)
    assert listed.source == str(path) and listed.collection is None
    assert np.array_equal(np.asarray(alone.tokens), np.asarray(listed.tokens))
    assert alone.sha256 == listed.sha256 == hashlib.sha256(TINY_TEXT.encode()).hexdigest()
    assert len(list((tmp_path / "corpora/cache").glob("*.tokens"))) == 1


def test_a_collection_from_many_chunks_equals_one_from_one(tmp_path, monkeypatch):
    """Small files are decoded whole, large ones in chunks: the same tokens either way."""
    folder = collection_of(tmp_path, {**TEXTS, "big.txt": "grand é 世 😀 " * 1000})
    whole = corpus.encode([str(folder)], tmp_path / "one", val_frac=0.1)
    monkeypatch.setattr(collection_encoding, "SMALL_FILE", 0)
    monkeypatch.setattr(collection_encoding, "CHUNK_BYTES", 61)  # cuts through characters
    monkeypatch.setattr("charlstm.data.encoding.CHUNK_BYTES", 61)
    pieces = corpus.encode([str(folder)], tmp_path / "many", val_frac=0.1)
    assert np.array_equal(np.asarray(whole.tokens), np.asarray(pieces.tokens))
    assert whole.sha256 == pieces.sha256


# ------------------------------------------------------------------------- the cache


def test_an_unchanged_collection_is_reused_without_reading_a_file(tmp_path, monkeypatch):
    folder = collection_of(tmp_path, TEXTS)
    first = corpus.encode([str(folder)], tmp_path / "corpora", val_frac=0.1)

    def no_reading(*args, **kwargs):
        raise AssertionError("an unchanged collection was read again")

    monkeypatch.setattr(collection_encoding, "_first_pass", no_reading)
    monkeypatch.setattr(collection_encoding, "_second_pass", no_reading)
    again = corpus.encode([str(folder)], tmp_path / "corpora", val_frac=0.1)
    assert np.array_equal(np.asarray(first.tokens), np.asarray(again.tokens))
    assert again.sha256 == first.sha256 and again.collection == first.collection


@pytest.mark.parametrize("change", ["edit", "add", "remove"])
def test_a_changed_added_or_removed_file_re_encodes(tmp_path, change):
    folder = collection_of(tmp_path, TEXTS)
    first = corpus.encode([str(folder)], tmp_path / "corpora", val_frac=0.1)
    if change == "edit":  # same size: only the modification time tells
        path = folder / "a.txt"
        path.write_text("ALPHA " * 50 + "\n")
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    elif change == "add":
        write(folder / "b/new.txt", "a new file\n")
    else:
        (folder / "d.txt").unlink()
    second = corpus.encode([str(folder)], tmp_path / "corpora", val_frac=0.1)
    assert second.sha256 != first.sha256
    assert decoded(second) != decoded(first)
    assert second.collection["files"] == first.collection["files"] + {
        "edit": 0, "add": 1, "remove": -1}[change]


# --------------------------------------------------------------------- hostile files


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """A folder like a real system's: text, binaries, links, loops, a FIFO, bad bytes."""
    d = tmp_path / "mixed"
    write(d / "readme.txt", "plain text\n" * 20)
    write(d / "src/code.py", "print('hello')\n" * 20)
    write(d / "bin/tool", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    write(d / "zeros.bin", b"abc\x00def\n")  # valid UTF-8, but a NUL: binary
    write(d / "latin1.txt", "caf\xe9 cr\xe8me\n".encode("latin-1"))
    write(d / "cut.txt", "ends mid-character ".encode() + "é".encode()[:1])
    write(d / "empty.txt", b"")
    os.mkfifo(d / "pipe")
    (d / "src/loop").symlink_to(d)
    (d / "readme-link.txt").symlink_to(d / "readme.txt")
    (d / "dangling").symlink_to(d / "gone")
    write(d / ".git/objects/x", b"\x00\x01binary")
    write(Path(os.fsdecode(bytes(d / "src") + b"/na\xefve.txt")), "a name not in UTF-8\n")
    return d


def test_a_mixed_folder_keeps_the_text_and_names_what_it_skipped(mixed_folder, tmp_path):
    result = run_cli("corpus", "prepare", "mixed", cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    err = result.stderr.decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "skipped 6 file(s)" in lines[0], err
    for name in ("mixed/bin/tool", "mixed/cut.txt", "mixed/dangling"):  # the first three
        assert name in lines[0]
    assert "and 3 more" in lines[0]
    assert result.stdout.decode().startswith("mixed (3 files): ")


def test_a_bad_file_named_directly_is_the_usual_error(mixed_folder, tmp_path):
    result = run_cli("corpus", "prepare", "mixed/src", "mixed/latin1.txt", cwd=tmp_path)
    assert result.returncode == 1
    line = one_line_error(result.stderr.decode())
    assert "mixed/latin1.txt is not valid UTF-8" in line and "byte offset 3" in line
    result = run_cli("corpus", "prepare", "mixed/src", "mixed/pipe", cwd=tmp_path,
                     timeout=30)  # a FIFO named directly: refused, not read (no hang)
    assert result.returncode == 2
    assert "not a regular file" in one_line_error(result.stderr.decode())


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_in_a_folder_is_skipped_but_named_it_is_an_error(tmp_path):
    write(tmp_path / "d/ok.txt", "fine\n")
    locked = write(tmp_path / "d/locked.txt", "secret\n")
    locked.chmod(0)
    c = corpus.encode([str(tmp_path / "d")], tmp_path / "corpora")
    assert c.collection == {"files": 1, "skipped": 1, "globs": []}
    with pytest.raises(CorpusError, match="cannot read corpus .*locked.txt"):
        corpus.encode([str(tmp_path / "d"), str(locked)], tmp_path / "corpora2")


@pytest.mark.parametrize("args, code, names", [
    (["d", "-"], 2, "'-' (standard input) cannot be combined"),
    (["d", "pydocs"], 2, "known corpus 'pydocs' cannot be combined"),
    (["d", "nowhere.txt"], 2, "no such file or folder: 'nowhere.txt'"),
    (["d", "--glob", "*.rs"], 2, "no text files matching '*.rs' in d"),
    (["bin"], 2, "none of the 1 files found is UTF-8 text"),
    (["d/a.txt", "--glob", "*.txt"], 2, "--glob chooses among the files found in folders"),
    (["-", "--glob", "*.txt"], 2, "--glob chooses among the files found in folders"),
    (["d", "--val-frac", "0.99"], 2, "holds out more than the text"),
])
def test_bad_collections_are_one_line_errors(tmp_path, args, code, names):
    write(tmp_path / "d/a.txt", "a\n" * 5)
    write(tmp_path / "d/b.txt", "bb\n")
    write(tmp_path / "bin/x.dat", b"\x00" * 10)
    result = run_cli("corpus", "prepare", *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert names in one_line_error(result.stderr.decode().splitlines()[-1])
    assert result.stdout == b""


# ------------------------------------------------------------------ training, resume


def test_training_on_a_folder_and_resuming_checks_the_collection(tmp_path):
    folder = collection_of(tmp_path, {f"part{i}.txt": TINY_TEXT[i * 900:(i + 1) * 1500]
                                      for i in range(6)})
    settings = {**TINY_SETTINGS, "max_steps": 20, "eval_every": 10}
    kwargs = dict(corpora_dir=tmp_path / "corpora", checkpoints_dir=tmp_path / "ck")
    first = charlstm.train([str(folder)], out=tmp_path / "run", **settings, **kwargs)
    saved = charlstm.load(first.run_dir).checkpoint.corpus
    assert saved["source"] == [str(folder)] and saved["files"] == 6
    resumed = charlstm.train(None, out=tmp_path / "run", resume=True,
                             **{**settings, "max_steps": 30}, **kwargs)
    assert resumed.step == 30  # the saved sources, re-read, are the same collection
    write(folder / "part9.txt", "one more file\n")
    with pytest.raises(UsageError, match="not the text this run was trained on"):
        charlstm.train([str(folder)], out=tmp_path / "run", resume=True,
                       **{**settings, "max_steps": 40}, **kwargs)


def test_train_command_line_takes_several_paths_and_globs(tmp_path, monkeypatch):
    isolate_cli(tmp_path, monkeypatch)
    write(tmp_path / "notes/a.md", TINY_TEXT[:3000])
    write(tmp_path / "notes/skip.txt", "not chosen by the glob\n")
    write(tmp_path / "src/b.py", TINY_TEXT[3000:])
    flags = ["--num-layers", "1", "--hidden-size", "16", "--embed-size", "8",
             "--batch-size", "4", "--seq-len", "8", "--max-steps", "4", "--eval-every", "4",
             "--precision", "fp32", "--device", "cpu", "-q"]
    result = invoke("train", "notes", "src/b.py", "--glob", "*.md", *flags, "--out", "run")
    assert result.exit_code == 0, result.stderr
    info = invoke("info", "run").stdout
    assert "notes src/b.py --glob '*.md' (2 files)" in info


# ------------------------------------------------------------------------ memory


# `charlstm ARGS` reporting its own peak resident memory (VmHWM, which starts afresh at
# exec), on its last line of stderr: wait4's figure would include pytest's own peak
WITH_PEAK = """
import atexit, sys
from charlstm.cli import main
def report():
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print("peak kB", peak, file=sys.stderr)
atexit.register(report)
sys.argv = ["charlstm", *sys.argv[1:]]
main()
"""


def peak_memory(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, int]:
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc/self/status on this system")
    env = {**os.environ, "CHARLSTM_CORPORA": str(cwd / "corpora")}
    result = subprocess.run([sys.executable, "-c", WITH_PEAK, *args], cwd=cwd, env=env,
                            capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("peak kB "), result.stderr
    return result, int(last.split()[-1]) * 1024


def test_many_small_files_and_a_few_large_ones_stay_in_bounded_memory(tmp_path):
    """Peak memory of `corpus prepare`: 2,000 tiny files, and 3 files of 8 MB, against
    one small file. What grows with the collection is a few numbers per file."""
    write(tmp_path / "small/one.txt", TINY_TEXT)
    for i in range(2000):
        write(tmp_path / f"many/{i // 100:02d}/f{i:04d}.txt",
              f"file {i}: {TINY_TEXT[:i % 90]}\n")
    block = ("".join(chr(97 + i % 26) for i in range(999)) + "\n").encode() * 8_000
    for i in range(3):
        write(tmp_path / f"large/part{i}.txt", block)
    peaks = {}
    for name in ("small", "many", "large"):
        result, peaks[name] = peak_memory("corpus", "prepare", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"{name} (".encode() in result.stdout
    assert peaks["many"] - peaks["small"] < 16e6, peaks
    assert peaks["large"] - peaks["small"] < 16e6, peaks  # the text is 24 MB
