"""Tests for charlstm.corpus: finding, encoding, caching and downloading corpora."""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import charlstm.corpus as corpus
from charlstm.errors import CorpusError, UsageError

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"

# 1-, 2-, 3- and 4-byte UTF-8 characters mixed, so small chunks cut through characters
MIXED = "héllo wörld 世界! 😀 naïve café — ∑x² ok\nsecond line: 日本語テキスト 🎉\n" * 3


def decoded(c: corpus.Corpus) -> str:
    return c.vocab.decode(np.asarray(c.tokens).tolist())


def offset_in(message: str) -> int:
    match = re.search(r"byte offset (\d+)", message)
    assert match, message
    return int(match.group(1))


# --------------------------------------------------------------------------- encoding


def test_encode_file_round_trip(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(MIXED.encode("utf-8"))
    c = corpus.encode(str(path), tmp_path / "corpora")
    assert decoded(c) == MIXED
    assert len(c.tokens) == len(MIXED)
    assert c.tokens.dtype == c.vocab.dtype == np.uint8
    assert c.sha256 == hashlib.sha256(MIXED.encode("utf-8")).hexdigest()
    assert c.name == "mixed"
    assert c.describe()["characters"] == len(MIXED)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7])
def test_encode_across_small_chunks(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    path = tmp_path / "mixed.txt"
    path.write_bytes(MIXED.encode("utf-8"))
    c = corpus.encode(str(path), tmp_path / "corpora")
    assert decoded(c) == MIXED
    assert c.sha256 == hashlib.sha256(MIXED.encode("utf-8")).hexdigest()


def test_encode_large_vocabulary_uses_uint16(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(300)) * 2
    path = tmp_path / "han.txt"
    path.write_text(text, encoding="utf-8")
    c = corpus.encode(str(path), tmp_path / "corpora")
    assert c.tokens.dtype == np.uint16
    assert decoded(c) == text


def test_second_encode_reuses_cache(tmp_path, monkeypatch):
    path = tmp_path / "mixed.txt"
    path.write_bytes(MIXED.encode("utf-8"))
    corpora_dir = tmp_path / "corpora"
    first = corpus.encode(str(path), corpora_dir)
    token_files = list((corpora_dir / "cache").glob("*.tokens"))
    assert len(token_files) == 1
    mtime = token_files[0].stat().st_mtime_ns

    def no_encoding(*args, **kwargs):
        raise AssertionError("the cached corpus was encoded again")

    monkeypatch.setattr(corpus, "_encoded_chunks", no_encoding)
    monkeypatch.setattr(corpus, "_vocabulary", no_encoding)
    second = corpus.encode(str(path), corpora_dir)
    assert isinstance(second.tokens.base.obj, mmap.mmap)  # mapped, not read into memory
    assert np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    assert second.vocab == first.vocab
    assert second.sha256 == first.sha256
    assert list((corpora_dir / "cache").glob("*.tokens")) == token_files
    assert token_files[0].stat().st_mtime_ns == mtime


@pytest.mark.parametrize("before, after", [
    ("first version of the text", "zweite Fassung, ganz anders!"),
    ("abcdef", "fedcba"),  # the same size: only the modification time tells
])
def test_changed_file_is_encoded_again(tmp_path, before, after):
    path = tmp_path / "text.txt"
    corpora_dir = tmp_path / "corpora"
    path.write_text(before, encoding="utf-8")
    first = corpus.encode(str(path), corpora_dir)
    stat = path.stat()
    path.write_text(after, encoding="utf-8")
    # make sure the modification time differs even on coarse-grained file systems
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = corpus.encode(str(path), corpora_dir)
    assert decoded(second) == after
    assert second.sha256 != first.sha256


def test_unchanged_file_is_not_read_again(tmp_path, monkeypatch):
    """A cache hit opens the cached tokens and their description, never the corpus."""
    path = tmp_path / "text.txt"
    path.write_bytes(MIXED.encode("utf-8"))
    first = corpus.encode(str(path), tmp_path / "corpora")
    real_open = open

    def guarded_open(file, *args, **kwargs):
        assert Path(file).resolve() != path.resolve(), "the corpus was read again"
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: guarded_open(self, *a, **k))
    second = corpus.encode(str(path), tmp_path / "corpora")
    assert np.array_equal(np.asarray(second.tokens), np.asarray(first.tokens))
    assert second.sha256 == first.sha256


