"""The character vocabulary: the mapping between Unicode code points and token ids.

Ids are assigned in code point order, so the same set of characters always gives the same
ids. The vocabulary also keeps how often each character occurs in the training corpus; the
sampler uses those counts to pick a first character when it is given no prime.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_CODE_POINT = 0x110000


@dataclass(frozen=True)
class Vocabulary:
    chars: str  # every character of the corpus once, in code point order
    counts: tuple[int, ...] = field(default=())  # occurrences of each char, same order

    def __post_init__(self) -> None:
        if not self.chars:
            raise ValueError("a vocabulary needs at least one character")
        if list(self.chars) != sorted(set(self.chars)):
            raise ValueError("vocabulary characters must be unique and in code point order")
        if self.counts and len(self.counts) != len(self.chars):
            raise ValueError("vocabulary counts must match its characters")
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.chars)})

    @classmethod
    def from_counts(cls, code_point_counts: np.ndarray) -> "Vocabulary":
        """Build from a histogram indexed by code point (length MAX_CODE_POINT)."""
        present = np.flatnonzero(code_point_counts)
        chars = "".join(map(chr, present.tolist()))
        return cls(chars, tuple(int(n) for n in code_point_counts[present]))

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        code_points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return cls.from_counts(np.bincount(code_points, minlength=MAX_CODE_POINT))

    def union(self, other: "Vocabulary") -> "Vocabulary":
        """Every character of both, in code point order (so ASCII keeps the lowest ids),
        with `other`'s counts: a fine-tuning run's vocabulary, the parent's (`self`)
        and its new text's (`other`), which is what the run samples from."""
        by_char = dict(zip(other.chars, other.counts or (1,) * len(other)))
        chars = "".join(sorted(set(self.chars) | set(other.chars)))
        return Vocabulary(chars, tuple(by_char.get(c, 0) for c in chars))

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, char: str) -> bool:
        return char in self._index

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        if len(self.chars) <= 1 << 8:
            return np.dtype(np.uint8)
        if len(self.chars) <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, in order seen."""
        return list(dict.fromkeys(c for c in text if c not in self._index))

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in text]

    def decode(self, ids) -> str:
        chars = self.chars
        return "".join(chars[i] for i in ids)

    def lookup_table(self) -> np.ndarray:
        """An array mapping each code point to its id (unknown code points map to 0)."""
        table = np.zeros(MAX_CODE_POINT, dtype=self.dtype)
        code_points = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        table[code_points] = np.arange(len(self.chars), dtype=self.dtype)
        return table

    def to_dict(self) -> dict:
        return {"chars": self.chars, "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, data: dict) -> "Vocabulary":
        return cls(data["chars"], tuple(data.get("counts", ())))


def ids_tensor(ids: np.ndarray):
    """Token ids (any integer array, a memory map included) as the int64 tensor a model
    takes. torch is imported here, so the vocabulary alone stays light to import."""
    import torch

    return torch.from_numpy(np.asarray(ids, dtype=np.int64))
