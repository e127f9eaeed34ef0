"""The index of a model's training text that finds copies of it: built once, cached.

A run's checkpoint records its corpus (`Corpus.describe()`: the file, known name or
paths, their SHA-256). `open_index` finds that text on disk, reads it in file order (a
folder corpus as training joined it: a newline before each file, so its SHA-256 is the
recorded one), and writes into the corpus cache folder (`corpora/cache/`, beside the
token cache) three files:

    NAME-SHA.copies.ids    the text's token ids (uint8/16/32, its own alphabet)
    NAME-SHA.copies.sa     their suffix array (int32; see suffix_array)
    NAME-FP.copies.json    what they hold: the SHA-256, the alphabet, the files and where
                           each starts, digests of the two data files; FP is a
                           fingerprint of the corpus files (path, size, modification
                           time), so a changed corpus gets a new index

An index is used only when its files have the sizes and digests its record says: a
corrupt one is rebuilt, never trusted. A corpus no longer on disk is still checked
against an index cached earlier for the same text (found by its SHA-256); without one,
the error names the missing file. Memory: the build holds the ids and the suffix array
(5 bytes per character with pydivsufsort) plus one file's text at a time.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from . import suffix_array
from ..errors import CorpusError
from .files import atomic_writer, file_sha256, write_atomically

log = logging.getLogger(__name__)

INDEX_FORMAT = 1
SEPARATOR = "\n"  # before each file of a folder corpus (folder_encoding.SEPARATOR)
READ_BYTES = 1 << 23  # a large file is decoded this much at a time


@dataclass
class CopyIndex:
    """A training text as token ids and their suffix array, with where its files start."""

    tokens: np.ndarray  # (N,) ids into `chars`
    suffixes: np.ndarray  # (N,) the suffix array
    chars: str  # the alphabet, in code point order
    files: list[tuple[str, int]]  # (path, where its text starts), in order
    sha256: str  # of the text the index holds

    def ids(self, text: str) -> np.ndarray:
        """The text as ids of this alphabet (int64), UNKNOWN for characters it lacks."""
        code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        alphabet = np.frombuffer(self.chars.encode("utf-32-le"), np.uint32)
        found = np.minimum(np.searchsorted(alphabet, code_points), len(alphabet) - 1)
        return np.where(alphabet[found] == code_points, found, suffix_array.UNKNOWN)

    def place(self, position: int) -> dict:
        """Where a position of the text is: the file, and the line and column in it."""
        starts = [start for _, start in self.files]
        which = max(0, int(np.searchsorted(starts, position, side="right")) - 1)
        path, start = self.files[which]
        before = self.tokens[start:position]
        newline = self.chars.find("\n")
        breaks = np.flatnonzero(before == newline) if newline >= 0 else np.zeros(0, int)
        line_start = start + (int(breaks[-1]) + 1 if breaks.size else 0)
        return {"file": path, "line": int(breaks.size) + 1,
                "column": position - line_start + 1}


def open_index(corpus: dict | None, corpora_dir: Path) -> CopyIndex:
    """The copy index of the text a checkpoint's `corpus` record names, from the cache
    in `corpora_dir/cache` when a sound one is there, else built now and cached."""
    if not corpus or not corpus.get("sha256"):
        raise CorpusError("this checkpoint does not record its corpus, so its copies "
                          "cannot be looked for")
    cache = Path(corpora_dir) / "cache"
    try:
        members, named = _members(corpus, Path(corpora_dir))
    except _Missing as missing:
        cached = _cached_by_text(cache, corpus["sha256"])
        if cached is None:
            raise CorpusError(f"the model's corpus {missing} is not on disk, and no copy "
                              f"index of it is cached in {cache}") from None
        return cached
    name = str(corpus.get("name") or "corpus")
    meta_path = cache / f"{name}-{_fingerprint(members)}.copies.json"
    cached = _load(meta_path)
    if cached is None:
        cached = _build(members, named, corpus, meta_path)
    if cached.sha256 != corpus["sha256"]:
        log.warning("the corpus has changed since the model was trained; copies are "
                    "looked for in its text as it is now")
    return cached


class _Missing(Exception):
    """A corpus file that is not on disk (its message: the path)."""


def _members(corpus: dict, corpora_dir: Path) -> tuple[list[str], bool]:
    """The corpus's files in order, and whether they are a folder corpus (joined)."""
    from .corpus import BUILT_IN, registry
    from .folders import collect

    source = corpus.get("source")
    if source == "-":
        raise _Missing("(standard input)")
    if isinstance(source, str):
        path = Path(source).expanduser()
        if not path.exists() and source in BUILT_IN:
            path = BUILT_IN[source].build(corpora_dir)  # made again, the same text
        elif not path.exists() and source in registry():
            path = corpora_dir / f"{source}.txt"
        if not path.is_file():
            raise _Missing(str(path))
        return [str(path)], False
    for path in source or []:
        if not Path(path).expanduser().exists():
            raise _Missing(str(path))
    files = collect(list(source or []), corpus.get("globs") or [])
    return [m.path for m in files.members if m.named or _is_text(m.path)], True


