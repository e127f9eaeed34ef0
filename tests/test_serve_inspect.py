"""POST /v1/inspect, on a real server: a unit's values and guesses per character as `charlstm
inspect` computes them, the --find ranking, and OpenAI-shaped 400s naming the field."""

from __future__ import annotations

import numpy as np
import pytest

import charlstm

from serving import Server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TEXT = "the quick brown fox jumps over the lazy dog.\n" * 4


@pytest.fixture(scope="module")
def client(trained_run, tmp_path_factory):
    server = Server(str(trained_run), cwd=tmp_path_factory.mktemp("inspect"))
    yield server
    server.stop()


def inspect(client, **body):
    return client.request("POST", "/v1/inspect", {"model": "run", **body})


def test_a_units_values_and_the_guesses_are_the_libraries(client, trained_run):
    status, result = inspect(client, text=TEXT, layer=0, unit=5)
    assert status == 200 and result["state"] == "cell"
    lm = charlstm.load(trained_run)
    np.testing.assert_allclose(result["values"], lm.states(TEXT)["cell_l0"][:, 5], atol=1e-6)
    probabilities = lm.next_char_probabilities(TEXT)
    assert len(result["top"]) == len(TEXT) and all(len(row) == 5 for row in result["top"])
    assert result["top"][3][0][0] == lm.vocab.chars[int(probabilities[3].argmax())]
    np.testing.assert_allclose(result["bits"], lm.char_bits(TEXT), atol=1e-4)
    assert result["shape"] == {"cell": "lstm", "num_layers": 1, "hidden_size": 64,
                               "states": ["hidden", "cell"]}
    assert "ranking" not in result


def test_find_ranks_the_units_for_each_property(client, trained_run):
    status, result = inspect(client, text=TEXT, find=True, state="hidden")
    assert status == 200
    names = [p["property"] for p in result["ranking"]]
    assert "line_position" in names and "bracket_depth" not in names  # constant here
    expected = {f.property: f for f in charlstm.load(trained_run).find_units(TEXT)}
    first = result["ranking"][0]
    best = expected[first["property"]].units[0]
    assert (first["units"][0]["layer"], first["units"][0]["unit"]) == (best[0].layer,
                                                                      best[0].index)
    # the server and the library run the states through different kernels (oneDNN may
    # split the work differently between threads): they agree to about 5e-4, not exactly
    assert first["units"][0]["correlation"] == pytest.approx(best[1], rel=2e-3)


@pytest.mark.parametrize("body, param, words", [
    ({"text": ""}, "text", "empty"),
    ({"text": "abc", "layer": 2}, "layer", "layers 0-0, units 0-63"),
    ({"text": "abc", "unit": 64}, "unit", "no unit 64"),
    ({"text": "abc", "state": "gate"}, "state", "hidden or cell"),
    ({"text": "abc", "find": True}, "find", "too short"),
    ({"text": "abc", "unit": "3"}, "unit", ""),
])
def test_bad_requests_are_400s_naming_the_field(client, body, param, words):
    status, result = inspect(client, **body)
    assert status == 400
    assert result["error"]["param"] == param and words in result["error"]["message"]
