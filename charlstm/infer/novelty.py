"""How much of a text is copied from a model's training text, and keeping samples from it.

`report` finds, for a text, the longest stretch that occurs verbatim in the training
text (its length, where it is in the text, and where it comes from: the file, line and
column), and the share of the text covered by copied stretches of at least `min_length`
characters: a character counts as copied when some stretch of that length around it
occurs in the training text. See data/copy_index.py for the index it searches.

`CopyGuard` keeps every sample free of copies longer than `max_copy` characters while it
is generated. It follows, for each sample, the longest end of its text so far that
occurs in the training text; once that end is `max_copy` characters long, every
character that would make it longer (those that follow it somewhere in the training
text) is ruled out of the next pick, so the model picks among the others, in the
proportions it gives them. A sample for which every character is ruled out ends there.
"""

from __future__ import annotations

import numpy as np

from ..data.copy_index import CopyIndex
from ..data.suffix_array import Matcher, longest_matches
from ..data.vocab import Vocabulary
from ..errors import UsageError
from ..ranges import MAX_COUNT, Range

DEFAULT_MIN_LENGTH = 30  # characters: shorter shared stretches are mostly common idiom
MIN_LENGTH = Range(1, MAX_COUNT)


def check_min_length(min_length: int) -> None:
    """The shortest stretch a report counts as copied, in its range."""
    if min_length not in MIN_LENGTH:
        raise UsageError.naming(MIN_LENGTH.refusal("{min_length}", min_length))


def report(index: CopyIndex, text: str, min_length: int = DEFAULT_MIN_LENGTH) -> dict:
    """The copies of the training text in `text`: a dict with

        characters     the text's length
        longest        the longest copied stretch: length, start (in the text), text,
                       and its place in the training text: file, line, column (null
                       when nothing is copied)
        min_length     the length from which a stretch counts as copied
        copied_chars   characters of the text inside copied stretches of >= min_length
        copied_share   copied_chars / characters (0 for an empty text)
    """
    ids = index.ids(text)
    lengths, places = longest_matches(ids, index.tokens, index.suffixes)
    covered = np.zeros(len(text) + 1, dtype=np.int64)  # +1 at starts, -1 after ends
    long_enough = np.flatnonzero(lengths >= min_length)
    np.add.at(covered, long_enough, 1)
    np.add.at(covered, long_enough + lengths[long_enough], -1)
    copied = int(np.count_nonzero(np.cumsum(covered)[:len(text)]))
    longest = None
    if len(text) and lengths.max() > 0:
        start = int(lengths.argmax())
        length = int(lengths[start])
        longest = {"length": length, "start": start, "text": text[start:start + length],
                   **index.place(int(places[start]))}
    return {"characters": len(text), "longest": longest, "min_length": min_length,
            "copied_chars": copied, "copied_share": copied / len(text) if text else 0.0}


class CopyGuard:
    """For each of a batch of samples: the characters that would make a copy longer
    than `max_copy`, step by step (see the module docstring)."""

    def __init__(self, index: CopyIndex, vocab: Vocabulary, max_copy: int, samples: int):
        self.max_copy = max_copy
        alphabet_size = len(index.chars)
        self.to_index = index.ids(vocab.chars)  # model id -> index id (or UNKNOWN)
        self.to_model = np.full(alphabet_size, -1, dtype=np.int64)
        known = self.to_index >= 0
        self.to_model[self.to_index[known]] = np.flatnonzero(known)
        self.matchers = [Matcher(index.tokens, index.suffixes, alphabet_size)
                         for _ in range(samples)]

    def banned(self, sample: int) -> np.ndarray:
        """The model ids the next character of this sample must not be."""
        matcher = self.matchers[sample]
        if matcher.length < self.max_copy:
            return np.zeros(0, dtype=np.int64)
        found = self.to_model[matcher.followers()]
        return found[found >= 0]

    def push(self, sample: int, model_id: int) -> None:
        self.matchers[sample].push(int(self.to_index[model_id]))