def test_stdin(tmp_path):
    data = MIXED.encode("utf-8")
    c = corpus.encode("-", tmp_path / "corpora", stdin=io.BytesIO(data))
    assert decoded(c) == MIXED
    assert c.source == "-"
    assert c.sha256 == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "corpora" / "cache").exists()  # nothing cached for stdin


def test_empty_stdin_is_usage_error(tmp_path):
    with pytest.raises(UsageError):
        corpus.encode("-", tmp_path / "corpora", stdin=io.BytesIO(b""))


def reference(text: str) -> tuple[str, list[int], list[int]]:
    """What encoding `text` must give, the slow and obvious way: (characters in code point
    order, their counts, the token ids)."""
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    return chars, [text.count(c) for c in chars], [index[c] for c in text]


# long ASCII stretches (pieces that are pure ASCII) around mixed text (pieces that are not)
ASCII_AND_MIXED = "plain ascii text, line after line\n" * 9 + MIXED + "more ascii\n" * 7 + "😀é"


@pytest.fixture(params=["numpy", "python", "by share"])
def decoder(request, monkeypatch):
    """Which way mixed pieces are decoded: always with numpy from the bytes, always with
    Python's decoder, or as in use, by the share of multi-byte characters."""
    share = {"numpy": 1.0, "python": 0.0, "by share": corpus.MOSTLY_ASCII}[request.param]
    monkeypatch.setattr(corpus, "MOSTLY_ASCII", share)
    return request.param


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 5, 11, 64, 1 << 20])
def test_ascii_and_mixed_pieces_match_a_plain_reading(tmp_path, monkeypatch, chunk_bytes,
                                                      decoder):
    """Whatever the chunk size (pieces all ASCII, mixed, characters cut by reads) and the
    decoder, the vocabulary, counts and ids are those of decoding the whole text at once."""
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    path = tmp_path / "text.txt"
    path.write_bytes(ASCII_AND_MIXED.encode("utf-8"))
    c = corpus.encode(str(path), tmp_path / "corpora")
    chars, counts, ids = reference(ASCII_AND_MIXED)
    assert c.vocab.chars == chars
    assert list(c.vocab.counts) == counts
    assert np.asarray(c.tokens).tolist() == ids
    assert c.sha256 == hashlib.sha256(ASCII_AND_MIXED.encode("utf-8")).hexdigest()


@pytest.mark.parametrize("chunk_bytes", [1, 3, 1 << 20])
def test_pure_ascii_corpus(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    text = "".join(chr(i) for i in range(128)) * 3
    path = tmp_path / "ascii.txt"
    path.write_bytes(text.encode("ascii"))
    c = corpus.encode(str(path), tmp_path / "corpora")
    chars, counts, ids = reference(text)
    assert (c.vocab.chars, list(c.vocab.counts)) == (chars, counts)
    assert np.asarray(c.tokens).tolist() == ids


def test_code_points_at_the_edges_of_each_utf8_length(tmp_path, decoder):
    """The first and last code point of 1-, 2-, 3- and 4-byte UTF-8, and around the
    surrogates, decode to themselves."""
    edges = "\x00\x7f\x80\u07ff\u0800\ud7ff\ue000\uffff\U00010000\U0010ffff"
    text = (edges + "a") * 5
    path = tmp_path / "edges.txt"
    path.write_bytes(text.encode("utf-8"))
    c = corpus.encode(str(path), tmp_path / "corpora")
    assert decoded(c) == text
    assert c.vocab.chars == "".join(sorted(set(text)))


def test_large_vocabulary_with_ascii_pieces(tmp_path, monkeypatch, decoder):
    """More than 256 characters (uint16 ids) in a text whose pieces are partly ASCII."""
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 64)
    text = "ascii only here. " * 20 + "".join(chr(0x4E00 + i) for i in range(300)) + "end"
    path = tmp_path / "big-vocab.txt"
    path.write_bytes(text.encode("utf-8"))
    c = corpus.encode(str(path), tmp_path / "corpora")
    assert c.tokens.dtype == np.uint16
    assert np.asarray(c.tokens).tolist() == reference(text)[2]


