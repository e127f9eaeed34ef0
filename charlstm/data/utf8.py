"""UTF-8 read in pieces: cut between characters, decoded fast, errors named by byte offset.

A long text is read a block at a time, and each piece handed on ends on a character
boundary (an incomplete character at the end of a read moves on to the next piece). Real
corpora are mostly ASCII, and an ASCII byte is always a character of its own, so the
corpus encoder works on bytes and decodes, with numpy, only the few multi-byte characters
(`multi_byte_characters`). A piece that is not valid UTF-8 goes through Python's decoder
instead (`decode_piece`), which names the offending byte, or with `lossy` replaces the bad
bytes with U+FFFD, exactly as decoding the whole text in one go would.

`decode_blocks` is the same reading for a caller that wants text: a binary stream decoded
block by block, so a huge input never sits in memory. Every invalid-UTF-8 message of the
package is written by `not_utf8_message`.
"""

from __future__ import annotations

import codecs
from typing import BinaryIO, Callable, Iterator

import numpy as np

from ..errors import CharlstmError

BLOCK_BYTES = 1 << 20  # what decode_blocks reads at a time unless told
CONTINUATION = bytes(range(0x80, 0xC0))  # bytes that only continue a multi-byte character
SHORTEST = np.array([0, 0, 0x80, 0x800, 0x10000])  # the least code point for each length
MOSTLY_ASCII = 0.1  # pieces with fewer continuation bytes than this share go the numpy way
LOSSY_ADVICE = "--lossy replaces invalid bytes"


def pieces(f: BinaryIO, chunk_bytes: int, on_bytes: Callable[[bytes], None] | None = None
           ) -> Iterator[tuple[int, bytes, bytes]]:
    """(byte offset, bytes, the bytes read after them) of each piece of a stream, read
    `chunk_bytes` at a time and cut only between characters; `on_bytes` sees each read."""
    carry = b""  # the start of a character cut by the last read
    offset = 0  # bytes before `carry`
    while True:
        chunk = f.read(chunk_bytes)
        if on_bytes is not None and chunk:
            on_bytes(chunk)
        data = carry + chunk if carry else chunk
        cut = incomplete_tail(data) if chunk else 0
        data, carry = (data[:-cut], data[-cut:]) if cut else (data, b"")
        if data:
            yield offset, data, carry
            offset += len(data)
        if not chunk:
            return


def incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of `data` begin a character that is not complete."""
    for back in range(1, min(3, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return 0
        if byte >= 0xC0:  # the start of a character: how long should it be?
            needed = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return back if needed > back else 0
    return 0


def multi_byte_characters(codes: np.ndarray, continuation_bytes: int
                          ) -> tuple[np.ndarray, np.ndarray] | None:
    """The multi-byte characters of a piece: (code points (k,), where each stands among
    the piece's characters (k,)).

    None when the piece should go through `decode_piece` instead: when it is not valid
    UTF-8 (the shortest form, no surrogates, nothing past U+10FFFF, no character cut at
    the end), and when it is not mostly ASCII, which Python's decoder decodes faster.
    `codes` (n,) are the piece's bytes; `continuation_bytes` how many of them are in
    0x80-0xBF, which must be exactly those that the characters' first bytes announce.
    """
    if continuation_bytes >= len(codes) * MOSTLY_ASCII:
        return None
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


def decode_piece(data: bytes, after: bytes, lossy: bool) -> str:
    """A piece as text, through Python's decoder, as decoding the whole text would give.

    Without `lossy`, invalid UTF-8 raises the UnicodeDecodeError of the whole text: its
    `start` is the first bad byte's offset in `data`. The bytes `after` the piece (none at
    the end of the text) let it tell a character cut short from one left unfinished.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if lossy:
            return data.decode("utf-8", "replace")
        codecs.getincrementaldecoder("utf-8")().decode(data + after, final=not after)
        raise  # not reached: the piece's first error is found with what follows it


def not_utf8_message(label: str, exc: UnicodeDecodeError, offset: int,
                     line: int | None = None, advice: str = LOSSY_ADVICE) -> str:
    """The one-line message for invalid UTF-8 in `label` whose first bad byte, the one
    `exc` names, is at byte `offset` of the input (on `line`, when reading lines)."""
    bad = exc.object[exc.start:exc.start + 4].hex(" ")
    on_line = f" (line {line:,})" if line is not None else ""
    return (f"{label} is not valid UTF-8: {exc.reason} at byte offset {offset}{on_line} "
            f"(bytes {bad}); {advice}")


def decode_blocks(stream: BinaryIO, label: str, lossy: bool = False,
                  block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """A binary stream decoded block by block, each text ending on a character boundary.

    Invalid UTF-8 (without `lossy`) and a failed read raise a CharlstmError naming
    `label`; the first names the byte offset of the first bad byte in the whole stream.
    """
    try:
        for offset, data, after in pieces(stream, block_bytes):
            try:
                text = decode_piece(data, after, lossy)
            except UnicodeDecodeError as exc:
                raise CharlstmError(not_utf8_message(label, exc, offset + exc.start)
                                    ) from None
            yield text
    except OSError as exc:
        raise CharlstmError(f"cannot read {label}: {exc.strerror or exc}") from None
