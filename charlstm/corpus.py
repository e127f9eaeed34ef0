"""Corpora: finding the text to train on, and encoding it once into a token array.

A corpus argument is a file path, `-` for standard input, or the name of a known corpus:
the built-in default (`pystdlib`, assembled from the Python standard library's sources, so
it needs no network) or an entry of the registry in `corpora/registry.json`, fetched with
`download`. Text is UTF-8, modelled as Unicode code points.

`encode` turns a text into a `Corpus`: its vocabulary and a compact integer array of token
ids (uint8/uint16/uint32 by vocabulary size) that training reads through a memory map. The
file is streamed in chunks twice (a histogram pass for the vocabulary, then an encoding
pass through a lookup table), never held as one Python string, and the result is cached
under `corpora/cache/`, keyed by the file's path, size and modification time.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import mmap
import sys
import sysconfig
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from .errors import CorpusError, UsageError
from .files import atomic_writer, write_atomically
from .vocab import MAX_CODE_POINT, Vocabulary

log = logging.getLogger(__name__)

DEFAULT_CORPUS = "pystdlib"
CHUNK_BYTES = 1 << 20  # per read: fits the CPU caches, and numpy's per-call costs vanish
CACHE_FORMAT = 1

# Progress callbacks receive (bytes done, bytes in all or None when unknown).
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus: what training and evaluation read."""

    name: str  # a short name for run folders and messages
    source: str  # where the text came from: a path, "-", or a known corpus name
    sha256: str  # of the UTF-8 bytes, to tell later whether a resume sees the same text
    vocab: Vocabulary
    tokens: np.ndarray  # (N,) token ids, usually a read-only memory map

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "characters": int(len(self.tokens)),
        }


# ---------------------------------------------------------------------------- sources


def registry() -> dict[str, dict]:
    """The known downloadable corpora: name -> {description, url, size, sha256}."""
    text = resources.files("charlstm.corpora").joinpath("registry.json").read_text("utf-8")
    return json.loads(text)


def known_names() -> list[str]:
    return [*BUILT_IN, *registry()]


def resolve(spec: str | None, corpora_dir: Path) -> Path | None:
    """The file a corpus argument names, or None for standard input.

    A path that exists wins over a known name; the default corpus is built on first use.
    """
    if spec is None:
        spec = DEFAULT_CORPUS
    if spec == "-":
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        raise UsageError(f"corpus {spec!r} is a directory; give a text file")
    if path.exists():
        return path
    if spec in BUILT_IN:
        return BUILT_IN[spec].build(corpora_dir)
    if spec in registry():
        local = corpora_dir / f"{spec}.txt"
        if not local.exists():
            raise UsageError(
                f"corpus {spec!r} is not downloaded yet; run: charlstm corpus get {spec}"
            )
        return local
    raise UsageError(
        f"no such file or known corpus: {spec!r} (known: {', '.join(known_names())})"
    )


