"""The precision of scoring (charlstm.infer.precision): bf16 stays within the documented
tolerance of the exact fp32 score; exact reading is fp32 whatever is asked; auto measures
once per model shape and device, and never for a short whole text; fp32 gives the scores
of before.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import charlstm
from charlstm.errors import UsageError
from charlstm.infer import precision, scoring
from charlstm.model.charrnn import CharRNN
from charlstm.settings import ModelConfig

from conftest import TINY_TEXT, invoke, isolate_cli, one_line_error

BF16_TOLERANCE = 0.01  # bits per character, as docs/sampling.md and precision.py say


@pytest.fixture(autouse=True)
def fresh_choices(tmp_path, monkeypatch):
    isolate_cli(tmp_path, monkeypatch)
    precision.forget_choices()
    yield
    precision.forget_choices()


@pytest.fixture(scope="module")
def lm(trained_run) -> charlstm.LanguageModel:
    return charlstm.load(trained_run, device="cpu")


@pytest.fixture
def measured(monkeypatch):
    """Make auto's measurement choose `answer["precision"]` on `answer["threads"]` and
    count the measurements."""
    answer = {"precision": "bf16", "threads": None, "calls": 0}

    def fake_measurement(model):
        answer["calls"] += 1
        return precision.Choice(answer["precision"], answer["threads"], "faked")

    monkeypatch.setattr(precision, "measured_choice", fake_measurement)
    return answer


@pytest.fixture
def head_dtypes(lm):
    """The dtypes of the output layer's logits in each pass, as they are computed."""
    seen: list[torch.dtype] = []
    handle = lm.model.head.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    yield seen
    handle.remove()


def test_bf16_whole_text_is_within_the_tolerance_of_the_exact_fp32_score(lm):
    text = TINY_TEXT * 3  # about 19,000 characters: read as parallel streams
    exact = lm.score(text, exact=True)["bits_per_char"]
    fp32 = lm.score(text, precision="fp32")["bits_per_char"]
    bf16 = lm.score(text, precision="bf16")["bits_per_char"]
    assert bf16 != fp32  # bf16 really ran
    assert abs(bf16 - exact) < BF16_TOLERANCE
    assert abs(fp32 - exact) < 0.005  # the streams' own documented difference


def test_exact_is_fp32_whatever_auto_would_choose(lm, measured, head_dtypes, monkeypatch):
    monkeypatch.setattr(precision, "AUTO_MIN_CHARS", 10)  # auto would measure: bf16
    text = TINY_TEXT[:3000]
    lm.score(text, exact=True)
    lm.score_stream([text[:1000], text[1000:]], exact=True)
    assert head_dtypes and set(head_dtypes) == {torch.float32}
    assert measured["calls"] == 0
    head_dtypes.clear()
    lm.score(text)  # not exact: the measured choice
    assert set(head_dtypes) == {torch.bfloat16}


def test_exact_with_another_precision_is_a_usage_error(lm):
    with pytest.raises(UsageError, match="fp32"):
        lm.score("the dog", exact=True, precision="bf16")
    with pytest.raises(UsageError, match="precision"):
        lm.score_lines(["the dog"], precision="fp64")  # at the call, before any line


def test_auto_measures_once_per_model_shape_and_device(lm, measured, head_dtypes):
    lines = ["the lazy dog.", "all that glitters"]
    first = list(lm.score_lines(lines))
    again = list(lm.score_lines(lines))
    assert measured["calls"] == 1
    assert first == again and set(head_dtypes) == {torch.bfloat16}
    # another model of the same shape on the same device: the choice kept
    same_shape = charlstm.LanguageModel(CharRNN(lm.config), lm.vocab)
    list(same_shape.score_lines(lines))
    assert measured["calls"] == 1
    # another shape is measured on its own
    config = ModelConfig(**{**lm.config.__dict__, "hidden_size": 32})
    list(charlstm.LanguageModel(CharRNN(config), lm.vocab).score_lines(lines))
    assert measured["calls"] == 2


def test_auto_leaves_a_short_whole_text_in_fp32_without_measuring(lm, measured, head_dtypes):
    text = TINY_TEXT * 3
    assert len(text) < precision.AUTO_MIN_CHARS
    assert lm.score(text)["bits"] == lm.score(text, precision="fp32")["bits"]
    assert measured["calls"] == 0 and set(head_dtypes) == {torch.float32}


def test_auto_reads_a_long_whole_text_in_the_measured_precision(lm, measured, monkeypatch):
    monkeypatch.setattr(precision, "AUTO_MIN_CHARS", 5000)
    text = TINY_TEXT * 3
    pieces = [text[i:i + 999] for i in range(0, len(text), 999)]
    auto = lm.score_stream(pieces)
    assert measured["calls"] == 1
    assert auto["bits"] == lm.score(text, precision="bf16")["bits"]
    measured["precision"] = "fp32"
    precision.forget_choices()
    assert lm.score(text)["bits"] == lm.score(text, precision="fp32")["bits"]


