"""charlstm inspect and the state walk under it: the walk's equations against the fused
modules, a planted unit that --find must find, gate saturation against the dumped
gates, the views, the Python API and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import charlstm
from charlstm.checkpoint import Checkpoint
from charlstm.data.vocab import Vocabulary
from charlstm.infer.inspect import MIN_FIND_CHARS
from charlstm.infer.properties import NAMES, text_properties
from charlstm.infer.scoring import UNKNOWN_CHAR_BITS, char_bits
from charlstm.infer.states import StateWalk
from charlstm.model.charrnn import CharRNN, ModelConfig

from conftest import invoke, one_line_error, run_cli

CODE = "def f(x):\n    return [x, (x + 1)]  # one\n\n    s = 'a (b' + \"c\"\n" * 12


def small_model(kind: str, vocab: Vocabulary, layers: int = 2, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=len(vocab), model=kind, num_layers=layers,
                         hidden_size=12, embed_size=6, dropout=0.0)
    return CharRNN(config).eval()


def save_run(model: CharRNN, vocab: Vocabulary, path: Path) -> Path:
    Checkpoint(model_config=model.config.to_dict(), vocab=vocab.to_dict(),
               model=model.state_dict()).save(path)
    return path


def walk_all(model, vocab, text, chunk_chars, gates=True):
    chunks = list(StateWalk(model, vocab, gates=gates, predictions=True,
                            chunk_chars=chunk_chars).walk([text[:50], text[50:]]))
    return chunks, {
        "bits": np.concatenate([c.bits for c in chunks]),
        "log_probs": np.concatenate([c.log_probs for c in chunks]),
        "layers": [{name: np.concatenate([getattr(c.layers[n], name) for c in chunks])
                    if getattr(chunks[0].layers[n], name) is not None else None
                    for name in ("hidden", "cell")} |
                   {g: np.concatenate([c.layers[n].gates[g] for c in chunks])
                    for g in chunks[0].layers[n].gates}
                   for n in range(model.config.num_layers)]}


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_the_walk_follows_the_fused_module_at_every_layer(kind):
    vocab = Vocabulary.from_text(CODE)
    model = small_model(kind, vocab)
    _, walked = walk_all(model, vocab, CODE, chunk_chars=37)
    ids = torch.tensor([vocab.chars.index(c) for c in CODE])
    with torch.no_grad():
        x = model.embed(ids)[None]
        expected_h, state = [], None
        for n in range(2):  # the fused stack's layers one at a time, via its top output
            fused = CharRNN(ModelConfig(**{**model.config.to_dict(), "num_layers": n + 1}))
            fused.load_state_dict({k: v for k, v in model.state_dict().items()
                                   if not k[-1].isdigit() or int(k[-1]) <= n})
            out, state = fused.eval().rnn(x)
            expected_h.append(out[0].numpy())
        logits, _, _ = model(ids[None])
    for n, layer in enumerate(walked["layers"]):
        np.testing.assert_allclose(layer["hidden"], expected_h[n], atol=1e-5)
        h, before = layer["hidden"], np.concatenate([np.zeros((1, 12)), layer["hidden"][:-1]])
        if kind == "lstm":  # the cell state by the equations gives back the fused h
            np.testing.assert_allclose(layer["output"] * np.tanh(layer["cell"]), h, atol=1e-5)
            np.testing.assert_allclose(layer["cell"][-1], state[1][n, 0].numpy(), atol=1e-5)
            cell_before = np.concatenate([np.zeros((1, 12)), layer["cell"][:-1]])
            np.testing.assert_allclose(layer["forget"] * cell_before + layer["input"]
                                       * layer["cell_input"], layer["cell"], atol=1e-5)
        elif kind == "gru":
            np.testing.assert_allclose((1 - layer["update"]) * layer["new"]
                                       + layer["update"] * before, h, atol=1e-5)
    np.testing.assert_allclose(walked["log_probs"],
                               torch.log_softmax(logits[0], -1).numpy(), atol=1e-5)
    np.testing.assert_allclose(walked["bits"], char_bits(model, vocab, CODE), atol=1e-4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_parallel_streams_give_nearly_the_exact_values(kind):
    vocab = Vocabulary.from_text(CODE)
    model = small_model(kind, vocab)
    exact = list(StateWalk(model, vocab, gates=True).walk([CODE]))
    streamed = list(StateWalk(model, vocab, gates=True, exact=False, streams=4, warmup=40,
                              chunk_chars=300).walk([CODE[:100], CODE[100:]]))
    assert [len(c.text) for c in streamed][:2] == [300, 300]
    for n in range(2):
        ours = np.concatenate([c.layers[n].hidden for c in streamed])
        theirs = np.concatenate([c.layers[n].hidden for c in exact])
        assert np.abs(ours - theirs).max() < 1e-3  # the warm-ups' memory has faded
        if kind == "lstm":  # within every stream the equations still hold exactly
            cell = np.concatenate([c.layers[n].cell for c in streamed])
            output = np.concatenate([c.layers[n].gates["output"] for c in streamed])
            np.testing.assert_allclose(output * np.tanh(cell), ours, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([c.bits for c in streamed]),
                               np.concatenate([c.bits for c in exact]), atol=1e-2)


def test_unknown_characters_keep_the_state_and_cost_what_score_charges():
    vocab = Vocabulary.from_text(CODE)
    model = small_model("lstm", vocab)
    text = "€def f(x):\n  €€ return x\n"
    _, walked = walk_all(model, vocab, text, chunk_chars=5)
    np.testing.assert_allclose(walked["bits"], char_bits(model, vocab, text), atol=1e-4)
    hidden = walked["layers"][1]["hidden"]
    assert walked["bits"][0] == UNKNOWN_CHAR_BITS
    assert not hidden[0].any()  # nothing read yet: the zero state
    at = text.index("€€")
    np.testing.assert_array_equal(hidden[at], hidden[at - 1])
    np.testing.assert_array_equal(hidden[at + 1], hidden[at - 1])


def planted_bracket_model() -> tuple[CharRNN, Vocabulary, str]:
    """An LSTM whose cell unit 3 of layer 1 counts open brackets: its input and forget
    gates always open, its candidate +1 on '(' and -1 on ')', nothing from the state."""
    rng = np.random.default_rng(5)
    parts, depth = [], 0
    for _ in range(900):
        choice = rng.choice(["(", ")", "a", "b", " ", "\n"], p=[.14, .14, .3, .2, .15, .07])
        if choice == ")" and depth == 0 or choice == "(" and depth >= 5:
            choice = "a"
        depth += {"(": 1, ")": -1}.get(choice, 0)
        parts.append(choice)
    text = "".join(parts) + ")" * depth
    vocab = Vocabulary.from_text(text)
    model = small_model("lstm", vocab, seed=3)
    hidden, unit = 12, 3
    layer = model.rnn
    with torch.no_grad():
        for name in ("weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"):
            getattr(layer, name)[unit::hidden].zero_()  # the unit's row in every gate
        layer.bias_ih_l1[unit] = 30.0  # input gate open
        layer.bias_ih_l1[hidden + unit] = 30.0  # forget gate open: it keeps its count
        layer.bias_ih_l1[3 * hidden + unit] = 30.0  # output gate open
        # layer 1 reads layer 0's h: make layer 0's unit 0 say +1 on '(' and -1 on ')'
        model.embed.weight.zero_()
        model.embed.weight[vocab.chars.index("("), 0] = 1.0
        model.embed.weight[vocab.chars.index(")"), 0] = -1.0
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(layer, name)[0::hidden].zero_()
        layer.bias_ih_l0[[0, hidden, 3 * hidden]] = 30.0
        layer.weight_ih_l0[2 * hidden, 0] = 30.0  # g = tanh(30 x): +1, -1 or 0
        # h0 = tanh(c0) of a 0/±1 cell that forgets: f closed for unit 0 of layer 0
        layer.bias_ih_l0[hidden] = -30.0
        layer.weight_ih_l1[2 * hidden + unit, 0] = 30.0 / np.tanh(1.0) * 2
    return model, vocab, text


@pytest.mark.parametrize("exact", [False, True])
def test_find_ranks_a_planted_bracket_unit_first_with_numpys_correlation(tmp_path, exact):
    model, vocab, text = planted_bracket_model()
    run = save_run(model, vocab, tmp_path / "planted.pt")
    (tmp_path / "text.txt").write_text(text)
    dump = tmp_path / "states.npz"
    result = invoke("inspect", run, tmp_path / "text.txt", "--find", "--json",
                    "--dump", dump, *(["--exact"] if exact else []))
    assert result.exit_code == 0, result.output
    findings = {r["property"]: r for r in map(json.loads, result.stdout.splitlines())}
    best = findings["bracket_depth"]["units"][0]
    assert (best["layer"], best["unit"], best["state"]) == (1, 3, "cell")
    states = np.load(dump)
    depth = text_properties(states["text"].item())[:, NAMES.index("bracket_depth")]
    expected = np.corrcoef(states["cell_l1"][:, 3], depth)[0, 1]
    assert best["correlation"] == pytest.approx(expected, abs=1e-6)
    # read exactly, the unit is the bracket depth; as parallel streams, each stream's
    # warm-up starts its count from 0, so a unit that never forgets follows it less well
    assert expected > (0.99 if exact else 0.5)


def test_gate_saturation_is_the_share_of_steps_in_the_dumped_gates(tmp_path, trained_run):
    dump = tmp_path / "gates.npz"
    result = invoke("inspect", trained_run, CODE.replace("+", "a"), "--gates", "--json",
                    "--dump", dump)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    states = np.load(dump)
    assert {r["gate"] for r in rows} == {"input", "forget", "output"}
    for row in rows:
        gate = states[f"{row['gate']}_l{row['layer']}"]  # (T, H)
        assert row["left"] == pytest.approx((gate < 0.1).mean(axis=0).mean())
        assert row["right"] == pytest.approx((gate > 0.9).mean(axis=0).mean())
        assert row["mostly_left"] == int(((gate < 0.1).mean(axis=0) > 0.5).sum())


def test_the_views_plain_and_json(trained_run):
    text = "the quick brown fox\njumps"
    plain = invoke("inspect", trained_run, text)
    assert plain.exit_code == 0
    lines = plain.stdout.split("\n")
    assert lines[0] == "the quick brown fox" and "\x1b" not in plain.stdout
    assert set(lines[1]) <= set(" ▁▂▃▄▅▆▇█") and lines[2] == "jumps"
    records = [json.loads(r) for r in invoke("inspect", trained_run, text, "--json",
                                             "--top", "5", "-u", "0:7").stdout.splitlines()]
    assert "".join(r["char"] for r in records) == text
    lm = charlstm.load(trained_run)
    np.testing.assert_allclose([r["bits"] for r in records], lm.char_bits(text), atol=1e-4)
    states = lm.states(text)
    assert records[3]["units"]["0:7:cell"] == pytest.approx(float(states["cell_l0"][3, 7]))
    probabilities = lm.next_char_probabilities(text)
    assert probabilities.shape == (len(text), len(lm.vocab))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    top = [c for c, _ in records[4]["top"]]
    assert top[0] == lm.vocab.chars[int(probabilities[4].argmax())] and len(top) == 5
    listing = invoke("inspect", trained_run, "the", "--top", "2").stdout.splitlines()
    assert len(listing) == 3 and "next:" in listing[0]


def test_colour_only_on_a_terminal_without_no_color(trained_run):
    terminal = {"FORCE_COLOR": "1", "NO_COLOR": None, "TERM": "xterm-256color"}
    forced = invoke("inspect", trained_run, "the fox", env=terminal)
    assert "\x1b[" in forced.stdout
    assert "\x1b[" not in invoke("inspect", trained_run, "the fox",
                                 env={**terminal, "NO_COLOR": "1"}).stdout


@pytest.mark.parametrize("args, message", [
    (["-u", "3:0"], "no layer 3: the model is LSTM 1x64: layers 0-0, units 0-63"),
    (["-u", "0:64"], "no unit 64"),
    (["-u", "x"], "LAYER:UNIT"),
    (["--state", "gate"], "hidden or cell"),
    (["--find", "--gates"], "choose one"),
])
def test_bad_options_are_one_line_usage_errors(trained_run, args, message):
    result = invoke("inspect", trained_run, "the fox", *args)
    assert result.exit_code == 2
    assert message in one_line_error(result.stderr)


def test_cell_state_of_a_gru_and_gates_of_an_rnn_are_refused(tmp_path):
    vocab = Vocabulary.from_text(CODE)
    gru = save_run(small_model("gru", vocab), vocab, tmp_path / "gru.pt")
    rnn = save_run(small_model("rnn", vocab), vocab, tmp_path / "rnn.pt")
    result = invoke("inspect", gru, "def", "-u", "0:1", "--state", "cell")
    assert result.exit_code == 2
    assert "a GRU has no cell state, only hidden" in one_line_error(result.stderr)
    result = invoke("inspect", rnn, "def", "--gates")
    assert result.exit_code == 2 and "no gates" in one_line_error(result.stderr)
    assert invoke("inspect", rnn, CODE, "--find").exit_code == 0


def test_empty_short_and_unwritable_inputs_write_nothing(trained_run, tmp_path):
    dump = tmp_path / "out.npz"
    result = invoke("inspect", trained_run, "-", "--dump", dump, input="")
    assert result.exit_code == 2 and "empty" in one_line_error(result.stderr)
    short = invoke("inspect", trained_run, "the fox", "--find", "--dump", dump)
    assert short.exit_code == 2
    assert f"at least {MIN_FIND_CHARS}" in one_line_error(short.stderr)
    assert not dump.exists() or np.load(dump)["text"].item() == "the fox"
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        result = invoke("inspect", trained_run, "the fox", "--dump", locked / "s.npz")
        if os.geteuid() != 0:
            assert result.exit_code == 1
            assert "cannot write" in one_line_error(result.stderr)
            assert result.stdout == ""
    finally:
        os.chmod(locked, 0o700)
    (tmp_path / "plain").write_text("a file")
    under_a_file = tmp_path / "plain" / "s.npz"
    result = invoke("inspect", trained_run, "the fox", "--dump", under_a_file)
    assert result.exit_code == 1 and "cannot write" in one_line_error(result.stderr)
    mine = tmp_path / "notes.npz"
    mine.write_text("not ours")
    assert result.stdout == ""
    result = invoke("inspect", trained_run, "the fox", "--dump", mine)
    assert result.exit_code == 2 and mine.read_text() == "not ours"
    assert not list(tmp_path.glob(".*.part"))


def test_unknown_characters_are_warned_about_in_a_real_process(trained_run, tmp_path):
    result = run_cli("inspect", str(trained_run), "-", "--json", cwd=tmp_path,
                     stdin="the €fox")
    assert result.returncode == 0
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert records[4] == {"char": "€", "bits": UNKNOWN_CHAR_BITS}
    assert b"1 character(s) the model never saw" in result.stderr


def test_gates_plot_is_a_png_and_the_chart_a_table(trained_run, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "gates.png"
    result = invoke("inspect", trained_run, CODE.replace("+", "a"), "--gates", "-o", target)
    assert result.exit_code == 0, result.output
    assert target.read_bytes().startswith(b"\x89PNG")
    lines = result.stdout.splitlines()
    assert "left-saturated" in lines[0] and len(lines) == 1 + 3  # one layer, three gates
    assert lines[2].split()[:2] == ["0", "forget"]
