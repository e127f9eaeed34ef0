"""Scoring text with a trained model: how many bits of information each text costs it.

A text's score is the negative log2-likelihood the model gives it, one character at a
time: each character is scored given the characters before it in the same text, and the
first character against the corpus's character frequencies kept in the vocabulary
(`vocab.counts`, the distribution `sampling` starts from when it has no prime). Each
score is a dict with

    text           the text scored (None for `score_stream`, which does not keep it)
    characters     its length in characters (Unicode code points), unknown ones included
    bits           the total cost in bits
    bits_per_char  bits / characters; NaN for an empty text (0 bits over 0 characters)
    unknown        how many of its characters are not in the vocabulary

Characters the model never saw have no probability under it, so each costs a fixed
`UNKNOWN_CHAR_BITS` = log2(0x110000), about 20.09 bits: what naming one Unicode code point
costs with no model at all. They are not fed to the model; the state goes on from the
known characters, so the known character after an unknown one is scored as if the
unknown one were not there.

Many texts (`score_texts`, e.g. the lines of a log) are scored in batches: read in groups,
sorted by length, right-padded into (B, T) batches. A recurrent model reads left to
right, so padding after a text's end cannot change that text's scores, and the padded
positions are masked out of the sums.

One long text (`score_stream`, a file read block by block, and `score`) is read as
parallel streams, each warmed up on the characters before it (see `streams`): as fast
as batches of lines, and within about 0.005 bits per character of reading it exactly.
`exact=True` reads it exactly instead, as one stream carried from piece to piece.

Each reads in a `precision`: `auto` (the default) runs bf16 autocast where it is
measured faster on the machine and fp32 elsewhere, leaving short whole texts in fp32
(see precision.py); `fp32` gives exactly the scores of before; exact reading is fp32.

Every pass goes through the model in time slices of at most about `max_elements`
activations, as `CharRNN.advance` does, so memory stays bounded however long a text is.
"""

from __future__ import annotations

import math
import queue
import threading
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..model.charrnn import IGNORE_INDEX, CharRNN
from .precision import Choice, check_precision, scoring_choice
from .streams import MAX_ELEMENTS, text_loss
from ..data.vocab import MAX_CODE_POINT, Vocabulary

UNKNOWN_CHAR_BITS = math.log2(MAX_CODE_POINT)  # about 20.09 bits per unknown character
BATCH_POSITIONS = 1 << 15  # padded positions per batch, B x T
MAX_BATCH_ROWS = 512  # texts per batch
GROUP_TEXTS = 8192  # texts read ahead, sorted and batched together
GROUP_CHARS = 1 << 20  # ... or fewer, once they hold this many characters
LN2 = math.log(2.0)


def score(model: CharRNN, vocab: Vocabulary, text: str,
          max_elements: int = MAX_ELEMENTS, exact: bool = False,
          precision: str = "auto") -> dict:
    """The score of one text (see the module docstring for its keys); a long one read
    as warmed parallel streams unless `exact` (see `score_stream`)."""
    check_precision(precision, exact)
    if exact:
        return next(score_texts(model, vocab, [text], max_elements=max_elements,
                                precision="fp32"))
    return {**score_stream(model, vocab, [text], max_elements, precision=precision),
            "text": text}


def score_texts(model: CharRNN, vocab: Vocabulary, texts: Iterable[str],
                max_elements: int = MAX_ELEMENTS, batch_positions: int = BATCH_POSITIONS,
                max_batch_rows: int = MAX_BATCH_ROWS,
                before_waiting: Callable[[], None] | None = None,
                precision: str = "auto") -> Iterator[dict]:
    """Score each text on its own (a fresh state for each), yielding scores in input order.

    Texts are scored in groups of whatever has arrived, up to GROUP_TEXTS texts or
    GROUP_CHARS characters: a file is scored in big, efficient groups, while a slow
    stream (`tail -f app.log | charlstm score -l`) gets each line's score as it comes.
    `before_waiting` is called whenever the next text has not arrived yet. `precision`
    auto is measured (once per model and device) when the first text needs the model.
    """
    check_precision(precision, exact=False)  # at the call, before any text is read
    scorer = _Scorer(model, vocab, max_elements, precision)
    return (record for group in _arrived_groups(texts, before_waiting)
            for record in scorer.score_group(group, batch_positions, max_batch_rows))


_END = object()