def default_corpus_files() -> list[tuple[str, Path]]:
    """The standard-library modules that make up the default corpus, in a fixed order.

    Tests, demos and vendored packages are left out, and so is any file with non-ASCII
    text, which keeps the vocabulary to printable ASCII plus tab and newline. The order is
    by a hash of each module's relative path: a deterministic mix of the whole library
    rather than its first letters.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "idlelib", "lib2to3", "turtledemo",
            "ensurepip", "pydoc_data", "__pycache__", "encodings"}
    chosen = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in skip or part.startswith(("test", "config-")) for part in rel.parts):
            continue
        chosen.append((rel.as_posix(), path))
    return sorted(chosen, key=lambda item: hashlib.sha256(item[0].encode()).hexdigest())


def build_default_corpus(corpora_dir: Path, target_bytes: int = 2_000_000) -> Path:
    """Write (once) the built-in corpus: about 2 MB of Python standard-library source."""
    path = corpora_dir / f"{DEFAULT_CORPUS}.txt"
    if path.exists():
        return path
    parts, total = [], 0
    for rel, source in default_corpus_files():
        try:
            text = source.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.isascii() or not text.strip():
            continue
        piece = f"# ---- {rel} ----\n{text.rstrip()}\n\n"
        parts.append(piece)
        total += len(piece)
        if total >= target_bytes:
            break
    if not parts:
        raise CorpusError("could not find the Python standard library's sources")
    log.info("built the default corpus from %d standard-library modules", len(parts))
    try:
        write_atomically(path, "".join(parts).encode("utf-8"))
    except OSError as exc:
        raise CorpusError(f"cannot write the default corpus to {path}: "
                          f"{exc.strerror or exc}") from exc
    return path


def build_docs_corpus(corpora_dir: Path) -> Path:
    """Write (once) `pydocs`: the Python language reference as plain text, about 0.5 MB.

    It is English prose about code with a few examples, a corpus of another character
    than the default's source code, and ships with Python (`pydoc_data`), so it too is
    built offline.
    """
    path = corpora_dir / "pydocs.txt"
    if path.exists():
        return path
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise CorpusError("this Python has no pydoc_data to build 'pydocs' from") from exc
    text = "".join(f"{topics[key].strip()}\n\n" for key in sorted(topics))
    try:
        write_atomically(path, text.encode("utf-8"))
    except OSError as exc:
        raise CorpusError(f"cannot write the pydocs corpus to {path}: "
                          f"{exc.strerror or exc}") from exc
    return path


@dataclass(frozen=True)
class BuiltIn:
    """A corpus built on this machine from what Python ships with: no network needed."""

    build: Callable[[Path], Path]  # corpora folder -> the built file
    size: str
    description: str


BUILT_IN = {
    DEFAULT_CORPUS: BuiltIn(lambda folder: build_default_corpus(folder), "~2 MB",
                            "built-in default: Python standard-library sources, made locally"),
    "pydocs": BuiltIn(build_docs_corpus, "~0.5 MB",
                      "the Python language reference, English prose, made locally"),
}


# --------------------------------------------------------------------------- download


def download(name: str, corpora_dir: Path, source: str | None = None,
             progress: Progress | None = None) -> Path:
    """Fetch a registry corpus into `corpora_dir/NAME.txt` and verify its checksum.

    `source` replaces the registry URL: another URL (http, https, file) or a local path,
    e.g. a copy already on disk. Nothing is left behind when the checksum does not match.
    """
    entries = registry()
    if name not in entries:
        raise UsageError(f"unknown corpus {name!r} (downloadable: {', '.join(entries)})")
    entry = entries[name]
    target = corpora_dir / f"{name}.txt"
    if target.exists() and _sha256_of(target) == entry["sha256"]:
        return target
    url = source or entry["url"]
    if source and Path(source).expanduser().exists():
        url = Path(source).expanduser().resolve().as_uri()
    digest = hashlib.sha256()
    with atomic_writer(target) as out:  # replaces target only if the checksum matches
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                total = getattr(response, "length", None) or entry.get("size")
                done = 0
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CorpusError(f"could not download {name} from {url}: {reason}") from exc
        if digest.hexdigest() != entry["sha256"]:
            raise CorpusError(
                f"download of {name} from {url} has the wrong checksum "
                f"(sha256 {digest.hexdigest()[:16]}…, expected {entry['sha256'][:16]}…); "
                "nothing was kept"
            )
    return target


# --------------------------------------------------------------------------- encoding


def encode(spec: str | None, corpora_dir: Path, lossy: bool = False,
           progress: Progress | None = None, stdin: BinaryIO | None = None) -> Corpus:
    """Resolve a corpus argument and return it encoded, from the cache when it can."""
    path = resolve(spec, corpora_dir)
    cache_dir = corpora_dir / "cache"
    if path is None:
        data = (stdin or sys.stdin.buffer).read()
        return _encode_bytes(data, "stdin", "-", lossy)
    name, source = path.stem, spec or DEFAULT_CORPUS
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
    cached = _load_cached(meta_path, tokens_path, name, source)
    if cached is not None:
        return cached
    try:
        with open(path, "rb") as f:
            vocab, sha256, n_chars = _vocabulary(f, str(path), lossy, stat.st_size, progress)
            f.seek(0)
            with atomic_writer(tokens_path) as out:
                written = 0
                for ids in _encoded_chunks(f, str(path), lossy, vocab):
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
    return Corpus(name, source, sha256, vocab, _memmap(tokens_path, vocab.dtype, n_chars))


def _encode_bytes(data: bytes, name: str, source: str, lossy: bool) -> Corpus:
    f = io.BytesIO(data)
    vocab, sha256, _ = _vocabulary(f, "standard input", lossy, len(data), None)
    f.seek(0)
    tokens = np.concatenate(list(_encoded_chunks(f, "standard input", lossy, vocab)))
    return Corpus(name, source, sha256, vocab, tokens)


def _load_cached(meta_path: Path, tokens_path: Path, name: str, source: str) -> Corpus | None:
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        if meta.get("format") != CACHE_FORMAT:
            return None
        vocab = Vocabulary.from_dict(meta["vocab"])
        expected = meta["characters"] * vocab.dtype.itemsize
        if tokens_path.stat().st_size != expected:
            return None
        return Corpus(name, source, meta["sha256"], vocab,
                      _memmap(tokens_path, vocab.dtype, meta["characters"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _memmap(path: Path, dtype: np.dtype, length: int) -> np.ndarray:
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


# The text is read in pieces of about CHUNK_BYTES, each ending on a character boundary
# (an incomplete character at the end of a read moves on to the next piece). Real corpora
# are mostly ASCII, and an ASCII byte is always a character of its own, so the passes work
# on bytes: ASCII bytes are counted as bytes and turned into ids by one byte translation,
# and only the few multi-byte characters are decoded, with numpy, from where they start.
# That decoding also checks the piece is valid UTF-8; a piece that is not goes through
# Python's decoder instead, which names the offending byte (or, with --lossy, replaces the
# bad bytes), exactly as decoding the whole text in one go would.

CONTINUATION = bytes(range(0x80, 0xC0))  # bytes that only continue a multi-byte character
NON_ASCII = 0xFF  # marks a multi-byte character in the second pass; never an ASCII id
SHORTEST = np.array([0, 0, 0x80, 0x800, 0x10000])  # the least code point for each length
MOSTLY_ASCII = 0.1  # pieces with fewer continuation bytes than this share go the numpy way


def _pieces(f: BinaryIO, on_bytes: Callable[[bytes], None] | None = None
            ) -> Iterator[tuple[int, bytes, bytes]]:
    """(byte offset, bytes, the bytes read after them) of each piece of a stream, cut
    only between characters."""
    carry = b""  # the start of a character cut by the last read
    offset = 0  # bytes before `carry`
    while True:
        chunk = f.read(CHUNK_BYTES)
        if on_bytes is not None and chunk:
            on_bytes(chunk)
        data = carry + chunk if carry else chunk
        cut = _incomplete_tail(data) if chunk else 0
        data, carry = (data[:-cut], data[-cut:]) if cut else (data, b"")
        if data:
            yield offset, data, carry
            offset += len(data)
        if not chunk:
            return


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of `data` begin a character that is not complete."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:  # the start of a character: how long should it be?
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if needed > back else 0
    return 0


def _multi_byte_characters(codes: np.ndarray, continuation_bytes: int
                           ) -> tuple[np.ndarray, np.ndarray] | None:
    """The multi-byte characters of a piece: (code points (k,), where each stands among
    the piece's characters (k,)); None unless the piece is valid UTF-8 (the shortest
    form, no surrogates, nothing past U+10FFFF, no character cut at the end).

    `codes` (n,) are the piece's bytes; `continuation_bytes` how many of them are in
    0x80-0xBF, which must be exactly those that the characters' first bytes announce.
    """
    starts = np.flatnonzero(codes >= 0xC0)  # (k,)
    lead = codes[starts]
    length = 2 + (lead >= 0xE0) + (lead >= 0xF0)  # (k,) bytes in each character
    following = length - 1
    if int(following.sum()) != continuation_bytes:
        return None
    if len(starts) == 0:
        return starts, starts
    if lead.min() < 0xC2 or lead.max() > 0xF4 or (starts + length).max() > len(codes):
        return None
    code_points = (lead & (0x7F >> length)).astype(np.int64)  # the first byte's bits
    for k in range(1, 4):
        has = length > k
        byte = codes[np.minimum(starts + k, len(codes) - 1)]
        if ((byte & 0xC0) != 0x80)[has].any():
            return None
        code_points = np.where(has, (code_points << 6) | (byte & 0x3F), code_points)
    if ((code_points < SHORTEST[length]).any() or code_points.max() > 0x10FFFF
            or ((code_points >= 0xD800) & (code_points <= 0xDFFF)).any()):
        return None
    positions = starts - (np.cumsum(following) - following)  # bytes -> characters
    return code_points, positions


def _decode_exactly(data: bytes, after: bytes, label: str, offset: int,
                    lossy: bool) -> np.ndarray:
    """The code points of a piece, through Python's decoder: for a piece that is not
    valid UTF-8, and for one mostly of multi-byte characters, which it decodes faster.

    Without `lossy` that names the first bad byte; the bytes `after` the piece (none at
    the end of the text) let it tell a character cut short from one left unfinished.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        if lossy:
            text = data.decode("utf-8", "replace")
        else:
            try:
                codecs.getincrementaldecoder("utf-8")().decode(data + after, final=not after)
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start:exc.start + 4].hex(" ")
                raise CorpusError(
                    f"{label} is not valid UTF-8: {exc.reason} at byte offset "
                    f"{offset + exc.start} (bytes {bad}); is it a text file? "
                    "(--lossy replaces invalid bytes)"
                ) from None
            raise  # not reached: the piece's first error is found with what follows it
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
    for offset, data, after in _pieces(f, on_bytes):
        byte_counts = _byte_counts(data)
        found = byte_counts[:0x80]  # ASCII characters
        if not data.isascii():
            codes = np.frombuffer(data, np.uint8)
            continuing = int(byte_counts[0x80:0xC0].sum())
            decoded = (_multi_byte_characters(codes, continuing)
                       if continuing < len(data) * MOSTLY_ASCII else None)
            if decoded is None:
                found = np.bincount(_decode_exactly(data, after, label, offset, lossy))
            else:
                found = np.bincount(decoded[0], minlength=0x80)
                found[:0x80] = byte_counts[:0x80]
        counts[:len(found)] += found
        n_chars += int(found.sum())
    return n_chars


