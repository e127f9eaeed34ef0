"""Tests for charlstm.data.utf8: pieces cut between characters, and `decode_blocks`, the
byte-offset decoder for whole inputs. The numpy fast path is tested through the corpus
encoder in test_encoding.py."""

from __future__ import annotations

import io

import pytest

from charlstm.data import utf8
from charlstm.errors import CharlstmError

# 1-, 2-, 3- and 4-byte UTF-8 characters mixed, so small blocks cut through characters
MIXED = "héllo wörld 世界! 😀 naïve café — ∑x² ok\nsecond line: 日本語テキスト 🎉\n"

# sequences Python's decoder refuses: a bad first byte, overlong forms, a surrogate, a code
# point past U+10FFFF, missing or stray continuation bytes, a character cut short
NOT_UTF8 = [b"\xff", b"\xc0\x80", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
            b"\x80", b"\xbf\xbf", b"\xe4\xb8a", b"\xf0\x9f\x98", b"\xc3"]

BLOCK_SIZES = [1, 2, 3, 5, 7, 1 << 20]


def decode_all(data: bytes, lossy: bool = False, block_bytes: int = utf8.BLOCK_BYTES,
               label: str = "standard input") -> list[str]:
    return list(utf8.decode_blocks(io.BytesIO(data), label, lossy, block_bytes))


def first_error(data: bytes) -> UnicodeDecodeError:
    with pytest.raises(UnicodeDecodeError) as info:
        data.decode("utf-8")
    return info.value


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_pieces_end_on_character_boundaries(block_bytes):
    data = MIXED.encode("utf-8")
    read = list(utf8.pieces(io.BytesIO(data), block_bytes))
    assert b"".join(piece for _, piece, _ in read) == data
    offset = 0
    for start, piece, _ in read:
        assert start == offset
        piece.decode("utf-8")  # whole characters only
        offset += len(piece)


@pytest.mark.parametrize("data, tail", [(b"ab", 0), ("é".encode()[:1], 1),
                                        ("世".encode()[:2], 2), ("😀".encode()[:3], 3),
                                        ("a😀".encode(), 0), (b"\x80\x80\x80", 0)])
def test_incomplete_tail(data, tail):
    assert utf8.incomplete_tail(data) == tail


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
def test_decode_blocks_round_trip(block_bytes):
    """Characters cut by the blocks come out whole; every text handed on is non-empty."""
    texts = decode_all(MIXED.encode("utf-8"), block_bytes=block_bytes)
    assert "".join(texts) == MIXED
    assert all(texts)


def test_decode_blocks_of_an_empty_stream_is_nothing():
    assert decode_all(b"") == []


def test_decode_blocks_message():
    """The message `charlstm score` has always given for invalid UTF-8."""
    with pytest.raises(CharlstmError) as info:
        decode_all(b"the dog\nthe \xff cat\n")
    assert str(info.value) == ("standard input is not valid UTF-8: invalid start byte at "
                               "byte offset 12 (bytes ff 20 63 61); --lossy replaces "
                               "invalid bytes")


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
@pytest.mark.parametrize("bad", NOT_UTF8)
def test_decode_blocks_names_the_offset_of_the_whole_input(block_bytes, bad):
    """After characters cut by block boundaries, the offset and reason named are those of
    decoding the whole input at once."""
    data = ("ab世界é😀c" * 4).encode("utf-8") + bad + " 😀 more".encode("utf-8")
    expected = first_error(data)
    with pytest.raises(CharlstmError) as info:
        decode_all(data, block_bytes=block_bytes, label="notes.txt")
    assert str(info.value).startswith(
        f"notes.txt is not valid UTF-8: {expected.reason} at byte offset {expected.start} "
        f"(bytes {data[expected.start:expected.start + 1].hex()}")


@pytest.mark.parametrize("block_bytes", BLOCK_SIZES)
@pytest.mark.parametrize("bad", NOT_UTF8)
def test_decode_blocks_lossy_replaces_as_a_whole_decoding_does(block_bytes, bad):
    data = "ok é 世 ".encode("utf-8") + bad + " 😀 more".encode("utf-8") + bad
    texts = decode_all(data, lossy=True, block_bytes=block_bytes)
    assert "".join(texts) == data.decode("utf-8", "replace")


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 1 << 20])
def test_decode_blocks_final_incomplete_character(block_bytes):
    prefix = "ab世界é".encode("utf-8")
    data = prefix + "界".encode("utf-8")[:2]
    with pytest.raises(CharlstmError, match=f"unexpected end of data at byte offset "
                                            f"{len(prefix)} "):
        decode_all(data, block_bytes=block_bytes)
    assert "".join(decode_all(data, lossy=True, block_bytes=block_bytes)) == "ab世界é\ufffd"


def test_decode_blocks_read_error_names_the_input():
    class Failing(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise OSError(5, "Input/output error")

    with pytest.raises(CharlstmError, match=r"^cannot read notes.txt: Input/output error$"):
        list(utf8.decode_blocks(Failing(), "notes.txt"))


def test_not_utf8_message_names_the_line_and_takes_advice():
    error = first_error(b"abc\xffdef")
    assert utf8.not_utf8_message("in.txt", error, 1003, line=1234) == (
        "in.txt is not valid UTF-8: invalid start byte at byte offset 1003 (line 1,234) "
        "(bytes ff 64 65 66); --lossy replaces invalid bytes")
    assert utf8.not_utf8_message("in.txt", error, 3, advice="try again").endswith(
        "(bytes ff 64 65 66); try again")
