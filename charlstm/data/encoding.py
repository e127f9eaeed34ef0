"""Encoding a text into a token array, once: the two passes, the cache and its memory map.

A UTF-8 text becomes its vocabulary and a compact integer array of token ids
(uint8/uint16/uint32 by vocabulary size) that training reads through a memory map. The
file is streamed in chunks twice (a histogram pass for the vocabulary, then an encoding
pass through a lookup table), never held as one Python string, and the result is cached
in a folder (`corpora/cache/`), keyed by the file's path, size and modification time.
How the chunks are cut and decoded is `utf8`'s business; which file to encode, `corpus`'s.
"""

from __future__ import annotations

import hashlib
import io
import json
import mmap
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, NamedTuple

import numpy as np

from . import utf8
from ..errors import CorpusError, UsageError
from .files import atomic_writer, write_atomically
from .vocab import MAX_CODE_POINT, Vocabulary

CHUNK_BYTES = 1 << 20  # per read: fits the CPU caches, and numpy's per-call costs vanish
CACHE_FORMAT = 1
NON_ASCII = 0xFF  # marks a multi-byte character in the second pass; never an ASCII id
# what invalid UTF-8 in a corpus suggests: perhaps not text at all
NOT_TEXT_ADVICE = f"is it a text file? ({utf8.LOSSY_ADVICE})"

# Progress callbacks receive (bytes done, bytes in all or None when unknown).
Progress = Callable[[int, "int | None"], None]


class EncodedText(NamedTuple):
    """A text as training reads it."""

    sha256: str  # of the UTF-8 bytes, to tell later whether a resume sees the same text
    vocab: Vocabulary
    tokens: np.ndarray  # (N,) token ids, usually a read-only memory map


