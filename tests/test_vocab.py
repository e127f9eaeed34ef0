"""Tests for charlstm.data.vocab: the character <-> id mapping."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm.data.vocab import Vocabulary


@pytest.mark.parametrize("text", ["hello world", "héllo 世界", "a\tb\nc\r\n\x00é😀"])
def test_encode_decode_round_trip(text):
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    assert len(ids) == len(text)
    assert vocab.decode(ids) == text
    assert set(vocab.chars) == set(text)


def test_ids_follow_code_point_order():
    text = "zebra 世界 Äpfel éa"
    vocab = Vocabulary.from_text(text)
    assert list(vocab.chars) == sorted(set(text), key=ord)
    # the id of each char is its rank among the distinct code points
    ranks = {c: i for i, c in enumerate(sorted(set(text), key=ord))}
    assert vocab.encode(text) == [ranks[c] for c in text]
    # the same set of characters in another order gives the same ids
    assert Vocabulary.from_text(text[::-1]).chars == vocab.chars


def test_counts_are_occurrences():
    vocab = Vocabulary.from_text("abracadabra")
    assert dict(zip(vocab.chars, vocab.counts)) == {"a": 5, "b": 2, "c": 1, "d": 1, "r": 2}


def test_dtype_uint8_up_to_256_chars():
    small = Vocabulary.from_text("abc")
    assert small.dtype == np.uint8
    full = Vocabulary.from_text("".join(chr(0x100 + i) for i in range(256)))
    assert len(full) == 256
    assert full.dtype == np.uint8
    # the largest id fits
    assert np.array(full.encode(full.chars), dtype=full.dtype).max() == 255


def test_dtype_uint16_above_256_chars():
    text = "".join(chr(0x4E00 + i) for i in range(300))
    vocab = Vocabulary.from_text(text)
    assert len(vocab) == 300
    assert vocab.dtype == np.uint16
    ids = np.array(vocab.encode(text), dtype=vocab.dtype)
    assert vocab.decode(ids.tolist()) == text


def test_lookup_table_maps_code_points_to_ids():
    text = "héllo 世界"
    vocab = Vocabulary.from_text(text)
    table = vocab.lookup_table()
    assert table.dtype == vocab.dtype
    code_points = [ord(c) for c in text]
    assert table[code_points].tolist() == vocab.encode(text)


def test_unknown_lists_unseen_chars_in_order_seen():
    vocab = Vocabulary.from_text("hello")
    assert vocab.unknown("hello") == []
    assert vocab.unknown("hxlzxo世z") == ["x", "z", "世"]
    assert "h" in vocab and "x" not in vocab


def test_dict_round_trip():
    vocab = Vocabulary.from_text("héllo 世界, héllo")
    data = vocab.to_dict()
    assert data == {"chars": vocab.chars, "counts": list(vocab.counts)}
    again = Vocabulary.from_dict(data)
    assert again == vocab
    assert again.encode("héllo") == vocab.encode("héllo")
    # counts are optional
    assert Vocabulary.from_dict({"chars": vocab.chars}).chars == vocab.chars


@pytest.mark.parametrize("chars, counts", [
    ("", ()),  # empty
    ("ba", ()),  # not in code point order
    ("aab", ()),  # duplicate
    ("ab", (1,)),  # counts do not match
])
def test_invalid_construction_raises(chars, counts):
    with pytest.raises(ValueError):
        Vocabulary(chars, counts)


def test_encode_unknown_char_raises():
    vocab = Vocabulary.from_text("abc")
    with pytest.raises(KeyError):
        vocab.encode("abd")
