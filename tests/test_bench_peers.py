"""The pure pieces of bench/peers.py and bench/nanogpt.py: nanoGPT's scoring windows, the
budget's iterations, the data it is given, and the results table. None needs nanoGPT."""

from __future__ import annotations

import math
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import nanogpt  # noqa: E402
import peers  # noqa: E402

VOCAB = 7


def toy_tokens(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, n).astype(np.uint16)


@pytest.mark.parametrize("start, end, block, windows", [
    (900, 1000, 64, 64),  # a partial last window
    (900, 1000, 10, 3),  # several batches, windows filling them exactly
    (1, 5, 64, 64),  # a span shorter than one window, right after the first character
    (500, 1000, 7, 4),  # neither windows nor batches come out even
])
def test_windows_predict_every_character_once_from_inside_their_window(start, end, block,
                                                                       windows):
    tokens = toy_tokens()
    targets_seen = []
    for inputs, targets in nanogpt.window_batches(tokens, start, end, block, windows):
        assert inputs.shape == targets.shape and inputs.shape[1] == block
        assert inputs.shape[0] <= windows
        for row_inputs, row_targets in zip(inputs.numpy(), targets.numpy()):
            valid = row_targets != nanogpt.IGNORE
            assert valid[0] and (np.diff(valid.astype(int)) <= 0).all()  # padding at the end
            row = row_targets[valid]
            first = start + len(targets_seen)
            # the window's inputs are its targets shifted by one: the first from before it
            assert row_inputs[0] == tokens[first - 1]
            assert (row_inputs[1:len(row)] == row[:-1]).all()
            targets_seen.extend(row)
    assert targets_seen == list(tokens[start:end])