def test_progress_reports_every_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 100)
    data = ASCII_AND_MIXED.encode("utf-8")
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    seen = []
    corpus.encode(str(path), tmp_path / "corpora",
                  progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 1
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (len(data), len(data))


# the command line run in a fresh interpreter, reporting whether torch got imported
WITHOUT_TORCH = """
import sys
from charlstm.cli import main
sys.argv = ["charlstm", *sys.argv[1:]]
try:
    main()
finally:
    print("torch imported" if "torch" in sys.modules else "no torch", file=sys.stderr)
"""


@pytest.mark.parametrize("command", [["corpus", "prepare", "text.txt"], ["corpus", "list"],
                                     ["--help"], ["--version"]])
def test_corpus_commands_do_not_import_torch(tmp_path, command):
    """Preparing a corpus (and asking for help or the version) starts in a fraction of a
    second and stays small: torch is imported only by the commands that use models."""
    env = {**os.environ, "CHARLSTM_CORPORA": str(tmp_path / "corpora")}
    (tmp_path / "text.txt").write_bytes(MIXED.encode("utf-8"))
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *command], cwd=tmp_path,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith("no torch"), result.stderr
    if command[:2] == ["corpus", "prepare"]:
        assert f"{len(MIXED):,} characters" in result.stdout


def test_corpus_prepare_prints_a_summary_also_from_the_cache(tmp_path):
    env = {**os.environ, "CHARLSTM_CORPORA": str(tmp_path / "corpora")}
    (tmp_path / "text.txt").write_bytes(MIXED.encode("utf-8"))
    outputs = [subprocess.run([sys.executable, "-m", "charlstm", "corpus", "prepare",
                               "text.txt"], cwd=tmp_path, capture_output=True, text=True,
                              env=env) for _ in range(2)]
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
    summary = outputs[0].stdout
    assert summary == outputs[1].stdout  # the second from the cache
    sha = hashlib.sha256(MIXED.encode("utf-8")).hexdigest()[:12]
    assert summary == (f"text.txt: {len(MIXED):,} characters, vocabulary {len(set(MIXED))} "
                       f"(uint8), sha256 {sha}\n")
    assert len(list((tmp_path / "corpora" / "cache").glob("*.tokens"))) == 1


# ------------------------------------------------------------------- invalid UTF-8

# sequences Python's decoder refuses: a bad first byte, overlong forms, a surrogate, a code
# point past U+10FFFF, missing or stray continuation bytes
NOT_UTF8 = [b"\xff", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf",
            b"\xed\xa0\x80", b"\xf0\x8f\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80",
            b"\x80", b"\xbf\xbf", b"\xe4\xb8a", b"\xf0\x9f\x98", b"\xc3"]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 5, 1 << 20])
@pytest.mark.parametrize("bad", NOT_UTF8)
def test_invalid_utf8_as_pythons_decoder_sees_it(tmp_path, monkeypatch, chunk_bytes, bad,
                                                 decoder):
    """The offset named is the one Python's decoder names for the whole text, and --lossy
    gives exactly its replacement characters."""
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    data = "ok é 世 ".encode("utf-8") + bad + " 😀 more".encode("utf-8") + bad
    with pytest.raises(UnicodeDecodeError) as expected:
        data.decode("utf-8")
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError) as info:
        corpus.encode(str(path), tmp_path / "corpora")
    assert offset_in(str(info.value)) == expected.value.start
    assert expected.value.reason in str(info.value)
    lossy = corpus.encode(str(path), tmp_path / "corpora", lossy=True)
    assert decoded(lossy) == data.decode("utf-8", "replace")
    assert np.asarray(lossy.tokens).tolist() == reference(data.decode("utf-8", "replace"))[2]




