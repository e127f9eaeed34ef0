"""A suffix array over token ids, and the searches that find a text's copies in it.

`build` sorts the suffixes of a token array: with pydivsufsort (the `novelty` extra), a
C implementation of the suffix-sorting algorithm that is linear in practice and needs
no memory beyond the array it returns, when it is installed; else with NumPy by prefix
doubling (rank pairs sorted, ranks doubled in length each round: O(n log n) time, some
60 bytes per token at its peak; fine for a few million tokens, slow beyond).

`longest_matches` answers, for every position i of a query, how long the longest prefix
of query[i:] that occurs somewhere in the tokens is, and where: the "matching
statistics" of the query. It binary-searches every query suffix at once (vectorised over
the positions), comparing BLOCK tokens per round, and takes the longer common prefix of
the two sorted neighbours of where each suffix would go (the longest match of a pattern
is always with one of them). `Matcher` keeps such a match going one token at a time
(for generation under a limit on copies).

Past the end of the tokens reads as CORPUS_END and past the end of a query as
QUERY_END; they differ from each other and from every id, so no match runs past an end.
"""

from __future__ import annotations

import numpy as np

BLOCK = 32  # tokens compared per round of the vectorised search
CORPUS_END, QUERY_END, UNKNOWN = -2, -1, -3  # never equal to each other or to an id


def build(tokens: np.ndarray) -> np.ndarray:
    """The suffix array of `tokens` (int32 below 2**31 tokens, else int64): the start of
    every suffix, in lexicographic order (a shorter suffix before its extensions)."""
    try:
        import pydivsufsort
    except ImportError:
        return build_with_numpy(tokens)
    small = len(tokens) and int(tokens.max()) < 256
    dtype = np.uint8 if small else np.int32
    data = tokens  # pydivsufsort takes writable arrays only (it does not write to them)
    if tokens.dtype != dtype or not tokens.flags.writeable or not tokens.flags.c_contiguous:
        data = np.array(tokens, dtype=dtype)
    return pydivsufsort.divsufsort(data)


