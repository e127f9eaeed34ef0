"""Encoding a collection of files (see collection) as one corpus: the layout, two passes.

- Joining: each file is preceded by SEPARATOR, a newline, so files that end with a newline
  are set apart by a blank line.
- Skipping: a file found in a folder that is not UTF-8 text (invalid UTF-8, or a NUL byte,
  which marks a binary file) or cannot be read is left out; one named directly is the
  usual error (invalid UTF-8 at a byte offset, exit 1).
- The validation split: training holds out the last `val_frac` of the token array
  (split.split_point). A collection is laid out so that this holds out the last part of
  every file: [each file's head, in order][each file's tail]. The held-out characters are
  shared among the files in proportion to their length (`held_out`); the tails stand in
  an order shuffled by a hash of each path, so that the start of the split, which
  evaluation reads when the split exceeds --eval-chars, samples the whole collection
  rather than its first files.
- The SHA-256 is of the joined text in file order (separators included), whatever the
  split; the cache key covers each file's path, size, modification time and inode (see
  Collection.fingerprint), --lossy and val_frac, so a changed, added or removed file
  re-encodes and an unchanged collection is not read at all.

Memory: both passes stream each file (a small one in one read, a large one in chunks, see
encoding); what grows with the collection is a few numbers per file, never its text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np

from . import utf8
from .folders import Collection, Member
from .encoding import (CACHE_FORMAT, CHUNK_BYTES, NOT_TEXT_ADVICE, EncodedText, Progress,
                       encoded_chunks, load_cached, memmap, piece_counts)
from ..errors import CorpusError, UsageError
from .files import atomic_writer, write_atomically
from .split import split_point
from .vocab import MAX_CODE_POINT, Vocabulary

SEPARATOR = "\n"  # before each file; one character, so every split rule stays exact
SMALL_FILE = 1 << 16  # bytes; smaller files are read and decoded whole, in one call

# -------------------------------------------------------------------------- the layout


def held_out(lengths: Sequence[int], val_frac: float) -> list[int]:
    """How many characters of each file (its last ones) go to the validation split.

    `lengths` are the files' lengths in characters. With the separator before each file
    the collection has N = sum(lengths) + len(lengths) characters; the split holds out
    N - split_point(N, val_frac) of them, shared in proportion to each file's length plus
    its separator (largest remainders first, ties to the earlier file), never a
    separator. This is what makes split.split_point fall on the head/tail boundary.
    """
    total = sum(lengths) + len(lengths)
    held = total - split_point(total, val_frac)
    if held > sum(lengths):
        raise UsageError.naming(f"{{val_frac}} {val_frac} holds out more than the text of these "
                         f"{len(lengths):,} files")
    shares = [held * (n + 1) // total for n in lengths]
    shares = [min(s, n) for s, n in zip(shares, lengths)]
    left = held - sum(shares)
    by_remainder = sorted(range(len(lengths)),
                          key=lambda i: (-(held * (lengths[i] + 1) % total), i))
    while left:  # each round gives at most one more character to each file
        for i in by_remainder:
            if left and shares[i] < lengths[i]:
                shares[i] += 1
                left -= 1
    return shares


def _tail_order(paths: Sequence[str]) -> list[int]:
    """The order of the tails in the validation split: by a hash of each path."""
    return sorted(range(len(paths)),
                  key=lambda i: hashlib.sha256(paths[i].encode("utf-8", "surrogateescape"))
                  .digest())


# ---------------------------------------------------------------------------- encoding


class _NotText(Exception):
    """A file found in a folder that is not UTF-8 text: it is skipped."""


def encode_collection(collection: Collection, cache_dir: Path, name: str,
                      lossy: bool = False, val_frac: float = 0.1,
                      progress: Progress | None = None
                      ) -> tuple[EncodedText, int, list[tuple[str, str]]]:
    """The collection encoded (from the cache when nothing changed): its text, how many
    files it holds, and the files left out (with why)."""
    key = hashlib.sha256(f"{lossy}|{val_frac!r}|{CACHE_FORMAT}|{SEPARATOR!r}".encode()
                         + collection.fingerprint()).hexdigest()[:16]
    tokens_path = cache_dir / f"{name}-{key}.tokens"
    meta_path = tokens_path.with_suffix(".json")
    cached = load_cached(meta_path, tokens_path)
    if cached is not None:
        meta = json.loads(meta_path.read_text("utf-8"))
        return cached, meta["files"], [tuple(s) for s in meta["skipped"]]
    total = sum(m.size for m in collection.members)
    vocab, sha256, kept, lengths, skipped = _first_pass(collection, lossy, total, progress)
    n_chars = sum(lengths) + len(lengths)
    _second_pass(kept, lengths, held_out(lengths, val_frac), vocab, lossy, tokens_path)
    # one list in walk order: those left out while walking, then reading
    skipped = [(path, why) for _, path, why in sorted(collection.skipped + skipped,
                                                      key=lambda item: item[0])]
    meta = {"format": CACHE_FORMAT, "sha256": sha256, "characters": n_chars,
            "dtype": vocab.dtype.name, "vocab": vocab.to_dict(), "files": len(kept),
            "skipped": skipped}
    try:
        write_atomically(meta_path, json.dumps(meta).encode("utf-8"))
    except OSError as exc:
        raise CorpusError(f"cannot cache the corpus in {cache_dir}: "
                          f"{exc.strerror or exc}") from exc
    return (EncodedText(sha256, vocab, memmap(tokens_path, vocab.dtype, n_chars)),
            len(kept), skipped)


def _first_pass(collection: Collection, lossy: bool, total: int,
                progress: Progress | None):
    """The vocabulary, the SHA-256 of the joined text, the files kept with their lengths
    in characters, and the files skipped because of what they hold."""
    counts = np.zeros(MAX_CODE_POINT, dtype=np.int64)
    digest = hashlib.sha256()
    kept: list[Member] = []
    lengths: list[int] = []
    skipped: list[tuple[int, str, str]] = []
    done = 0
    for index, member in enumerate(collection.members):
        before = digest.copy()
        digest.update(SEPARATOR.encode())
        try:
            lengths.append(_count_file(member, lossy, digest, counts))
            kept.append(member)
        except _NotText as why:
            skipped.append((index, member.path, str(why)))
            digest = before
        done += member.size
        if progress:
            progress(done, total)
    if not kept:
        raise UsageError(f"none of the {len(collection.members):,} files found is UTF-8 text")
    counts[ord(SEPARATOR)] += len(kept)
    return Vocabulary.from_counts(counts), digest.hexdigest(), kept, lengths, skipped


@contextlib.contextmanager
def _reading(member: Member) -> Iterator[BinaryIO]:
    """A file of the collection open for reading; what goes wrong with one found in a
    folder makes it a _NotText (skipped), with one named directly the usual error."""
    try:
        with open(member.path, "rb") as f:
            yield f
    except CorpusError:  # invalid UTF-8 at a byte offset
        if member.named:
            raise
        raise _NotText("not UTF-8") from None
    except OSError as exc:
        if member.named:
            raise CorpusError(f"cannot read corpus {member.path}: "
                              f"{exc.strerror or exc}") from None
        raise _NotText(f"unreadable ({exc.strerror or exc})") from None


def _count_file(member: Member, lossy: bool, digest, counts: np.ndarray) -> int:
    """Add a file's characters to `counts` (only once all of it has been read) and its
    bytes to `digest`; returns how many characters it has."""
    with _reading(member) as f:
        if member.size < SMALL_FILE:
            data = f.read()
            if not member.named and b"\0" in data:
                raise _NotText("binary: a NUL byte")
            digest.update(data)
            found, n = np.unique(_small_file_code_points(data, member.path, lossy),
                                 return_counts=True)
            counts[found] += n
            return int(n.sum())
        found = np.zeros(0x80, dtype=np.int64)

        def read(chunk: bytes) -> None:
            if not member.named and b"\0" in chunk:
                raise _NotText("binary: a NUL byte")
            digest.update(chunk)

        for offset, data, after in utf8.pieces(f, CHUNK_BYTES, read):
            piece = piece_counts(data, after, member.path, offset, lossy)
            if len(piece) > len(found):
                found = np.pad(found, (0, len(piece) - len(found)))
            found[:len(piece)] += piece
    counts[:len(found)] += found
    return int(found.sum())


def _small_file_code_points(data: bytes, label: str, lossy: bool) -> np.ndarray:
    """(characters,) the code points of a whole small file: Python's decoder costs less
    than the numpy ways for large pieces (see encoding), which pay for each call."""
    try:
        text = data.decode("utf-8", "replace" if lossy else "strict")
    except UnicodeDecodeError as exc:
        raise CorpusError(utf8.not_utf8_message(label, exc, exc.start,
                                                advice=NOT_TEXT_ADVICE)) from None
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _file_ids(member: Member, lossy: bool, vocab: Vocabulary,
              table: np.ndarray) -> Iterator[np.ndarray]:
    """A file's token ids, piece by piece (a small file in one piece)."""
    with _reading(member) as f:
        if member.size < SMALL_FILE:
            yield table[_small_file_code_points(f.read(), member.path, lossy)]
        else:
            yield from encoded_chunks(f, member.path, lossy, vocab, table)


