"""charlstm serve against a real uvicorn in a subprocess: the API, bad requests, the key,
disconnects, concurrent clients and the official openai client."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import charlstm
from charlstm import checkpoint
from conftest import one_line_error, run_cli
from serving import Server, stream_events

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    running = Server(str(trained_run), "--max-tokens", "5000", "--max-n", "8",
                     "--max-body", "20000", cwd=tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def lm(trained_run):
    return charlstm.load(trained_run)


def complete(server, **body):
    status, answer = server.post("/v1/completions", {"model": "run", **body})
    assert status == 200, answer
    return answer


def test_models_are_listed_and_the_card_is_info_json(server, trained_run):
    status, listing = server.get("/v1/models")
    assert status == 200 and listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["run"]
    status, card = server.get("/v1/models/run")
    path = checkpoint.find(trained_run)
    summary = json.loads(json.dumps(checkpoint.read(path).summary(path)))
    assert status == 200 and card["id"] == "run" and card["object"] == "model"
    assert {k: card[k] for k in summary} == summary
    assert card["history"] and card["model"]["hidden_size"] == 64


def test_a_completion_is_the_library_sample_of_the_same_seed(server, lm):
    answer = complete(server, prompt="the ", max_tokens=60, seed=5, temperature=0.9)
    choice, = answer["choices"]
    assert choice["finish_reason"] == "length" and len(choice["text"]) == 60
    assert choice["text"] == lm.sample(["the "], length=60, temperature=0.9, seed=5)[0]
    assert answer["usage"] == {"prompt_tokens": 4, "completion_tokens": 60,
                               "total_tokens": 64}
    again = complete(server, prompt="the ", max_tokens=60, seed=5, temperature=0.9)
    assert again["choices"][0]["text"] == choice["text"]
    other = complete(server, prompt="the ", max_tokens=60, seed=6, temperature=0.9)
    assert other["choices"][0]["text"] != choice["text"]


def test_a_stream_arrives_in_chunks_and_adds_up_to_the_whole(server):
    body = {"model": "run", "prompt": "a st", "max_tokens": 200, "seed": 3, "top_p": 0.9}
    events = stream_events(server, body)
    assert events[-1] == "[DONE]"
    chunks = [e["choices"][0] for e in events[:-1]]
    assert len(chunks) > 10  # a few characters per chunk, not one blob
    assert all(len(c["text"]) <= 8 for c in chunks)
    assert chunks[-1]["finish_reason"] == "length"
    assert all(c["finish_reason"] is None for c in chunks[:-1])
    assert "".join(c["text"] for c in chunks) == complete(
        server, **{**body, "model": "run"})["choices"][0]["text"]


@pytest.mark.parametrize("stop", ["e", ["xyz", "he "], "the"])
def test_a_stop_string_ends_the_text_before_it(server, lm, stop):
    stops = [stop] if isinstance(stop, str) else stop
    full = lm.sample(["t"], length=300, seed=11)[0]
    ends = [full.find(s) for s in stops if s in full]
    expected = full[:min(ends)] if ends else full
    answer = complete(server, prompt="t", max_tokens=300, seed=11, stop=stop)
    choice, = answer["choices"]
    assert choice["text"] == expected
    assert choice["finish_reason"] == ("stop" if ends else "length")
    streamed = stream_events(server, {"model": "run", "prompt": "t", "max_tokens": 300,
                                      "seed": 11, "stop": stop})
    assert "".join(e["choices"][0]["text"] for e in streamed[:-1]) == expected


def test_n_samples_of_each_prompt_are_one_seeded_batch(server, lm):
    answer = complete(server, prompt=["the ", "a "], n=2, max_tokens=40, seed=9)
    texts = [c["text"] for c in answer["choices"]]
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
    assert texts == lm.sample(["the ", "the ", "a ", "a "], length=40, seed=9)
    assert texts[0] != texts[1]
    events = stream_events(server, {"model": "run", "prompt": ["the ", "a "], "n": 2,
                                    "max_tokens": 40, "seed": 9})
    for index, text in enumerate(texts):
        assert "".join(e["choices"][0]["text"] for e in events[:-1]
                       if e["choices"][0]["index"] == index) == text


def test_scores_are_the_library_scores(server, lm):
    text = "the quick brown fox\nall that glitters"
    status, answer = server.post("/v1/score", {"model": "run", "text": text,
                                               "per_char": True})
    expected = lm.score(text)
    assert status == 200 and answer["characters"] == len(text)
    assert answer["bits"] == pytest.approx(expected["bits"], rel=1e-6)
    assert len(answer["char_bits"]) == len(text)
    assert sum(answer["char_bits"]) == pytest.approx(expected["bits"], rel=1e-6)
    status, lines = server.post("/v1/score", {"model": "run", "lines": ["the dog", "zzzq", ""]})
    assert status == 200
    assert [r["characters"] for r in lines["data"]] == [7, 4, 0]
    assert lines["data"][0]["bits_per_char"] < lines["data"][1]["bits_per_char"]
    assert lines["data"][2]["bits_per_char"] is None  # NaN is not JSON


def test_per_character_bits_sum_to_the_score_with_unknown_characters(lm):
    text = "the ¤ quick fox ¤¤"
    bits = lm.char_bits(text)
    assert len(bits) == len(text)
    # the same sequential reading as the exact score; the default (streamed) score sums
    # its losses in another order, so it agrees to rounding
    assert sum(bits) == pytest.approx(lm.score(text, exact=True)["bits"], rel=1e-9)
    assert sum(bits) == pytest.approx(lm.score(text)["bits"], rel=1e-6)
    assert bits[4] == pytest.approx(20.09, abs=0.01)  # an unseen character
    assert lm.char_bits("") == []


BAD_REQUESTS = [
    ("bad JSON", "/v1/completions", b'{"model": "run", "prompt": ', 400, None),
    ("not an object", "/v1/completions", b'["run"]', 400, None),
    ("no model", "/v1/completions", {"prompt": "the"}, 400, "model"),
    ("wrong type", "/v1/completions", {"model": "run", "max_tokens": "ten"}, 400, "max_tokens"),
    ("negative temperature", "/v1/completions", {"model": "run", "temperature": -1}, 400,
     "temperature"),
    ("top_p of 0", "/v1/completions", {"model": "run", "top_p": 0}, 400, "top_p"),
    ("no prompts", "/v1/completions", {"model": "run", "prompt": []}, 400, "prompt"),
    ("unknown model", "/v1/completions", {"model": "nope", "prompt": "a"}, 404, "model"),
    ("too many characters", "/v1/completions", {"model": "run", "max_tokens": 5001}, 400,
     "max_tokens"),
    ("too many samples", "/v1/completions", {"model": "run", "n": 5, "prompt": ["a", "b"]},
     400, "n"),
    ("five stops", "/v1/completions", {"model": "run", "stop": list("abcde")}, 400, "stop"),
    ("body too large", "/v1/completions", {"model": "run", "prompt": "a" * 30000}, 413, None),
    ("score both", "/v1/score", {"model": "run", "text": "a", "lines": ["a"]}, 400, "text"),
    ("score nothing", "/v1/score", {"model": "run"}, 400, "text"),
    ("score a number", "/v1/score", {"model": "run", "text": 5}, 400, "text"),
    ("unknown field in score", "/v1/score", {"model": "run", "texts": ["a"]}, 400, "texts"),
]


@pytest.mark.parametrize("what, path, body, status, param", BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_a_bad_request_gets_an_openai_error(server, what, path, body, status, param):
    raw = body if isinstance(body, bytes) else None
    got, answer = server.post(path, None if raw else body, raw=raw)
    assert got == status, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_unseen_characters_are_named(server):
    status, answer = server.post("/v1/completions", {"model": "run", "prompt": "the Ωé"})
    assert status == 400
    assert "'Ω'" in answer["error"]["message"] and "'é'" in answer["error"]["message"]
    assert answer["error"]["param"] == "prompt"
    status, answer = server.post("/v1/completions", {"model": "run", "prompt": ["the", "Ωx"]})
    assert status == 400 and "'Ω'" in answer["error"]["message"]


def test_unknown_paths_and_methods_get_json_errors(server):
    assert server.get("/v2/nothing")[0] == 404
    status, answer = server.get("/v1/completions")
    assert status == 405 and "GET" in answer["error"]["message"]
    status, page = server.get("/")
    assert status == 200 and "<html" in page and "http://" not in page.replace(
        "http://www.w3.org", "")  # nothing fetched from elsewhere


def test_the_key_gate_in_process(trained_run):
    testclient = pytest.importorskip("starlette.testclient")
    from charlstm.serve import ServeOptions, create_app, load_models

    app = create_app(load_models([trained_run]), ServeOptions(api_key="k3y"))
    with testclient.TestClient(app) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer k3"}).status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer k3y"}).status_code == 200
        assert client.get("/").status_code == 200


@pytest.mark.slow
def test_an_api_key_is_needed_once_set(trained_run, tmp_path):
    keyed = Server(str(trained_run), cwd=tmp_path, env={"CHARLSTM_API_KEY": "s3cret"})
    try:
        keyed.key = None
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            status, answer = keyed.get("/v1/models", headers=headers)
            assert status == 401 and answer["error"]["code"] == "invalid_api_key"
            assert keyed.post("/v1/completions", {"model": "run"}, headers=headers)[0] == 401
        assert keyed.get("/")[0] == 200  # the page itself; it sends the key the user types
        good = {"Authorization": "Bearer s3cret"}
        assert keyed.get("/v1/models", headers=good)[0] == 200
        assert keyed.post("/v1/completions", {"model": "run", "max_tokens": 5},
                          headers=good)[0] == 200
    finally:
        keyed.stop()


def test_a_client_that_disconnects_stops_its_generation(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("POST", "/v1/completions", json.dumps(
        {"model": "run", "prompt": "the ", "max_tokens": 5000, "stream": True}),
        {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    assert response.read(6) == b"data: "
    _, before = server.get("/v1/stats")
    assert before["active_generations"] == 1
    connection.sock.shutdown(2)
    connection.close()
    deadline = time.monotonic() + 30
    while server.get("/v1/stats")[1]["active_generations"] and time.monotonic() < deadline:
        time.sleep(0.1)
    _, after = server.get("/v1/stats")
    assert after["active_generations"] == 0
    assert after["disconnects"] == before["disconnects"] + 1
    time.sleep(0.5)
    _, later = server.get("/v1/stats")
    assert later["characters_generated"] == after["characters_generated"]  # it stopped
    assert after["characters_generated"] - before["characters_generated"] < 5000


def test_eight_concurrent_clients_all_get_their_own_seeded_text(server, lm):
    results: dict[int, str] = {}

    def client(seed: int) -> None:
        body = {"model": "run", "prompt": "the ", "max_tokens": 150, "seed": seed}
        if seed % 2:
            events = stream_events(server, body)
            results[seed] = "".join(e["choices"][0]["text"] for e in events[:-1])
        else:
            results[seed] = complete(server, **{k: v for k, v in body.items()
                                                if k != "model"})["choices"][0]["text"]

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == list(range(8))
    for seed, text in results.items():
        assert text == lm.sample(["the "], length=150, seed=seed)[0], seed


def test_the_openai_client_completes(server, lm):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["run"]
    answer = client.completions.create(model="run", prompt="the ", max_tokens=50, seed=2)
    expected = lm.sample(["the "], length=50, seed=2)[0]
    assert answer.choices[0].text == expected
    stream = client.completions.create(model="run", prompt="the ", max_tokens=50, seed=2,
                                       stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == expected
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="a")


def test_without_the_extra_serve_says_how_to_install_it(trained_run, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "fastapi.py").write_text("raise ImportError('blocked for the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker),
                                                        os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "charlstm", "serve", str(trained_run)],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "pip install 'charlstm[serve]'" in one_line_error(result.stderr)


@pytest.mark.slow
def test_a_port_in_use_or_a_bad_limit_is_one_line(trained_run, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", str(trained_run), "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert "Address already in use" in one_line_error(result.stderr.decode())
    result = run_cli("serve", str(trained_run), "--max-n", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "--max-n must be in [1, 100,000], not 0" in one_line_error(result.stderr.decode())


@pytest.mark.slow
def test_ctrl_c_stops_the_server_cleanly(trained_run, tmp_path):
    running = Server(str(trained_run), "--host", "0.0.0.0", cwd=tmp_path)
    assert running.get("/v1/models")[0] == 200
    code = running.stop(signal.SIGINT)
    stderr = running.process.stderr.read().decode()
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert f"http://0.0.0.0:{running.port}/" in stderr
    assert "warning: listening on 0.0.0.0 without --api-key" in stderr