def _encoded_chunks(f: BinaryIO, label: str, lossy: bool,
                    vocab: Vocabulary) -> Iterator[np.ndarray]:
    """Second pass: the token ids, piece by piece.

    ASCII characters have the lowest ids (ids follow code points), so one byte translation
    maps them to their ids, drops the bytes that continue a multi-byte character and marks
    each such character's first byte with NON_ASCII; the marks are then overwritten with
    the ids of those characters, from a code point lookup table.
    """
    table = vocab.lookup_table()
    translation = bytes(table[:0x80].tolist()) + bytes([NON_ASCII]) * 0x80
    for offset, data, after in _pieces(f):
        translated = data.translate(translation, CONTINUATION)
        ids = np.frombuffer(translated, np.uint8)  # (characters,) if the piece is valid
        if data.isascii():
            yield ids if vocab.dtype == np.uint8 else ids.astype(vocab.dtype)
            continue
        continuing = len(data) - len(translated)
        decoded = (_multi_byte_characters(np.frombuffer(data, np.uint8), continuing)
                   if continuing < len(data) * MOSTLY_ASCII else None)
        if decoded is None:  # not UTF-8 (--lossy), or mostly multi-byte characters
            yield table[_decode_exactly(data, after, label, offset, lossy)]
            continue
        code_points, positions = decoded
        ids = ids.astype(vocab.dtype)  # a writable copy
        ids[positions] = table[code_points]
        yield ids


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