def _second_pass(kept: list[Member], lengths: list[int], tails: list[int],
                 vocab: Vocabulary, lossy: bool, tokens_path: Path) -> None:
    """Write the token file: each file's head in order, then the tails (see the module)."""
    item = vocab.dtype.itemsize
    table = vocab.lookup_table()
    separator = table[[ord(SEPARATOR)]].tobytes()
    tail_at, position = [0] * len(kept), sum(lengths) + len(kept) - sum(tails)
    for i in _tail_order([m.path for m in kept]):
        tail_at[i], position = position, position + tails[i]
    try:
        with atomic_writer(tokens_path) as out:
            heads = _Heads(out.fileno())
            for member, length, tail, at in zip(kept, lengths, tails, tail_at):
                heads.write(separator)
                written = 0
                for ids in _file_ids(member, lossy, vocab, table):
                    cut = max(0, min(len(ids), length - tail - written))
                    heads.write(ids[:cut].tobytes())
                    if cut < len(ids):
                        offset = at + max(0, written - (length - tail))
                        os.pwrite(out.fileno(), ids[cut:].tobytes(), offset * item)
                    written += len(ids)
                if written != length:  # nothing is kept: the writer discards its file
                    raise CorpusError(f"{member.path} changed while it was being encoded; "
                                      "try again")
            heads.flush()
    except _NotText as why:  # readable in the first pass, not now
        raise CorpusError(f"{member.path} changed while it was being encoded ({why}); "
                          "try again") from None
    except OSError as exc:
        raise CorpusError(f"cannot write the corpus cache {tokens_path}: {exc}") from exc


class _Heads:
    """The heads of the files, written one after another from the start of the token file
    through a buffer (tiny files would otherwise cost a system call each)."""

    def __init__(self, fd: int):
        self.fd, self.position, self.buffer = fd, 0, bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        os.pwrite(self.fd, self.buffer, self.position)
        self.position += len(self.buffer)
        self.buffer = bytearray()
