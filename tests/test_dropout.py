"""Tests for charlstm.model.dropout: locked dropout and weight drop on the fused modules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from charlstm.model.dropout import dropout, dropout_mask, dropped_weights, run_with_weight_drop
from charlstm.model.charrnn import CharRNN

from charlstm.settings import ModelConfig

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def test_locked_dropout_keeps_one_mask_per_stream_over_its_time_steps():
    torch.manual_seed(0)
    x = torch.ones(16, 50, 32)
    out = dropout(x, 0.25, training=True, locked=True)  # 0.25: a whole number of 1/256
    dropped = out == 0  # (B, T, C)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # same at every step
    assert not torch.equal(dropped[0], dropped[1])  # but not across streams
    assert 0.2 < dropped.float().mean().item() < 0.3
    assert torch.allclose(out[~dropped], torch.tensor(1 / 0.75))  # the mean is kept
    assert dropout(x, 0.4, training=False, locked=True) is x
    assert dropout(x, 0.0, training=True, locked=True) is x


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_fresh_dropout_masks_each_element_at_the_rate_keeping_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(16, 50, 64, dtype=torch.float64)
    out = dropout(x, p, training=True, locked=False)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - p) < 0.01
    assert not torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # not locked
    assert abs(out.mean().item() - 1.0) < 0.02
    assert out.dtype == torch.float64


def test_the_mask_keeps_the_dtype_and_draws_every_byte_uniformly():
    torch.manual_seed(0)
    mask = dropout_mask((1000, 1000), 0.5, torch.empty(0, dtype=torch.bfloat16))
    assert mask.dtype == torch.bfloat16
    zero = (mask == 0).float()
    # all 8 bytes of each random word are used: every position mod 8 drops about half
    rates = zero.flatten()[:999_992].view(-1, 8).mean(0)
    assert torch.all((rates - 0.5).abs() < 0.01), rates


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("p", [0.25, 0.5])
def test_weight_drop_runs_the_fused_module_on_masked_recurrent_weights(cell, p):
    torch.manual_seed(0)
    rnn = CELLS[cell](6, 16, 2, batch_first=True)
    x, state = torch.randn(3, 7, 6), None
    torch.manual_seed(5)
    out, _ = run_with_weight_drop(rnn, p, x, state)
    torch.manual_seed(5)
    dropped = dropped_weights(rnn, p)
    assert sorted(dropped) == ["weight_hh_l0", "weight_hh_l1"]
    for name, weight in dropped.items():
        raw = getattr(rnn, name)
        zero = weight == 0
        assert abs(zero.float().mean().item() - p) < 0.05
        assert torch.allclose(weight[~zero], raw[~zero] / (1 - p))
    # the same as a copy of the module holding the masked weights
    masked = copy.deepcopy(rnn)
    with torch.no_grad():
        for name, weight in dropped.items():
            getattr(masked, name).copy_(weight)
    assert torch.allclose(out, masked(x)[0], atol=1e-6)
    # the module itself still holds its raw weights
    assert not any(getattr(rnn, name).eq(0).any() for name in dropped)


def test_weight_drop_gradients_reach_the_raw_weights_where_kept():
    torch.manual_seed(0)
    rnn, x = nn.LSTM(4, 8, batch_first=True), torch.randn(2, 5, 4)
    torch.manual_seed(3)
    run_with_weight_drop(rnn, 0.5, x, None)[0].sum().backward()
    torch.manual_seed(3)
    kept = dropped_weights(rnn, 0.5)["weight_hh_l0"] != 0
    grad = rnn.weight_hh_l0.grad
    assert grad.abs()[kept].sum() > 0
    assert torch.equal(grad[~kept], torch.zeros_like(grad[~kept]))


def model(weight_drop: float, locked: bool = True) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=10, num_layers=2, hidden_size=16, embed_size=8,
                               dropout=0.0, weight_drop=weight_drop, locked_dropout=locked))


def test_the_model_drops_weights_in_training_only_and_each_step_anew():
    with_drop, without = model(0.5), model(0.0)
    idx = torch.randint(10, (4, 12))
    with_drop.train()
    first, second = with_drop(idx)[0], with_drop(idx)[0]
    assert not torch.allclose(first, second)  # a fresh mask each call
    assert not torch.allclose(first, without.train()(idx)[0])
    with_drop.eval()
    assert torch.equal(with_drop(idx)[0], without.eval()(idx)[0])  # raw weights in eval


def test_weight_drop_masks_come_from_the_seeded_generator():
    """What exact resume rests on: the same generator state draws the same masks."""
    net, idx = model(0.3), torch.randint(10, (4, 12))
    net.train()
    torch.manual_seed(11)
    first = net(idx)[0]
    torch.manual_seed(11)
    assert torch.equal(net(idx)[0], first)


def test_set_regularisation_changes_a_built_model():
    net = model(0.0)
    net.set_regularisation(dropout=0.2, weight_drop=0.4)
    assert net.config.dropout == 0.2 and net.rnn.dropout == 0.2
    assert net.config.weight_drop == 0.4
    net.set_regularisation(dropout=0.1)
    assert net.config.weight_drop == 0.4 and net.config.dropout == 0.1
    assert net.rnn.dropout == 0.1


@pytest.mark.parametrize("locked", [True, False])
def test_the_config_chooses_locked_or_fresh_input_dropout(locked):
    torch.manual_seed(0)
    net = CharRNN(ModelConfig(vocab_size=10, hidden_size=16, embed_size=32, dropout=0.5,
                              weight_drop=0.0, locked_dropout=locked)).train()
    seen = []
    net.rnn.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    net(torch.zeros(4, 40, dtype=torch.long))  # one character: the same embedding each step
    zero = seen[-1] == 0  # (B, T, E)
    assert torch.equal(zero, zero[:, :1].expand_as(zero)) == locked


@pytest.mark.parametrize("bad", [dict(weight_drop=1.0), dict(weight_drop=-0.1)])
def test_weight_drop_must_be_a_rate(bad):
    with pytest.raises(ValueError, match="weight_drop"):
        ModelConfig(vocab_size=10, **bad)