def _arrived_groups(texts: Iterable[str], before_waiting: Callable[[], None] | None
                    ) -> Iterator[list[str]]:
    """The texts in groups: at least one, plus all that a reader thread has already read
    (up to the group limits). An error while reading is raised here, in order."""
    arrived: queue.Queue = queue.Queue(maxsize=GROUP_TEXTS)
    stop = threading.Event()

    def read() -> None:
        try:
            for text in texts:
                if not isinstance(text, str):
                    raise TypeError(f"texts to score must be str, not {type(text).__name__}")
                while not stop.is_set():
                    try:
                        arrived.put(text, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            arrived.put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            arrived.put(exc)

    reader = threading.Thread(target=read, name="charlstm-score-reader", daemon=True)
    reader.start()
    try:
        while True:
            group: list[str] = []
            size = 0
            try:
                item = arrived.get_nowait()
            except queue.Empty:
                if before_waiting is not None:
                    before_waiting()
                item = arrived.get()
            while True:
                if item is _END or isinstance(item, BaseException):
                    if group:
                        yield group
                    if isinstance(item, BaseException):
                        raise item
                    return
                group.append(item)
                size += len(item)
                if len(group) >= GROUP_TEXTS or size >= GROUP_CHARS:
                    break
                try:
                    item = arrived.get_nowait()
                except queue.Empty:
                    break
            yield group
    finally:
        stop.set()  # the consumer stopped early (a closed pipe): let the reader go


def score_stream(model: CharRNN, vocab: Vocabulary, pieces: Iterable[str],
                 max_elements: int = MAX_ELEMENTS, exact: bool = False,
                 precision: str = "auto") -> dict:
    """The score of one text given as consecutive pieces (a file read block by block),
    in bounded memory; the result is that of their concatenation, however it is cut.

    The text is read as parallel streams, each warmed on the characters before it
    (`streams.text_loss`): within about 0.005 bits per character of the exact score
    (docs/sampling.md), at the speed of batched passes. `exact` reads it as one stream
    instead, one character after another, the state carried across pieces, in fp32.
    `precision` auto leaves a text of fewer than precision.AUTO_MIN_CHARS characters in
    fp32 and measures nothing.
    """
    check_precision(precision, exact)
    scorer = _Scorer(model, vocab, max_elements, "fp32" if exact else precision)
    if exact:
        return _exact_stream(scorer, pieces)
    tally = {"characters": 0, "unknown": 0, "first_bits": 0.0}

    def known_ids() -> Iterator[np.ndarray]:
        for piece in pieces:
            known, unknown = scorer.encode(piece)
            if known.size and tally["characters"] - tally["unknown"] == 0:
                tally["first_bits"] = float(scorer.first_char_bits[known[0]])
            tally["characters"] += len(piece)
            tally["unknown"] += unknown
            yield known

    nats, _ = text_loss(model, known_ids(), max_elements=max_elements, precision=precision)
    bits = tally["first_bits"] + nats / LN2 + tally["unknown"] * UNKNOWN_CHAR_BITS
    return _record(None, tally["characters"], bits, tally["unknown"])


def _exact_stream(scorer: _Scorer, pieces: Iterable[str]) -> dict:
    """`score_stream` one character after another: one stream, its state carried."""
    state, last_id = None, None  # the state before last_id, the last known character
    bits, characters, unknown = 0.0, 0, 0
    for piece in pieces:
        known, piece_unknown = scorer.encode(piece)
        characters += len(piece)
        unknown += piece_unknown
        if not known.size:
            continue
        if last_id is None:
            bits += float(scorer.first_char_bits[known[0]])
            ids = known
        else:
            ids = np.concatenate([np.array([last_id], dtype=np.int64), known])
        if ids.size > 1:
            row_bits, state = scorer.sequence_bits([ids], state)
            bits += float(row_bits[0])
        last_id = int(ids[-1])
    return _record(None, characters, bits + unknown * UNKNOWN_CHAR_BITS, unknown)


def _record(text: str | None, characters: int, bits: float, unknown: int) -> dict:
    return {"text": text, "characters": characters, "bits": bits,
            "bits_per_char": bits / characters if characters else math.nan,
            "unknown": unknown}


class _Scorer:
    """The pieces shared by the scoring functions: encoding, the first-character
    distribution, and the batched pass through the model."""

    def __init__(self, model: CharRNN, vocab: Vocabulary, max_elements: int,
                 precision: str = "fp32"):
        if max_elements < 1:
            raise ValueError(f"max_elements must be at least 1, not {max_elements}")
        self.model, self.vocab, self.max_elements = model, vocab, max_elements
        self.requested, self._choice = precision, None  # the latter when first needed
        self.device = next(model.parameters()).device
        self.code_points = np.frombuffer(vocab.chars.encode("utf-32-le"), dtype=np.uint32)
        counts = np.asarray(vocab.counts or [1] * len(vocab), dtype=np.float64)
        with np.errstate(divide="ignore"):  # a zero count costs infinitely many bits
            self.first_char_bits = -np.log2(counts / counts.sum())  # (V,)

    @property
    def choice(self) -> Choice:
        """How the passes through the model run (precision, threads), decided at the
        first."""
        if self._choice is None:
            self._choice = scoring_choice(self.model, self.requested)
        return self._choice

    def encode(self, text: str) -> tuple[np.ndarray, int]:
        """The ids of the known characters of `text` (int64), and how many were unknown."""
        code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"),
                                    dtype=np.uint32)
        ids, known = self._lookup(code_points)
        return ids[known], int(code_points.size - known.sum())

    def _lookup(self, code_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each code point's id (int64) and whether it is in the vocabulary at all."""
        # the vocabulary is in code point order, so a binary search finds each id
        ids = np.searchsorted(self.code_points, code_points)
        known = self.code_points[np.minimum(ids, self.code_points.size - 1)] == code_points
        return ids.astype(np.int64), known

    def score_group(self, texts: list[str], batch_positions: int,
                    max_batch_rows: int) -> list[dict]:
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        code_points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"),
                                    dtype=np.uint32)
        ids, known = self._lookup(code_points)
        known_ids = ids[known]  # every text's known characters, one after another
        ends = np.cumsum(lengths)
        known_before = np.concatenate([[0], np.cumsum(known)])  # (N + 1,)
        known_start = known_before[ends - lengths]  # where each text's known ids begin
        known_length = known_before[ends] - known_start
        unknown = lengths - known_length

        bits = unknown * UNKNOWN_CHAR_BITS  # (texts,) float64
        has_known = known_length > 0
        bits[has_known] += self.first_char_bits[known_ids[known_start[has_known]]]
        # texts with two or more known characters need the model, longest first
        order = [int(i) for i in np.argsort(-known_length, kind="stable")
                 if known_length[i] > 1]
        batch: list[int] = []

        def add_batch() -> None:
            rows = [known_ids[known_start[j]:known_start[j] + known_length[j]] for j in batch]
            bits[batch] += self.sequence_bits(rows)[0]

        for i in order:
            if batch and (len(batch) >= max_batch_rows
                          or (len(batch) + 1) * known_length[batch[0]] > batch_positions):
                add_batch()
                batch = []
            batch.append(i)
        if batch:
            add_batch()
        return [_record(text, int(n), float(b), int(u))
                for text, n, b, u in zip(texts, lengths, bits, unknown)]

    @torch.inference_mode()
    def sequence_bits(self, rows: list[np.ndarray], state=None) -> tuple[np.ndarray, object]:
        """The bits of characters 1.. of each row of ids given the ones before it (the
        first is the input only), and the state after the inputs (meaningful only when
        the rows are of equal length). `state` continues a previous call's."""
        count, width = len(rows), max(row.size for row in rows) - 1
        inputs = np.zeros((count, width), dtype=np.int64)  # (B, T), right-padded
        targets = np.full((count, width), IGNORE_INDEX, dtype=np.int64)  # padding: no loss
        for r, row in enumerate(rows):
            inputs[r, :row.size - 1] = row[:-1]
            targets[r, :row.size - 1] = row[1:]
        inputs, targets = (torch.from_numpy(a).to(self.device) for a in (inputs, targets))
        config = self.model.config
        step = max(1, self.max_elements // (count * max(config.hidden_size,
                                                        config.vocab_size)))
        total = torch.zeros(count, dtype=torch.float64, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.choice.running(self.device):
                for start in range(0, width, step):
                    piece = slice(start, start + step)
                    logits, _, state = self.model(inputs[:, piece], state)  # (B, t, V)
                    nats = torch.nn.functional.cross_entropy(  # (B x t,), 0 at padding
                        logits.float().flatten(0, 1), targets[:, piece].flatten(),
                        ignore_index=IGNORE_INDEX, reduction="none")
                    total += nats.view(count, -1).double().sum(dim=1)
        finally:
            self.model.train(was_training)
        return (total / LN2).cpu().numpy(), state


def char_bits(model: CharRNN, vocab: Vocabulary, text: str,
              max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """The bits the model spends on each character of `text` (float64, one per code
    point), scored as `score` scores the whole: they add up to its "bits"."""
    scorer = _Scorer(model, vocab, max_elements)
    code_points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    ids, known = scorer._lookup(code_points)
    bits = np.full(code_points.size, UNKNOWN_CHAR_BITS)  # (T,)
    known_ids = ids[known]
    if not known_ids.size:
        return bits
    where_known = np.flatnonzero(known)
    per_known = np.empty(known_ids.size)
    per_known[0] = scorer.first_char_bits[known_ids[0]]
    inputs = torch.from_numpy(known_ids[None, :-1]).to(scorer.device)  # (1, K-1)
    targets = torch.from_numpy(known_ids[None, 1:]).to(scorer.device)
    config = model.config
    step = max(1, max_elements // max(config.hidden_size, config.vocab_size))
    state, pieces = None, []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, inputs.size(1), step):
                logits, _, state = model(inputs[:, start:start + step], state)  # (1, t, V)
                log_probs = torch.log_softmax(logits.float(), dim=-1)
                picked = log_probs.gather(-1, targets[:, start:start + step, None])
                pieces.append((-picked.double().flatten() / LN2).cpu().numpy())
    finally:
        model.train(was_training)
    if pieces:
        per_known[1:] = np.concatenate(pieces)
    bits[where_known] = per_known
    return bits