def _is_text(path: str) -> bool:
    """Whether a file found in a folder is taken as training takes it: UTF-8, no NUL."""
    try:
        data = Path(path).read_bytes()
        data.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return b"\0" not in data


def _fingerprint(members: list[str]) -> str:
    digest = hashlib.sha256(f"{INDEX_FORMAT}".encode())
    for path in members:
        info = os.stat(path)
        digest.update(f"|{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _code_points(path: str) -> Iterator[np.ndarray]:
    """A file's code points, a piece at a time (invalid UTF-8 as U+FFFD, as --lossy)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    with open(path, "rb") as f:
        while True:
            data = f.read(READ_BYTES)
            text = decoder.decode(data, final=not data)
            yield np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
            if not data:
                return


def _pieces(members: list[str], named: bool, digest=None) -> Iterator[np.ndarray]:
    """The text's code points in order (the separator before each file of a folder)."""
    separator = np.array([ord(SEPARATOR)], np.uint32)
    for path in members:
        if named:
            yield separator
        if digest is not None:
            if named:
                digest.update(SEPARATOR.encode())
            with open(path, "rb") as f:
                while data := f.read(READ_BYTES):
                    digest.update(data)
        yield from _code_points(path)


def _build(members: list[str], named: bool, corpus: dict, meta_path: Path) -> CopyIndex:
    """Read the text twice (its alphabet, then its ids), sort its suffixes, cache all."""
    log.info("building the copy index of %s", corpus.get("name"))
    digest = hashlib.sha256()
    seen: set[int] = set()
    try:
        for piece in _pieces(members, named, digest):
            seen.update(np.unique(piece).tolist())
        alphabet = np.array(sorted(seen), dtype=np.uint32)
        sha256 = digest.hexdigest()
        base = meta_path.with_name(f"{str(corpus.get('name') or 'corpus')}-{sha256[:16]}")
        dtype = np.uint8 if len(alphabet) <= 256 else (
            np.uint16 if len(alphabet) <= 1 << 16 else np.uint32)
        ids_path, sa_path = Path(f"{base}.copies.ids"), Path(f"{base}.copies.sa")
        files, written = [], 0
        with atomic_writer(ids_path) as out:
            for path in members:
                if named:
                    out.write(np.searchsorted(alphabet, [ord(SEPARATOR)]).astype(dtype))
                    written += 1
                files.append((path, written))
                for piece in _code_points(path):
                    out.write(np.searchsorted(alphabet, piece).astype(dtype).tobytes())
                    written += len(piece)
        tokens = np.fromfile(ids_path, dtype=dtype)
        suffixes = suffix_array.build(tokens)
        with atomic_writer(sa_path) as out:
            out.write(suffixes.tobytes())
        chars = "".join(map(chr, alphabet.tolist()))
        meta = {"format": INDEX_FORMAT, "sha256": sha256, "characters": written,
                "chars": chars, "dtype": np.dtype(dtype).name,
                "sa_dtype": suffixes.dtype.name, "files": files,
                "ids_file": ids_path.name, "sa_file": sa_path.name,
                "ids_digest": file_sha256(ids_path), "sa_digest": file_sha256(sa_path)}
        write_atomically(meta_path, json.dumps(meta).encode("utf-8"))
    except OSError as exc:
        raise CorpusError(f"cannot build the copy index in {meta_path.parent}: "
                          f"{exc.strerror or exc}") from exc
    return CopyIndex(tokens, suffixes, chars, files, sha256)


def _load(meta_path: Path) -> CopyIndex | None:
    """The index a record describes, if its files are all there and sound; else None."""
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        if meta.get("format") != INDEX_FORMAT:
            return None
        ids_path = meta_path.with_name(meta["ids_file"])
        sa_path = meta_path.with_name(meta["sa_file"])
        dtype, sa_dtype = np.dtype(meta["dtype"]), np.dtype(meta["sa_dtype"])
        n = meta["characters"]
        if (ids_path.stat().st_size != n * dtype.itemsize
                or sa_path.stat().st_size != n * sa_dtype.itemsize
                or file_sha256(ids_path) != meta["ids_digest"]
                or file_sha256(sa_path) != meta["sa_digest"]):
            log.warning("the copy index %s is damaged; building it again", meta_path.name)
            return None
        tokens = np.memmap(ids_path, dtype=dtype, mode="r", shape=(n,)) if n else \
            np.zeros(0, dtype)
        suffixes = np.memmap(sa_path, dtype=sa_dtype, mode="r", shape=(n,)) if n else \
            np.zeros(0, sa_dtype)
        return CopyIndex(tokens, suffixes, meta["chars"],
                         [(path, int(start)) for path, start in meta["files"]],
                         meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cached_by_text(cache: Path, sha256: str) -> CopyIndex | None:
    """A sound cached index of the text with this SHA-256, whatever files it came from."""
    for meta_path in sorted(cache.glob("*.copies.json")) if cache.is_dir() else []:
        try:
            if json.loads(meta_path.read_text("utf-8")).get("sha256") != sha256:
                continue
        except (OSError, ValueError):
            continue
        found = _load(meta_path)
        if found is not None:
            return found
    return None
