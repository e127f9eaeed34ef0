"""Tests for charlstm.data.encoding: a corpus encoded into tokens, cached, memory-mapped, and
invalid UTF-8 named by byte offset, through the public entry `corpus.encode`."""

from __future__ import annotations

import hashlib
import io
import mmap
import os
import re
from pathlib import Path

import numpy as np
import pytest

import charlstm.data.corpus as corpus
import charlstm.data.encoding as encoding
import charlstm.data.utf8 as utf8
from charlstm.errors import CorpusError, UsageError

# 1-, 2-, 3- and 4-byte UTF-8 characters mixed, so small chunks cut through characters
MIXED = "héllo wörld 世界! 😀 naïve café — ∑x² ok\nsecond line: 日本語テキスト 🎉\n" * 3


def decoded(c: corpus.Corpus) -> str:
    return c.vocab.decode(np.asarray(c.tokens).tolist())


def offset_in(message: str) -> int:
    match = re.search(r"byte offset (\d+)", message)
    assert match, message
    return int(match.group(1))


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
    monkeypatch.setattr(encoding, "CHUNK_BYTES", chunk_bytes)
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

    monkeypatch.setattr(encoding, "encoded_chunks", no_encoding)
    monkeypatch.setattr(encoding, "_vocabulary", no_encoding)
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
    share = {"numpy": 1.0, "python": 0.0, "by share": utf8.MOSTLY_ASCII}[request.param]
    monkeypatch.setattr(utf8, "MOSTLY_ASCII", share)
    return request.param


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 4, 5, 11, 64, 1 << 20])
def test_ascii_and_mixed_pieces_match_a_plain_reading(tmp_path, monkeypatch, chunk_bytes,
                                                      decoder):
    """Whatever the chunk size (pieces all ASCII, mixed, characters cut by reads) and the
    decoder, the vocabulary, counts and ids are those of decoding the whole text at once."""
    monkeypatch.setattr(encoding, "CHUNK_BYTES", chunk_bytes)
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
    monkeypatch.setattr(encoding, "CHUNK_BYTES", chunk_bytes)
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
    monkeypatch.setattr(encoding, "CHUNK_BYTES", 64)
    text = "ascii only here. " * 20 + "".join(chr(0x4E00 + i) for i in range(300)) + "end"
    path = tmp_path / "big-vocab.txt"
    path.write_bytes(text.encode("utf-8"))
    c = corpus.encode(str(path), tmp_path / "corpora")
    assert c.tokens.dtype == np.uint16
    assert np.asarray(c.tokens).tolist() == reference(text)[2]


def test_progress_reports_every_byte(tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "CHUNK_BYTES", 100)
    data = ASCII_AND_MIXED.encode("utf-8")
    path = tmp_path / "text.txt"
    path.write_bytes(data)
    seen = []
    corpus.encode(str(path), tmp_path / "corpora",
                  progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 1
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1] == (len(data), len(data))


# ---------------------------------------------------------- the memory map


def rss_file_kb() -> int:
    """Resident pages of memory-mapped files in this process (Linux), in kB."""
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status on this system")


def test_pages_read_from_a_mapped_corpus_can_be_handed_back(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(1000)) * 24_000  # 24 MB, ASCII
    (tmp_path / "big.txt").write_text(text, encoding="ascii")
    tokens = corpus.encode(str(tmp_path / "big.txt"), tmp_path / "corpora").tokens
    before = rss_file_kb()
    total = int(tokens.sum(dtype=np.int64))  # reads every page
    assert rss_file_kb() - before > 16_000
    encoding.release_pages(tokens)
    assert rss_file_kb() - before < 4_000
    assert int(tokens.sum(dtype=np.int64)) == total  # still readable, the same values


def test_release_pages_leaves_arrays_in_memory_alone():
    tokens = np.arange(100, dtype=np.uint8)
    encoding.release_pages(tokens)
    assert tokens[42] == 42


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
    monkeypatch.setattr(encoding, "CHUNK_BYTES", chunk_bytes)
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
    monkeypatch.setattr(encoding, "CHUNK_BYTES", chunk_bytes)
    prefix = ("ab世界é😀c" * 4).encode("utf-8")  # 48 bytes, characters cut by chunks
    assert len(prefix) > 3 * chunk_bytes
    path = tmp_path / "bad.txt"
    path.write_bytes(prefix + bad + "ok 世".encode("utf-8"))
    with pytest.raises(CorpusError) as info:
        corpus.encode(str(path), tmp_path / "corpora")
    assert offset_in(str(info.value)) == len(prefix)


@pytest.mark.parametrize("chunk_bytes", [3, 7, 8 << 20])
def test_truncated_char_at_end_offset(tmp_path, monkeypatch, chunk_bytes):
    monkeypatch.setattr(encoding, "CHUNK_BYTES", chunk_bytes)
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
    monkeypatch.setattr(encoding, "CHUNK_BYTES", 3)
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ab\xffcd" + "é世".encode("utf-8") + b"\xfe")
    c = corpus.encode(str(path), tmp_path / "corpora", lossy=True)
    assert decoded(c) == "ab\ufffdcdé世\ufffd"
    # the strict reading of the same file still fails (lossy is part of the cache key)
    with pytest.raises(CorpusError):
        corpus.encode(str(path), tmp_path / "corpora")


def test_invalid_utf8_message_asks_whether_it_is_text(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(b"ab\x00\xffcd")
    with pytest.raises(CorpusError) as info:
        corpus.encode(str(path), tmp_path / "corpora")
    assert str(info.value) == (f"{path} is not valid UTF-8: invalid start byte at byte "
                               "offset 3 (bytes ff 63 64); is it a text file? (--lossy "
                               "replaces invalid bytes)")
