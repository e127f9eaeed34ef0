"""Tests for charlstm.data.corpus: finding, building and downloading corpora, and the corpus
commands. Encoding and its cache are tested in test_encoding.py."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import charlstm.data.corpus as corpus
from charlstm.errors import CorpusError, UsageError
from charlstm.data.files import file_sha256

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"

# a text with 1-, 2-, 3- and 4-byte UTF-8 characters
MIXED = "héllo wörld 世界! 😀 naïve café — ∑x² ok\nsecond line: 日本語テキスト 🎉\n" * 3


# ------------------------------------------------------------------- the commands

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
    assert file_sha256(target) == corpus.registry()["tinyshakespeare"]["sha256"]


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