def test_invalid_utf8_names_byte_offset(tmp_path):
    prefix = "héllo 世界 ".encode("utf-8")
    path = tmp_path / "bad.txt"
    path.write_bytes(prefix + b"\xff" + b"rest")
    with pytest.raises(CorpusError) as info:
        corpus.encode(str(path), tmp_path / "corpora")
    assert offset_in(str(info.value)) == len(prefix)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7])
@pytest.mark.parametrize("bad", [b"\xff", b"\xe4\xb8a", b"\xc3", b"\x80"])
def test_invalid_utf8_offset_after_chunk_boundaries(tmp_path, monkeypatch, chunk_bytes, bad):
    """A bad sequence after several (small) chunks, multi-byte chars straddling them."""
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    prefix = ("ab世界é😀c" * 4).encode("utf-8")  # 48 bytes, characters cut by chunks
    assert len(prefix) > 3 * chunk_bytes
    path = tmp_path / "bad.txt"
    path.write_bytes(prefix + bad + "ok 世".encode("utf-8"))
    with pytest.raises(CorpusError) as info:
        corpus.encode(str(path), tmp_path / "corpora")
    assert offset_in(str(info.value)) == len(prefix)


@pytest.mark.parametrize("chunk_bytes", [3, 7, 8 << 20])
def test_truncated_char_at_end_offset(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    prefix = "ab世界é".encode("utf-8")
    path = tmp_path / "bad.txt"
    path.write_bytes(prefix + "界".encode("utf-8")[:2])
    with pytest.raises(CorpusError) as info:
        corpus.encode(str(path), tmp_path / "corpora")
    assert offset_in(str(info.value)) == len(prefix)


def test_invalid_utf8_on_stdin_names_offset(tmp_path):
    with pytest.raises(CorpusError) as info:
        corpus.encode("-", tmp_path / "corpora", stdin=io.BytesIO(b"abc\xfe"))
    assert offset_in(str(info.value)) == 3


def test_lossy_replaces_bad_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 3)
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ab\xffcd" + "é世".encode("utf-8") + b"\xfe")
    c = corpus.encode(str(path), tmp_path / "corpora", lossy=True)
    assert decoded(c) == "ab\ufffdcdé世\ufffd"
    # the strict reading of the same file still fails (lossy is part of the cache key)
    with pytest.raises(CorpusError):
        corpus.encode(str(path), tmp_path / "corpora")


# ------------------------------------------------------------------ finding corpora


def test_empty_file_is_usage_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        corpus.encode(str(path), tmp_path / "corpora")


def test_directory_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="directory"):
        corpus.encode(str(tmp_path), tmp_path / "corpora")


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(UsageError) as info:
        corpus.encode("no-such-corpus-xyz", tmp_path / "corpora")
    message = str(info.value)
    assert "no-such-corpus-xyz" in message
    for name in corpus.known_names():
        assert name in message
    assert "pystdlib" in message and "tinyshakespeare" in message


def test_registry_name_not_downloaded_is_usage_error(tmp_path):
    with pytest.raises(UsageError, match="corpus get tinyshakespeare"):
        corpus.encode("tinyshakespeare", tmp_path / "corpora")


def test_registry_entry_tinyshakespeare():
    entry = corpus.registry()["tinyshakespeare"]
    assert entry["url"].startswith("https://")
    assert entry["size"] == 1115394
    assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])


# ------------------------------------------------------------------------ download

FAKE_DATA = "a small corpus to download\nwith two lines é\n".encode("utf-8")


@pytest.fixture
def fake_registry(monkeypatch):
    entry = {"description": "a fake", "url": "https://example.invalid/fake.txt",
             "size": len(FAKE_DATA), "sha256": hashlib.sha256(FAKE_DATA).hexdigest()}
    monkeypatch.setattr(corpus, "registry", lambda: {"fake": entry})
    return entry


def test_download_from_local_path(tmp_path, fake_registry):
    source = tmp_path / "source.txt"
    source.write_bytes(FAKE_DATA)
    corpora_dir = tmp_path / "corpora"
    seen = []
    target = corpus.download("fake", corpora_dir, source=str(source),
                             progress=lambda done, total: seen.append((done, total)))
    assert target == corpora_dir / "fake.txt"
    assert target.read_bytes() == FAKE_DATA
    assert sorted(p.name for p in corpora_dir.iterdir()) == ["fake.txt"]
    assert seen and seen[-1][0] == len(FAKE_DATA)