def build_with_numpy(tokens: np.ndarray) -> np.ndarray:
    """`build` by prefix doubling in NumPy: each round sorts the suffixes by (rank of
    their first k tokens, rank of the k after), until all ranks differ."""
    n = len(tokens)
    dtype = np.int32 if n < 2**31 else np.int64
    if n == 0:
        return np.zeros(0, dtype=dtype)
    rank = np.asarray(tokens, dtype=np.int64)
    order = np.argsort(rank, kind="stable")
    k = 1
    while True:
        after = np.full(n, -1, dtype=np.int64)  # a suffix that ends sorts first
        after[:n - k] = rank[k:] if k < n else after[:0]
        order = np.lexsort((after, rank))
        first, second = rank[order], after[order]
        new_group = np.empty(n, dtype=bool)
        new_group[0] = True
        new_group[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.cumsum(new_group) - 1
        if new_group.all() or k >= n:
            return order.astype(dtype)
        k *= 2


def _compare(query: np.ndarray, query_at: np.ndarray, tokens: np.ndarray,
             corpus_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pair (query[query_at[r]:], tokens[corpus_at[r]:]): the length of their
    common prefix, and whether the query suffix sorts before the corpus one. `query`
    ends with QUERY_END, so every pair differs somewhere."""
    rows = len(query_at)
    common = np.zeros(rows, dtype=np.int64)
    less = np.zeros(rows, dtype=bool)
    active = np.arange(rows)
    n, last = len(tokens), len(query) - 1
    offset = 0
    columns = np.arange(BLOCK)
    while active.size:
        at = query_at[active, None] + offset + columns  # (r, BLOCK)
        query_values = query[np.minimum(at, last)]
        at = corpus_at[active, None] + offset + columns
        corpus_values = np.where(at < n, tokens[np.minimum(at, n - 1)].astype(np.int64),
                                 CORPUS_END)
        differ = query_values != corpus_values
        found = differ.any(axis=1)
        first = differ.argmax(axis=1)[found]
        done = active[found]
        common[done] = offset + first
        picked = np.flatnonzero(found)
        less[done] = query_values[picked, first] < corpus_values[picked, first]
        active = active[~found]
        offset += BLOCK
    return common, less


def _insertion_points(query: np.ndarray, starts: np.ndarray, tokens: np.ndarray,
                      suffixes: np.ndarray) -> np.ndarray:
    """Where each query suffix query[starts[r]:] would go in the sorted suffixes."""
    low = np.zeros(len(starts), dtype=np.int64)
    high = np.full(len(starts), len(suffixes), dtype=np.int64)
    while True:
        open_ = np.flatnonzero(low < high)
        if not open_.size:
            return low
        middle = (low[open_] + high[open_]) // 2
        _, less = _compare(query, starts[open_], tokens, suffixes[middle].astype(np.int64))
        high[open_[less]] = middle[less]
        low[open_[~less]] = middle[~less] + 1


def longest_matches(query_ids: np.ndarray, tokens: np.ndarray, suffixes: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, places): for each position i of `query_ids` (ids of the tokens'
    alphabet, UNKNOWN for characters it lacks), the length of the longest prefix of
    query[i:] found in `tokens`, and a position of `tokens` where it starts (-1 where the
    length is 0)."""
    m = len(query_ids)
    if m == 0 or len(tokens) == 0:
        return np.zeros(m, dtype=np.int64), np.full(m, -1, dtype=np.int64)
    query = np.append(np.asarray(query_ids, dtype=np.int64), QUERY_END)
    starts = np.arange(m, dtype=np.int64)
    points = _insertion_points(query, starts, tokens, suffixes)
    best = np.zeros(m, dtype=np.int64)
    place = np.full(m, -1, dtype=np.int64)
    for neighbour in (points - 1, points):  # the suffixes just before and after
        inside = np.flatnonzero((neighbour >= 0) & (neighbour < len(suffixes)))
        corpus_at = suffixes[neighbour[inside]].astype(np.int64)
        common, _ = _compare(query, starts[inside], tokens, corpus_at)
        longer = common > best[inside]
        best[inside[longer]] = common[longer]
        place[inside[longer]] = corpus_at[longer]
    return best, place


class Matcher:
    """The longest end of a growing text that occurs in the tokens, one token at a time:
    its length and its range [low, high) of the suffix array (the suffixes it begins)."""

    def __init__(self, tokens: np.ndarray, suffixes: np.ndarray, alphabet_size: int):
        self.tokens, self.suffixes, self.alphabet_size = tokens, suffixes, alphabet_size
        self.text: list[int] = []  # the ids so far (only the last `length` + 1 matter)
        self.length, self.low, self.high = 0, 0, len(suffixes)

    def _next_token(self, rank: int) -> int:
        """The token after the current match in the suffix of this rank."""
        at = int(self.suffixes[rank]) + self.length
        return int(self.tokens[at]) if at < len(self.tokens) else CORPUS_END

    def _narrowed(self, token: int) -> tuple[int, int]:
        """The part of [low, high) whose next token is `token` (the tokens after a common
        prefix are sorted): two binary searches."""
        low, high = self.low, self.high
        while low < high:
            middle = (low + high) // 2
            if self._next_token(middle) < token:
                low = middle + 1
            else:
                high = middle
        start, high = low, self.high
        while low < high:
            middle = (low + high) // 2
            if self._next_token(middle) <= token:
                low = middle + 1
            else:
                high = middle
        return start, low

    def followers(self, limit: int = 4096) -> np.ndarray:
        """The distinct tokens that follow the current match somewhere in the tokens."""
        if self.high - self.low <= limit:
            at = self.suffixes[self.low:self.high].astype(np.int64) + self.length
            after = self.tokens[at[at < len(self.tokens)]]
            return np.unique(after).astype(np.int64)
        found = []
        for token in range(self.alphabet_size):  # a short match: many suffixes
            low, high = self._narrowed(token)
            if high > low:
                found.append(token)
        return np.array(found, dtype=np.int64)

    def push(self, token: int) -> int:
        """Add a token (UNKNOWN: one the tokens lack) to the text; the new match length."""
        self.text.append(token)
        if token >= 0:
            low, high = self._narrowed(token)
            if high > low:
                self.length, self.low, self.high = self.length + 1, low, high
                if len(self.text) > 2 * self.length + 64:
                    del self.text[:len(self.text) - self.length]
                return self.length
        # the match breaks: the longest end of (match + token) that occurs, found anew
        tail = np.array(self.text[-(self.length + 1):], dtype=np.int64)
        lengths, _ = longest_matches(tail, self.tokens, self.suffixes)
        ends = np.flatnonzero(np.arange(len(tail)) + lengths == len(tail))
        self.length = int(len(tail) - ends[0]) if ends.size else 0
        self.low, self.high = self._range(tail[len(tail) - self.length:])
        del self.text[:len(self.text) - self.length]
        return self.length

    def _range(self, pattern: np.ndarray) -> tuple[int, int]:
        """The range of suffixes that begin with `pattern` (which occurs)."""
        self.length, self.low, self.high = 0, 0, len(self.suffixes)
        for token in pattern.tolist():
            self.low, self.high = self._narrowed(int(token))
            self.length += 1
        return self.low, self.high
