"""charlstm serve as an operator sees it, against a real uvicorn in a subprocess: /health,
/metrics, the queue bound, the time limit, SIGTERM's grace, and many clients at once
(streamed and not, some hanging up) whose seeded texts are those they get alone."""

from __future__ import annotations

import http.client
import json
import random
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from serving import Server, stream_events

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    running = Server(str(trained_run), "--max-tokens", "20000", "--max-n", "8",
                     "--max-batch", "16", "--max-queue", "64",
                     cwd=tmp_path_factory.mktemp("serve"))
    yield running
    running.stop()


def complete(server, **body) -> dict:
    status, answer = server.post("/v1/completions", {"model": "run", **body})
    assert status == 200, answer
    return answer


def streamed_text(server, body: dict) -> str:
    events = stream_events(server, {"model": "run", **body})
    assert events[-1] == "[DONE]"
    return "".join(e["choices"][0]["text"] for e in events[:-1])


def metric(page: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^charlstm_{name}{re.escape(labels)} (\S+)$", page, re.M)
    assert match, f"no {name}{labels} in /metrics"
    return float(match.group(1))


def open_stream(server, body: dict) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    connection.request("POST", "/v1/completions", json.dumps(
        {"model": "run", "stream": True, **body}), {"Content-Type": "application/json"})
    return connection


def test_health_answers_without_the_key(trained_run, tmp_path):
    keyed = Server(str(trained_run), cwd=tmp_path, key="s3cret",
                   env={"CHARLSTM_API_KEY": "s3cret"})
    try:
        assert keyed.get("/health", headers={"Authorization": ""}) == (
            200, {"status": "ok", "models": ["run"]})
        assert keyed.get("/metrics", headers={"Authorization": "Bearer no"})[0] == 401
        assert keyed.get("/metrics")[0] == 200
    finally:
        keyed.stop()


def test_metrics_count_requests_characters_and_latency(server):
    complete(server, prompt="the ", max_tokens=40, seed=1)
    server.post("/v1/completions", {"model": "nope", "prompt": "a"})
    status, page = server.get("/metrics")
    assert status == 200
    assert metric(page, "requests_total",
                  '{method="POST",path="/v1/completions",status="200"}') >= 1
    assert metric(page, "requests_total",
                  '{method="POST",path="/v1/completions",status="404"}') >= 1
    assert metric(page, "characters_generated_total") >= 40
    assert metric(page, "request_duration_seconds_count", '{path="/v1/completions"}') >= 2
    assert metric(page, "first_text_seconds_count") >= 1
    assert metric(page, "batch_size") == 0 and metric(page, "queue_depth") == 0
    assert "# TYPE charlstm_request_duration_seconds histogram" in page
    assert 'charlstm_first_text_seconds_bucket{le="+Inf"}' in page


def test_a_full_queue_gets_503_with_retry_after(trained_run, tmp_path):
    small = Server(str(trained_run), "--max-tokens", "100000", "--max-batch", "1",
                   "--max-queue", "1", cwd=tmp_path)
    endless = {"prompt": "the ", "max_tokens": 100000}
    running = [open_stream(small, endless)]
    try:
        assert running[0].getresponse().status == 200  # in the batch
        running.append(open_stream(small, endless))  # waiting: its headers wait too
        deadline = time.monotonic() + 30
        while metric(small.get("/metrics")[1], "queue_depth") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status, answer = small.post("/v1/completions", {"model": "run", **endless})
        assert status == 503 and answer["error"]["code"] == "server_busy"
        request = http.client.HTTPConnection("127.0.0.1", small.port, timeout=30)
        request.request("POST", "/v1/completions", json.dumps({"model": "run", **endless}),
                        {"Content-Type": "application/json"})
        assert request.getresponse().getheader("Retry-After") == "1"
        assert metric(small.get("/metrics")[1], "refused_busy_total") == 2
    finally:
        for connection in running:
            connection.close()
        small.stop()


@pytest.mark.parametrize("batch", ["16", pytest.param("0", marks=pytest.mark.slow)])
def test_the_time_limit_ends_a_completion_with_its_text(trained_run, tmp_path, batch):
    limited = Server(str(trained_run), "--max-tokens", "1000000", "--timeout", "1",
                     "--max-batch", batch, cwd=tmp_path)
    try:
        started = time.monotonic()
        answer = complete(limited, prompt="the ", max_tokens=1000000)
        choice, = answer["choices"]
        assert choice["finish_reason"] == "time_limit"
        assert 0 < len(choice["text"]) < 1000000 and time.monotonic() - started < 30
        events = stream_events(limited, {"model": "run", "prompt": "a", "max_tokens": 1000000})
        assert events[-2]["choices"][0]["finish_reason"] == "time_limit"
        assert metric(limited.get("/metrics")[1], "timeouts_total") == 2
    finally:
        limited.stop()


@pytest.mark.slow
def test_sigterm_lets_running_streams_finish_within_the_grace(trained_run, tmp_path):
    graceful = Server(str(trained_run), "--max-tokens", "1000000", "--grace", "3",
                      cwd=tmp_path)
    short = open_stream(graceful, {"prompt": "the ", "max_tokens": 3000, "seed": 4})
    endless = open_stream(graceful, {"prompt": "the ", "max_tokens": 1000000})
    short_response, endless_response = short.getresponse(), endless.getresponse()
    assert short_response.read(6) == b"data: " and endless_response.read(6) == b"data: "
    started = time.monotonic()
    graceful.process.send_signal(signal.SIGTERM)
    assert b"data: [DONE]" in short_response.read()  # it finished, after the signal
    with pytest.raises(http.client.IncompleteRead):
        endless_response.read()  # cut at the grace's end
    code = graceful.process.wait(timeout=30)
    took = time.monotonic() - started
    assert 2.5 < took < 15, took
    assert code in (0, 143, -signal.SIGTERM), code
    assert "Traceback" not in graceful.process.stderr.read().decode()


def _client(server, seed: int, results: dict, hang_up: bool) -> None:
    body = {"prompt": "the " if seed % 2 else "a", "max_tokens": 120 + 10 * (seed % 5),
            "seed": seed, "temperature": 0.9, "top_p": 0.95 if seed % 7 == 0 else 1.0,
            "stop": ["zz"] if seed % 3 == 0 else None}
    if hang_up:
        connection = open_stream(server, {**body, "max_tokens": 20000})
        response = connection.getresponse()
        response.read(random.Random(seed).randint(6, 200))
        connection.sock.shutdown(2)
        connection.close()
        results[seed] = None
    elif seed % 2:
        results[seed] = streamed_text(server, body)
    else:
        results[seed] = complete(server, **body)["choices"][0]["text"]


@pytest.mark.slow
def test_32_clients_at_once_get_the_texts_they_get_alone(server):
    seeds = range(32)
    hang_ups = {seed for seed in seeds if seed % 8 == 5}
    alone: dict[int, str] = {}
    for seed in seeds:
        if seed not in hang_ups:
            _client(server, seed, alone, hang_up=False)
    batch_sizes = []
    for round_number in range(2):
        together: dict[int, str] = {}
        threads = [threading.Thread(target=_client, args=(server, seed, together,
                                                          seed in hang_ups))
                   for seed in seeds]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            batch_sizes.append(metric(server.get("/metrics")[1], "batch_size"))
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(together) == list(seeds)
        for seed in seeds:
            if seed not in hang_ups:
                assert together[seed] == alone[seed], (round_number, seed)
    deadline = time.monotonic() + 30
    while server.get("/v1/stats")[1]["active_generations"]:
        assert time.monotonic() < deadline, "a hung-up stream kept generating"
        time.sleep(0.1)
    assert max(batch_sizes) > 1  # they were stepped together
    page = server.get("/metrics")[1]
    assert metric(page, "batch_size") == 0 and metric(page, "disconnects_total") >= 8


@pytest.mark.slow
def test_resident_memory_stays_flat_over_many_mixed_requests(server):
    """A short form of bench/serve_memory.py (10,000 requests there, 1,000 here)."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))
    try:
        from serve_memory import resident_mb, send
    finally:
        sys.path.remove(str(bench))
    prompts = ("the ", "a", "", "all that ")  # characters the tiny model knows
    send(server, "run", 300, clients=8, seed=1, prompts=prompts)
    before = resident_mb(server.process.pid)
    send(server, "run", 1000, clients=8, seed=2, prompts=prompts)
    growth = resident_mb(server.process.pid) - before
    assert growth < 25, f"resident memory grew by {growth:.1f} MB over 1,000 requests"
    assert server.get("/health")[0] == 200