def encode_file(path: Path, cache_dir: Path, lossy: bool = False,
                progress: Progress | None = None) -> EncodedText:
    """A text file encoded, from the cache in `cache_dir` when the file has not changed
    since it was cached (same path, size and modification time), else encoded now and
    cached there."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc.strerror}") from exc
    if not path.is_file():
        raise UsageError(f"corpus {path} is not a regular file")
    key_text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{lossy}|{CACHE_FORMAT}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    tokens_path = cache_dir / f"{path.stem}-{key}.tokens"
    meta_path = tokens_path.with_suffix(".json")
    cached = load_cached(meta_path, tokens_path)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as f:
            vocab, sha256, n_chars = _vocabulary(f, str(path), lossy, stat.st_size, progress)
            f.seek(0)
            with atomic_writer(tokens_path) as out:
                written = 0
                for ids in encoded_chunks(f, str(path), lossy, vocab):
                    out.write(ids)
                    written += len(ids)
                if written != n_chars:  # nothing is kept: the writer discards its file
                    raise CorpusError(f"corpus {path} changed while it was being encoded; "
                                      "try again")
    except OSError as exc:
        raise CorpusError(f"cannot read or cache corpus {path}: {exc}") from exc
    meta = {"format": CACHE_FORMAT, "source_path": str(path.resolve()), "sha256": sha256,
            "characters": n_chars, "dtype": vocab.dtype.name, "vocab": vocab.to_dict()}
    try:
        write_atomically(meta_path, json.dumps(meta).encode("utf-8"))
    except OSError as exc:
        raise CorpusError(f"cannot cache corpus {path}: {exc.strerror or exc}") from exc
    return EncodedText(sha256, vocab, memmap(tokens_path, vocab.dtype, n_chars))


def encode_bytes(data: bytes, label: str, lossy: bool = False) -> EncodedText:
    """A text given as bytes (standard input) encoded in memory; nothing is cached."""
    f = io.BytesIO(data)
    vocab, sha256, _ = _vocabulary(f, label, lossy, len(data), None)
    f.seek(0)
    tokens = np.concatenate(list(encoded_chunks(f, label, lossy, vocab)))
    return EncodedText(sha256, vocab, tokens)


def remap(tokens: np.ndarray, old: Vocabulary, new: Vocabulary,
          target: Path | None) -> np.ndarray:
    """Token ids of `old` as the ids of the same characters in `new`, which holds every
    character of `old` (a fine-tuning run's union vocabulary). Written to `target` piece
    by piece (memory stays bounded on a large corpus) and read back through a memory map,
    or made in memory when `target` is None; a complete `target` is used as it is."""
    table = np.array([new.encode(c)[0] for c in old.chars], dtype=new.dtype)
    if target is None:
        return table[tokens]
    length = len(tokens)
    try:
        if target.exists() and target.stat().st_size == length * new.dtype.itemsize:
            return memmap(target, new.dtype, length)
        step = CHUNK_BYTES
        with atomic_writer(target) as out:
            for start in range(0, length, step):
                out.write(table[tokens[start:start + step]])
        return memmap(target, new.dtype, length)
    except OSError as exc:
        raise CorpusError(f"cannot cache the corpus re-encoded for the run's vocabulary at "
                          f"{target}: {exc.strerror or exc}") from exc


def load_cached(meta_path: Path, tokens_path: Path) -> EncodedText | None:
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        vocab = Vocabulary.from_dict(meta["vocab"])
        expected = meta["characters"] * vocab.dtype.itemsize
        if tokens_path.stat().st_size != expected:
            return None
        return EncodedText(meta["sha256"], vocab,
                           memmap(tokens_path, vocab.dtype, meta["characters"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def memmap(path: Path, dtype: np.dtype, length: int) -> np.ndarray:
    """The token file as a read-only array over a memory map (the array's `base` is the
    mmap.mmap, so that training can let go of the pages it has read; see data)."""
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=dtype, count=length)


def release_pages(tokens: np.ndarray) -> None:
    """Let the operating system take back the pages of a memory-mapped token array that
    were read so far. They stay in the page cache (reading them again is cheap), but they
    leave this process's resident memory, which would otherwise grow towards the size of
    the corpus over an epoch. Does nothing for arrays in memory, or without madvise."""
    view = getattr(tokens, "base", None)  # np.frombuffer keeps a memoryview of the mmap
    mapped = getattr(view, "obj", None)
    if isinstance(mapped, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


# ---------------------------------------------------------------------- the two passes
# Both read the text in pieces of about CHUNK_BYTES that end on character boundaries.
# ASCII bytes are counted as bytes and turned into ids by one byte translation; only the
# few multi-byte characters are decoded, from where they start (see utf8).


def _vocabulary(f: BinaryIO, label: str, lossy: bool, total: int | None,
                progress: Progress | None) -> tuple[Vocabulary, str, int]:
    """First pass: the vocabulary (with counts), the sha256, and the length in characters."""
    counts = np.zeros(MAX_CODE_POINT, dtype=np.int64)
    digest = hashlib.sha256()
    # hashing takes a fifth of this pass; hashlib lets go of the GIL, so it runs in a
    # thread of its own, beside the counting, one chunk at a time and in order
    hasher = ThreadPoolExecutor(max_workers=1)
    hashed: Future | None = None
    done = 0

    def seen(chunk: bytes) -> None:
        nonlocal done, hashed
        if hashed is not None:
            hashed.result()
        hashed = hasher.submit(digest.update, chunk)
        done += len(chunk)
        if progress:
            progress(done, total)

    with hasher:
        n_chars = _count_characters(f, label, lossy, counts, seen)
    if hashed is not None:
        hashed.result()
    if n_chars == 0:
        raise UsageError(f"the corpus ({label}) is empty")
    return Vocabulary.from_counts(counts), digest.hexdigest(), n_chars


def _count_characters(f: BinaryIO, label: str, lossy: bool, counts: np.ndarray,
                      on_bytes: Callable[[bytes], None]) -> int:
    """Add the occurrences of each code point to `counts`; returns how many there were."""
    n_chars = 0
    for offset, data, after in utf8.pieces(f, CHUNK_BYTES, on_bytes):
        found = piece_counts(data, after, label, offset, lossy)
        counts[:len(found)] += found
        n_chars += int(found.sum())
    return n_chars


def piece_counts(data: bytes, after: bytes, label: str, offset: int,
                 lossy: bool) -> np.ndarray:
    """(highest code point + 1,) how often each code point occurs in a piece of a text
    that starts at byte `offset` (at least the 128 ASCII counts)."""
    byte_counts = _byte_counts(data)
    found = byte_counts[:0x80]  # ASCII characters
    if not data.isascii():
        codes = np.frombuffer(data, np.uint8)
        continuing = int(byte_counts[0x80:0xC0].sum())
        decoded = utf8.multi_byte_characters(codes, continuing)
        if decoded is None:
            found = np.bincount(_code_points(data, after, label, offset, lossy))
        else:
            found = np.bincount(decoded[0], minlength=0x80)
            found[:0x80] = byte_counts[:0x80]
    return found


def encoded_chunks(f: BinaryIO, label: str, lossy: bool, vocab: Vocabulary,
                   table: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """Second pass: the token ids, piece by piece.

    ASCII characters have the lowest ids (ids follow code points), so one byte translation
    maps them to their ids, drops the bytes that continue a multi-byte character and marks
    each such character's first byte with NON_ASCII; the marks are then overwritten with
    the ids of those characters, from a code point lookup table.
    """
    table = vocab.lookup_table() if table is None else table  # many files: made once
    translation = bytes(table[:0x80].tolist()) + bytes([NON_ASCII]) * 0x80
    for offset, data, after in utf8.pieces(f, CHUNK_BYTES):
        translated = data.translate(translation, utf8.CONTINUATION)
        ids = np.frombuffer(translated, np.uint8)  # (characters,) if the piece is valid
        if data.isascii():
            yield ids if vocab.dtype == np.uint8 else ids.astype(vocab.dtype)
            continue
        continuing = len(data) - len(translated)
        decoded = utf8.multi_byte_characters(np.frombuffer(data, np.uint8), continuing)
        if decoded is None:  # not UTF-8 (--lossy), or mostly multi-byte characters
            yield table[_code_points(data, after, label, offset, lossy)]
            continue
        code_points, positions = decoded
        ids = ids.astype(vocab.dtype)  # a writable copy
        ids[positions] = table[code_points]
        yield ids


def _code_points(data: bytes, after: bytes, label: str, offset: int,
                 lossy: bool) -> np.ndarray:
    """(characters,) the code points of a piece at byte `offset`, by Python's decoder."""
    try:
        text = utf8.decode_piece(data, after, lossy)
    except UnicodeDecodeError as exc:
        raise CorpusError(utf8.not_utf8_message(label, exc, offset + exc.start,
                                                advice=NOT_TEXT_ADVICE)) from None
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _byte_counts(data: bytes) -> np.ndarray:
    """(256,) how often each byte value occurs in `data`.

    np.bincount widens its input to 64-bit integers first, which costs more than the
    counting; read as 16-bit pairs it has half the elements to widen, and the pair counts
    fold back into byte counts.
    """
    pairs = np.frombuffer(data, np.uint16, count=len(data) // 2)
    by_pair = np.bincount(pairs, minlength=1 << 16).reshape(256, 256)  # [high, low byte]
    counts = by_pair.sum(axis=0) + by_pair.sum(axis=1)
    if len(data) % 2:
        counts[data[-1]] += 1
    return counts