@torch.inference_mode()
def bits_as_before(lm, texts: list[str]) -> list[float]:
    """Per-line bits as sequence_bits computed them before precisions: log_softmax over
    fp32 logits, the target's picked, padding masked, summed in float64."""
    scorer = scoring._Scorer(lm.model, lm.vocab, scoring.MAX_ELEMENTS)
    rows = [scorer.encode(text)[0] for text in texts]
    width = max(row.size for row in rows) - 1
    inputs = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for r, row in enumerate(rows):
        inputs[r, :row.size - 1] = torch.from_numpy(row[:-1])
        targets[r, :row.size - 1] = torch.from_numpy(row[1:])
        mask[r, :row.size - 1] = True
    logits, _, _ = lm.model(inputs)
    picked = torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None]).squeeze(-1)
    total = -torch.where(mask, picked, 0.0).double().sum(dim=1)
    first = [scorer.first_char_bits[row[0]] for row in rows]
    return [f + t / math.log(2) for f, t in zip(first, total.tolist())]


def test_fp32_per_line_scores_are_those_of_before(lm):
    texts = ["the lazy dog.", "a stitch in time saves nine.", "xyz"]
    records = list(lm.score_lines(texts, precision="fp32"))
    assert [r["bits"] for r in records] == pytest.approx(bits_as_before(lm, texts),
                                                         rel=1e-12)


def test_command_line_precision(trained_run, lm):
    text = "the lazy dog.\nall that glitters\n"
    fp32 = invoke("score", trained_run, "-", "--per-line", "--precision", "fp32",
                  input=text)
    assert fp32.exit_code == 0, fp32.stderr
    expected = [f"{r['bits_per_char']:.4f}\t{r['text']}"
                for r in lm.score_lines(text.splitlines(), precision="fp32")]
    assert fp32.stdout.splitlines() == expected
    for args in (["--exact", "--precision", "bf16"], ["--per-char", "--precision", "bf16"],
                 ["--precision", "fp64"], ["--precision", "fp16"]):
        result = invoke("score", trained_run, "-", *args, input=text)
        assert result.exit_code == 2, (args, result.stdout)
        assert "precision" in one_line_error(result.stderr)


def test_the_measured_thread_count_runs_the_passes_and_is_restored(lm, measured):
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that one thread is a change
    everyone = torch.get_num_threads()
    measured["threads"] = 1
    seen: list[int] = []
    handle = lm.model.head.register_forward_hook(
        lambda m, i, out: seen.append(torch.get_num_threads()))
    try:
        list(lm.score_lines(["the lazy dog.", "all that glitters"]))
    finally:
        handle.remove()
        after = torch.get_num_threads()
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    assert after == everyone


def test_the_real_measurement_chooses_a_precision_and_threads_it_tried(lm):
    choice = precision.measured_choice(lm.model)  # a few tiny passes
    assert choice.precision in ("fp32", "bf16")
    assert choice.threads in (1, torch.get_num_threads())
    assert "fp32" in choice.note or "bf16" in choice.note


def test_overlapping_passes_share_one_thread_change_and_the_last_restores_it():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    one = precision.Choice("fp32", threads=1)
    try:
        first, second = one.running(torch.device("cpu")), one.running(torch.device("cpu"))
        first.__enter__()
        second.__enter__()  # as serve's second request would, while the first runs
        assert torch.get_num_threads() == 1
        first.__exit__(None, None, None)  # the first leaves: the second still runs on 1
        assert torch.get_num_threads() == 1
        second.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def span_loss_as_before(model, tokens, start, end, streams, seq_len, warmup):
    """streams.span_loss as it was before precisions: fp32, no_grad, the predictions
    counted from the targets."""
    from charlstm.infer.streams import eval_batches
    from charlstm.model.charrnn import IGNORE_INDEX

    warm, chunks = eval_batches(tokens, start, end, streams, seq_len, warmup)
    model.eval()
    total, count = torch.zeros((), dtype=torch.float64), 0
    state = model.advance(warm) if warm is not None else None
    for inputs, targets in chunks:
        logits, _, state = model(inputs, state)
        total += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX,
            reduction="sum")
        count += int((targets != IGNORE_INDEX).sum())
    return total, count


def test_evaluation_in_fp32_is_as_before_and_in_bf16_close(lm):
    from charlstm.infer.streams import span_loss

    tokens = np.array(lm.vocab.encode(TINY_TEXT * 2), dtype=np.int64)
    start, end = 3000, len(tokens) - 5
    before = span_loss_as_before(lm.model, tokens, start, end, 8, 64, 128)
    fp32 = span_loss(lm.model, tokens, start, end, 8, 64, 128, "fp32")
    assert fp32[1] == before[1] == end - start
    assert fp32[0].item() == before[0].item()
    bf16 = span_loss(lm.model, tokens, start, end, 8, 64, 128, "bf16")
    per_char = abs(bf16[0].item() - fp32[0].item()) / fp32[1] / math.log(2)
    assert 0 < per_char < BF16_TOLERANCE