def test_download_from_file_url(tmp_path, fake_registry):
    source = tmp_path / "source.txt"
    source.write_bytes(FAKE_DATA)
    corpora_dir = tmp_path / "corpora"
    target = corpus.download("fake", corpora_dir, source=source.resolve().as_uri())
    assert target.read_bytes() == FAKE_DATA
    assert sorted(p.name for p in corpora_dir.iterdir()) == ["fake.txt"]


def test_download_wrong_content_keeps_nothing(tmp_path, fake_registry):
    source = tmp_path / "source.txt"
    source.write_bytes(FAKE_DATA + b"tampered")
    corpora_dir = tmp_path / "corpora"
    with pytest.raises(CorpusError, match="checksum"):
        corpus.download("fake", corpora_dir, source=str(source))
    assert list(corpora_dir.iterdir()) == []


def test_download_unreachable_source_keeps_nothing(tmp_path, fake_registry):
    corpora_dir = tmp_path / "corpora"
    missing = (tmp_path / "missing.txt").resolve().as_uri()
    with pytest.raises(CorpusError):
        corpus.download("fake", corpora_dir, source=missing)
    assert list(corpora_dir.iterdir()) == []


def test_download_unknown_name(tmp_path, fake_registry):
    with pytest.raises(UsageError, match="fake"):
        corpus.download("nope", tmp_path / "corpora")


def test_download_skips_when_already_verified(tmp_path, fake_registry):
    corpora_dir = tmp_path / "corpora"
    corpora_dir.mkdir()
    (corpora_dir / "fake.txt").write_bytes(FAKE_DATA)
    # the source does not exist: it must not be needed
    target = corpus.download("fake", corpora_dir, source=str(tmp_path / "missing.txt"))
    assert target.read_bytes() == FAKE_DATA


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="shared tinyshakespeare copy absent")
def test_download_real_tinyshakespeare_from_local_copy(tmp_path):
    target = corpus.download("tinyshakespeare", tmp_path / "corpora", source=str(SHAKESPEARE))
    assert target.stat().st_size == 1115394
    assert corpus._sha256_of(target) == corpus.registry()["tinyshakespeare"]["sha256"]


# -------------------------------------------------------------------- default corpus


def test_build_default_corpus_is_deterministic_ascii(tmp_path):
    first = corpus.build_default_corpus(tmp_path / "a")
    second = corpus.build_default_corpus(tmp_path / "b")
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert data.isascii()
    assert 1_900_000 <= len(data) <= 2_500_000
    assert first.name == "pystdlib.txt"
    # built once: a second call returns the existing file untouched
    mtime = first.stat().st_mtime_ns
    assert corpus.build_default_corpus(tmp_path / "a") == first
    assert first.stat().st_mtime_ns == mtime


def test_pydocs_is_a_prose_corpus_built_offline(tmp_path):
    """The second built-in corpus: English prose, unlike the default's source code."""
    path = corpus.resolve("pydocs", tmp_path)
    assert path == tmp_path / "pydocs.txt"
    text = path.read_text("utf-8")
    assert len(text) > 200_000
    words = text.split()
    assert sum(w.isalpha() for w in words) / len(words) > 0.6  # mostly plain words
    assert text.count("def ") < len(text) / 2_000  # not code
    assert corpus.resolve("pydocs", tmp_path / "again").read_text("utf-8") == text
    mtime = path.stat().st_mtime_ns
    assert corpus.resolve("pydocs", tmp_path) == path and path.stat().st_mtime_ns == mtime
    encoded = corpus.encode("pydocs", tmp_path)
    assert encoded.name == "pydocs" and len(encoded.tokens) == len(text)


def test_importing_the_package_does_not_import_torch_until_its_api_is_used():
    code = ("import sys, charlstm; print('torch' in sys.modules); charlstm.load; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "True"]
