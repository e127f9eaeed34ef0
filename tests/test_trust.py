"""Each character's probability (score --per-char) and serve's OpenAI extras: logprobs,
echo, best_of, penalties, novelty, through a real server and the official client."""

from __future__ import annotations

import json
import math

import pytest

import charlstm
from charlstm import checkpoint
from conftest import one_line_error, run_cli
from serving import Server

LN2 = math.log(2)


def test_per_char_log_probs_add_up_to_the_exact_score(trained_run):
    lm = charlstm.load(trained_run)
    text = "the quick€ brown\tfox"  # € is unknown
    found = lm.char_log_probs(text, top=3)
    assert len(found.nats) == len(text)
    assert found.bits.sum() == pytest.approx(lm.score(text, exact=True)["bits"])
    assert found.bits.tolist() == pytest.approx(lm.char_bits(text))
    for chars, nats in zip(found.top_chars, found.top_nats):
        assert len(set(chars)) == 3 and list(nats) == sorted(nats, reverse=True)
    assert found.top_chars[1][0] == "h"  # the tiny model knows "the"


def test_score_per_char_rows_and_records(trained_run, tmp_path):
    done = run_cli("score", str(trained_run), "-", "--per-char", "--top", "2", cwd=tmp_path,
                   stdin="the\nend")
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.decode().splitlines()]
    assert [row[0] for row in rows] == ["t", "h", "e", "\\n", "e", "n", "d"]
    assert all(len(row) == 4 for row in rows)
    lm = charlstm.load(trained_run)
    total = sum(float(row[1]) for row in rows)
    assert total == pytest.approx(lm.score("the\nend", exact=True)["bits"], abs=1e-3)
    done = run_cli("score", str(trained_run), "-", "-c", "--json", cwd=tmp_path, stdin="ab")
    records = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [r["char"] for r in records] == ["a", "b"] and records[0]["top"] == []
    done = run_cli("score", str(trained_run), "-", "--top", "2", cwd=tmp_path, stdin="ab")
    assert done.returncode == 2 and "--per-char" in one_line_error(done.stderr.decode())


@pytest.fixture(scope="module")
def server(trained_run, tmp_path_factory):
    running = Server(str(trained_run), "--max-n", "8", cwd=tmp_path_factory.mktemp("serve"),
                     env={"CHARLSTM_CORPORA": str(trained_run.parent / "corpora")})
    yield running
    running.stop()


def test_the_openai_client_gets_logprobs_echo_best_of_and_penalties(server, trained_run):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    lm = charlstm.load(trained_run)
    answer = client.completions.create(model="run", prompt="the ", max_tokens=40, seed=3,
                                       logprobs=3, echo=True)
    choice = answer.choices[0]
    assert choice.text.startswith("the ")
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == list(range(len(choice.text)))
    assert all(len(top) == 3 for top in logprobs.top_logprobs)
    # the logprobs add up to the score of the same text
    assert sum(logprobs.token_logprobs) == pytest.approx(
        -lm.score(choice.text, exact=True)["bits"] * LN2, rel=1e-5)
    plain = client.completions.create(model="run", prompt="the ", max_tokens=40, seed=3,
                                      logprobs=0)
    assert plain.choices[0].text == choice.text[4:]
    assert plain.choices[0].logprobs.text_offset[0] == 4
    assert plain.choices[0].logprobs.token_logprobs == pytest.approx(
        logprobs.token_logprobs[4:])
    best = client.completions.create(model="run", prompt="the ", max_tokens=40, seed=3,
                                     temperature=1.5, n=2, best_of=6, logprobs=0)
    means = [sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs)
             for c in best.choices]
    assert len(best.choices) == 2 and means[0] >= means[1]
    everything = lm.sample(["the "] * 6, length=40, temperature=1.5, seed=3)
    assert {c.text for c in best.choices} <= set(everything)
    penalised = client.completions.create(model="run", prompt="the ", max_tokens=60, seed=3,
                                          temperature=0, frequency_penalty=1.0,
                                          presence_penalty=0.5)
    assert penalised.choices[0].text == lm.sample(
        "the ", 60, temperature=0, frequency_penalty=1.0, presence_penalty=0.5)
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model="run", prompt="a", n=3, best_of=2)
    with pytest.raises(openai.BadRequestError, match=r"'logprobs' must be in \[0, 5\]"):
        client.completions.create(model="run", prompt="a", logprobs=6)
    with pytest.raises(openai.BadRequestError, match="'presence_penalty' must be in"):
        client.completions.create(model="run", prompt="a", presence_penalty=2.5)


def test_serve_reports_novelty_and_keeps_copies_short(server):
    status, answer = server.post("/v1/completions", {
        "model": "run", "prompt": "the ", "max_tokens": 200, "seed": 1, "temperature": 0.3,
        "novelty": True, "novelty_min": 10, "max_copy": 15})
    assert status == 200, answer
    report = answer["choices"][0]["novelty"]
    assert report["characters"] == len(answer["choices"][0]["text"])
    assert report["longest"]["length"] <= 15 and report["longest"]["file"].endswith("tiny.txt")
    status, answer = server.post("/v1/completions", {"model": "run", "prompt": "a",
                                                     "max_copy": 0})
    assert status == 400 and answer["error"]["param"] == "max_copy"


def test_a_model_without_its_corpus_gets_a_400_naming_the_file(trained_run, tmp_path):
    record = checkpoint.read(trained_run)
    record.corpus = {**record.corpus, "source": str(tmp_path / "gone.txt"), "sha256": "0" * 64}
    record.save(tmp_path / "moved.pt")
    running = Server(str(tmp_path / "moved.pt"), cwd=tmp_path,
                     env={"CHARLSTM_CORPORA": str(tmp_path / "corpora")})
    try:
        status, answer = running.post("/v1/completions", {"model": "moved", "prompt": "a",
                                                          "novelty": True})
        assert status == 400 and answer["error"]["param"] == "novelty"
        assert "gone.txt" in answer["error"]["message"]
        status, answer = running.post("/v1/completions", {"model": "moved", "prompt": "a"})
        assert status == 200  # everything else still works
    finally:
        running.stop()
