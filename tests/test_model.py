"""Tests for charlstm.model.charrnn: the recurrent cells match their textbook equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from charlstm.model.charrnn import IGNORE_INDEX
from charlstm.errors import UsageError
from charlstm.model.charrnn import CharRNN, detach_state, state_from_list, state_to_list
from charlstm.settings import ModelConfig

V, E, H, L = 5, 5, 7, 2  # vocabulary, embedding, hidden size, layers
B, T = 3, 6


def small_model(cell: str, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    model = CharRNN(ModelConfig(vocab_size=V, model=cell, num_layers=L, hidden_size=H,
                                embed_size=E, dropout=0.0)).double().eval()
    # random biases too (the LSTM forget bias starts at a constant)
    with torch.no_grad():
        for name, param in model.rnn.named_parameters():
            if name.startswith("bias"):
                param.uniform_(-0.5, 0.5)
    return model


# ----------------------------------------------------------- reference implementations


def lstm_step(x, h, c, W_ih, W_hh, b_ih, b_hh):
    W_ii, W_if, W_ig, W_io = W_ih.chunk(4)
    W_hi, W_hf, W_hg, W_ho = W_hh.chunk(4)
    b_ii, b_if, b_ig, b_io = b_ih.chunk(4)
    b_hi, b_hf, b_hg, b_ho = b_hh.chunk(4)
    i = torch.sigmoid(x @ W_ii.T + b_ii + h @ W_hi.T + b_hi)
    f = torch.sigmoid(x @ W_if.T + b_if + h @ W_hf.T + b_hf)
    c_tilde = torch.tanh(x @ W_ig.T + b_ig + h @ W_hg.T + b_hg)
    o = torch.sigmoid(x @ W_io.T + b_io + h @ W_ho.T + b_ho)
    c = f * c + i * c_tilde
    h = o * torch.tanh(c)
    return h, c


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh):
    W_ir, W_iz, W_in = W_ih.chunk(3)
    W_hr, W_hz, W_hn = W_hh.chunk(3)
    b_ir, b_iz, b_in = b_ih.chunk(3)
    b_hr, b_hz, b_hn = b_hh.chunk(3)
    r = torch.sigmoid(x @ W_ir.T + b_ir + h @ W_hr.T + b_hr)
    z = torch.sigmoid(x @ W_iz.T + b_iz + h @ W_hz.T + b_hz)
    n = torch.tanh(x @ W_in.T + b_in + r * (h @ W_hn.T + b_hn))
    return (1 - z) * n + z * h


def rnn_step(x, h, W_ih, W_hh, b_ih, b_hh):
    return torch.tanh(x @ W_ih.T + b_ih + h @ W_hh.T + b_hh)


@torch.no_grad()
def reference_forward(model: CharRNN, idx: torch.Tensor, state):
    """Logits (B, T, V) and final state, one layer and time step at a time."""
    cell = model.config.model
    layer_input = model.embed.weight[idx]  # (B, T, E): an embedding is a row lookup
    if state is None:
        zeros = torch.zeros(L, idx.size(0), H, dtype=torch.float64)
        state = (zeros, zeros.clone()) if cell == "lstm" else zeros
    h_all = state[0] if cell == "lstm" else state
    c_all = state[1] if cell == "lstm" else None
    final_h, final_c = [], []
    for k in range(L):
        weights = [getattr(model.rnn, f"{name}_l{k}")
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h = h_all[k]
        c = c_all[k] if c_all is not None else None
        outputs = []
        for t in range(idx.size(1)):
            x = layer_input[:, t]
            if cell == "lstm":
                h, c = lstm_step(x, h, c, *weights)
            elif cell == "gru":
                h = gru_step(x, h, *weights)
            else:
                h = rnn_step(x, h, *weights)
            outputs.append(h)
        layer_input = torch.stack(outputs, dim=1)  # (B, T, H): the next layer's input
        final_h.append(h)
        final_c.append(c)
    logits = layer_input @ model.head.weight.T + model.head.bias
    h_n = torch.stack(final_h)
    return logits, ((h_n, torch.stack(final_c)) if cell == "lstm" else h_n)


def random_state(cell: str, generator: torch.Generator):
    def one():
        return torch.randn(L, B, H, dtype=torch.float64, generator=generator)
    return (one(), one()) if cell == "lstm" else one()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("start", ["zero", "random"])
def test_matches_textbook_equations(cell, start):
    model = small_model(cell, seed=1)
    generator = torch.Generator().manual_seed(2)
    idx = torch.randint(V, (B, T), generator=generator)
    state = None if start == "zero" else random_state(cell, generator)
    logits, loss, new_state = model(idx, state)
    expected_logits, expected_state = reference_forward(model, idx, state)
    assert loss is None
    assert logits.shape == (B, T, V)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=0)
    if cell == "lstm":
        for got, want in zip(new_state, expected_state):
            assert got.shape == (L, B, H)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    else:
        assert new_state.shape == (L, B, H)
        torch.testing.assert_close(new_state, expected_state, atol=1e-5, rtol=0)
    # the reference is not trivially satisfied: a different start state changes the logits
    other_state = random_state(cell, torch.Generator().manual_seed(99))
    other_logits, _ = reference_forward(model, idx, other_state)
    assert (other_logits - expected_logits).abs().max() > 1e-3


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_float32_matches_reference_and_state_carries(cell):
    """Two calls carrying the state equal one call on the whole sequence."""
    model = small_model(cell, seed=3)
    idx = torch.randint(V, (B, 2 * T), generator=torch.Generator().manual_seed(4))
    whole, _, whole_state = model(idx)
    first, _, state = model(idx[:, :T])
    second, _, second_state = model(idx[:, T:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-10, rtol=0)
    expected, _ = reference_forward(model, idx, None)
    model32 = model.float()
    logits32, _, _ = model32(idx)
    torch.testing.assert_close(logits32.double(), expected, atol=1e-5, rtol=0)


def test_forget_gate_bias_starts_at_one():
    torch.manual_seed(0)
    for layers in (1, 3):
        model = CharRNN(ModelConfig(vocab_size=V, model="lstm", num_layers=layers,
                                    hidden_size=H, embed_size=E))
        for k in range(layers):
            b_ih = getattr(model.rnn, f"bias_ih_l{k}")
            b_hh = getattr(model.rnn, f"bias_hh_l{k}")
            total = (b_ih + b_hh).detach()
            assert torch.equal(total[H:2 * H], torch.ones(H))  # the f gate (i, f, g, o)
            # other gates keep their random initialisation
            assert not torch.allclose(total[:H], torch.ones(H))
            assert not torch.allclose(total[3 * H:], torch.ones(H))


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_no_forget_bias_for_other_cells(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=V, model=cell, num_layers=2, hidden_size=H))
    total = (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).detach()
    for gate in total.split(H):
        assert not torch.allclose(gate, torch.ones(H))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_forward_shapes_and_loss(cell):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=11, model=cell, num_layers=2, hidden_size=9,
                         embed_size=4, dropout=0.2)
    model = CharRNN(config).eval()
    idx = torch.randint(11, (4, 10))
    targets = torch.randint(11, (4, 10))
    targets[0, :3] = IGNORE_INDEX
    logits, loss, state = model(idx, None, targets)
    assert logits.shape == (4, 10, 11)
    states = state if isinstance(state, tuple) else (state,)
    assert len(states) == (2 if cell == "lstm" else 1)
    assert all(s.shape == (2, 4, 9) for s in states)
    expected = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, expected)
    # the ignored targets carry no loss
    valid = targets != IGNORE_INDEX
    manual = -torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(loss, manual[valid].mean())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_initial_state_equals_none(cell):
    model = small_model(cell).float()
    idx = torch.randint(V, (B, T))
    state = model.initial_state(B)
    states = state if isinstance(state, tuple) else (state,)
    assert all(s.shape == (L, B, H) and not s.any() for s in states)
    with_zero, _, _ = model(idx, state)
    with_none, _, _ = model(idx)
    assert torch.equal(with_zero, with_none)


def test_num_parameters():
    model = CharRNN(ModelConfig(vocab_size=V, model="rnn", num_layers=1, hidden_size=H,
                                embed_size=E))
    expected = V * E + (H * E + H * H + 2 * H) + (H * V + V)
    assert model.num_parameters() == expected


@pytest.mark.parametrize("bad", [
    dict(model="transformer"), dict(vocab_size=0), dict(num_layers=0), dict(hidden_size=0),
    dict(embed_size=-1), dict(dropout=1.0), dict(dropout=-0.1),
])
def test_config_validation(bad):
    with pytest.raises(UsageError):
        ModelConfig(**{"vocab_size": 10, **bad})


def test_config_dict_round_trip_ignores_unknown_keys():
    config = ModelConfig(vocab_size=10, model="gru", num_layers=3, hidden_size=17,
                         embed_size=5, dropout=0.25)
    data = config.to_dict()
    assert data["hidden_size"] == 17 and data["model"] == "gru"
    assert ModelConfig.from_dict({**data, "something_new": 1}) == config


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_state_list_round_trip(cell):
    model = small_model(cell).float()
    _, _, state = model(torch.randint(V, (B, T)))
    tensors = state_to_list(state)
    assert isinstance(tensors, list)
    assert len(tensors) == (2 if cell == "lstm" else 1)
    assert all(not t.requires_grad for t in tensors)
    again = state_from_list(tensors, cell)
    if cell == "lstm":
        assert isinstance(again, tuple)
        assert all(torch.equal(a, b) for a, b in zip(again, state))
    else:
        assert torch.equal(again, state)
    assert state_to_list(None) == []
    assert state_from_list([], cell) is None


def test_detach_state():
    x = torch.ones(2, requires_grad=True) * 2
    assert detach_state(None) is None
    assert not detach_state(x).requires_grad
    h, c = detach_state((x, x * 3))
    assert not h.requires_grad and not c.requires_grad
    assert torch.equal(c, torch.full((2,), 6.0))


@pytest.mark.parametrize("layers", [1, 2])
def test_dropout_on_the_stack_input_in_training_only(layers):
    """Dropout reaches the embeddings too, so a single layer is regularised at both ends."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=10, num_layers=layers, hidden_size=16,
                                embed_size=32, dropout=0.5))
    seen = []
    model.rnn.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    idx = torch.randint(10, (4, 50))
    model.train()
    model(idx)
    zeros = (seen[-1] == 0).float().mean().item()
    assert 0.4 < zeros < 0.6
    model.eval()
    model(idx)
    assert torch.equal(seen[-1], model.embed(idx))
