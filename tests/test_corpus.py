"""Tests for charlstm.corpus: finding, encoding, caching and downloading corpora."""

from __future__ import annotations

import hashlib
import io
import os
import re
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
    assert isinstance(second.tokens, np.memmap)
    assert np.array_equal(np.asarray(first.tokens), np.asarray(second.tokens))
    assert second.vocab == first.vocab
    assert second.sha256 == first.sha256
    assert list((corpora_dir / "cache").glob("*.tokens")) == token_files
    assert token_files[0].stat().st_mtime_ns == mtime


def test_changed_file_is_encoded_again(tmp_path):
    path = tmp_path / "text.txt"
    corpora_dir = tmp_path / "corpora"
    path.write_text("first version of the text", encoding="utf-8")
    first = corpus.encode(str(path), corpora_dir)
    stat = path.stat()
    path.write_text("zweite Fassung, ganz anders!", encoding="utf-8")
    # make sure the modification time differs even on coarse-grained file systems
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    second = corpus.encode(str(path), corpora_dir)
    assert decoded(second) == "zweite Fassung, ganz anders!"
    assert second.sha256 != first.sha256


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


# ------------------------------------------------------------------- invalid UTF-8


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