def test_windowed_loss_of_a_previous_character_model_is_its_loss_on_the_split():
    tokens = toy_tokens(2000, seed=1)
    table = torch.randn(VOCAB, VOCAB, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0))
    start, end = 1800, 2000

    def bigram(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return table[inputs]  # (B, T, V)

    expected = -np.mean([torch.log_softmax(table[int(tokens[j - 1])], 0)[int(tokens[j])].item()
                         for j in range(start, end)])
    loss = nanogpt.windowed_loss(bigram, tokens, start, end, block_size=16)
    assert loss == pytest.approx(expected, rel=1e-9)


def test_windowed_loss_restarts_the_context_every_block_size_from_the_split_start():
    tokens = toy_tokens(600, seed=2)
    start, end, block = 413, 600, 10  # the split starts off any multiple of the block

    def context_length(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*inputs.shape, VOCAB, dtype=torch.float64)
        logits[..., 0] = torch.arange(1, inputs.shape[1] + 1)  # the context it has seen
        return logits

    def cost(j: int) -> float:
        seen = (j - start) % block + 1
        log_total = math.log(math.exp(seen) + VOCAB - 1)
        return log_total - (seen if tokens[j] == 0 else 0)

    expected = np.mean([cost(j) for j in range(start, end)])
    loss = nanogpt.windowed_loss(context_length, tokens, start, end, block)
    assert loss == pytest.approx(expected, rel=1e-9)


def measured_run(max_iters: int, startup: float, per_iteration: float,
                 first_extra: float) -> nanogpt.Run:
    """A run as train.py logs it: max_iters + 1 iterations, the first slower."""
    times = [per_iteration + first_extra] + [per_iteration] * max_iters
    return nanogpt.Run(max_iters, startup + sum(times), times, Path("ckpt.pt"))


def test_a_budget_of_a_runs_own_wall_clock_gives_back_its_iterations():
    run = measured_run(2000, startup=4.0, per_iteration=0.0615, first_extra=1.5)
    assert nanogpt.iterations_for_budget(run.seconds, *run.pace()) == 2000


@pytest.mark.parametrize("budget", [600.0, 70.0, 1234.5])
def test_a_budget_is_filled_to_the_nearest_evaluation(budget):
    run = measured_run(250, startup=3.0, per_iteration=0.07, first_extra=0.4)
    startup, per_iteration = run.pace()
    iterations = nanogpt.iterations_for_budget(budget, startup, per_iteration)
    assert iterations % nanogpt.EVAL_INTERVAL == 0
    predicted = startup + (iterations + 1) * per_iteration
    assert abs(predicted - budget) <= nanogpt.EVAL_INTERVAL / 2 * per_iteration + 1e-9


def test_a_budget_under_one_evaluation_interval_gives_its_iterations():
    assert nanogpt.iterations_for_budget(10.0, 2.0, 0.5) == 15
    assert nanogpt.iterations_for_budget(1.0, 2.0, 0.5) == 1  # never none


def test_the_recipe_arguments_follow_the_iterations():
    arguments = nanogpt.arguments(2000, "out-1")
    assert "--max_iters=2000" in arguments and "--lr_decay_iters=2000" in arguments
    assert "--out_dir=out-1" in arguments and "--compile=False" in arguments
    assert not any(a.startswith("--eval_interval") for a in arguments)
    # a short run evaluates (and so saves its checkpoint) at its end
    assert "--eval_interval=20" in nanogpt.arguments(20, "out")


def test_prepared_data_is_the_text_split_where_charlstm_splits_it(tmp_path):
    checkout = tmp_path / "nanoGPT"
    checkout.mkdir()
    (checkout / "configurator.py").write_text("# stands in for nanoGPT's\n")
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    val_start = peers.split_point(len(text), 0.1)
    work = tmp_path / "work"
    ids = nanogpt.prepare(text, val_start, work, checkout)
    data = work / "data" / nanogpt.DATASET
    meta = pickle.loads((data / "meta.pkl").read_bytes())
    train = np.fromfile(data / "train.bin", dtype=np.uint16)
    val = np.fromfile(data / "val.bin", dtype=np.uint16)
    assert len(val) == len(text) - val_start
    assert "".join(meta["itos"][int(i)] for i in np.concatenate([train, val])) == text
    assert (np.concatenate([train, val]) == ids).all()
    assert meta["vocab_size"] == len(set(text))
    assert (work / "configurator.py").resolve() == (checkout / "configurator.py").resolve()


def test_the_results_table_has_one_row_per_comparison_and_the_ratio():
    rows = [peers.Comparison("recipe", 2000, 1750, 127.04, 1.892, 1234, 128.4, 1.525,
                             "lstm 1x512"),
            peers.Comparison("10m", 9500, 9500, 590.0, 1.574, 7531, 601.2, 1.465, "lstm",
                             "weight drop")]
    lines = peers.results_table(rows).splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == len(peers.HEADER) + 1 for line in lines)
    first = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert first[:5] == ["recipe", "2,000 (1,750)", "127.0 s", "1.8920", "charlstm"]
    ratio = first[peers.HEADER.index("charlstm / nanoGPT")]
    assert float(ratio) == pytest.approx(1.525 / 1.892, abs=5e-4)
    assert "9,500 (9,500)" in lines[3] and "7,531" in lines[3] and "weight drop" in lines[3]


def test_a_variant_under_another_interpreter_is_described_by_its_checkout():
    import charlstm

    described = peers.checkout_of(sys.executable)
    assert described.startswith(str(Path(charlstm.__file__).resolve().parents[1]))


def test_variant_python_must_name_a_variant(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(peers.nanogpt, "check_checkout", lambda path: None)
    monkeypatch.setattr(sys, "argv", ["peers.py", "--nanogpt", str(tmp_path),
                                      "--variant", "new=", "--variant-python", "old=python3"])
    with pytest.raises(SystemExit):
        peers.parse_arguments()
    assert "--variant-python names no --variant: old" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["peers.py", "--nanogpt", str(tmp_path), "--variant",
                                      "old=--seed 1", "--variant-python", "old=python3"])
    assert peers.parse_arguments().pythons == {"old": "python3"}
