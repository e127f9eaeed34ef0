"""charlstm export: safetensors round trips, and the refusals every format shares."""

from __future__ import annotations

import json

import pytest
import torch

import charlstm
from charlstm.errors import CheckpointError, UsageError
from charlstm.export.exporting import export

from conftest import invoke, run_cli
from exporting import TEXT, logits_of, save_random_model


@pytest.mark.parametrize("model", ["lstm", "gru", "rnn"])
def test_a_safetensors_export_gives_the_same_logits(tmp_path, model):
    source = save_random_model(tmp_path, model, num_layers=2)
    path = export(source, "safetensors")
    assert path == source.with_suffix(".safetensors")
    original, exported = charlstm.load(source), charlstm.load(path)
    assert exported.config == original.config and exported.vocab == original.vocab
    assert torch.equal(logits_of(exported, TEXT), logits_of(original, TEXT))
    assert exported.sample("the ", length=50, seed=3) == original.sample("the ", length=50,
                                                                         seed=3)


def test_another_reader_finds_the_documented_layout(tmp_path):
    from safetensors import safe_open

    path = export(save_random_model(tmp_path, "gru", num_layers=2), "safetensors")
    with safe_open(str(path), "np") as file:
        metadata = file.metadata()
        names = set(file.keys())
        assert file.get_tensor("rnn.weight_hh_l1").shape == (3 * 24, 24)  # r, z, n
    assert metadata["format"] == "charlstm-safetensors" and metadata["format_version"] == "1"
    config, vocab = json.loads(metadata["model_config"]), json.loads(metadata["vocab"])
    assert (config["model"], config["num_layers"], config["hidden_size"]) == ("gru", 2, 24)
    assert vocab["chars"] == "".join(sorted(set(TEXT)))
    assert names == {"embed.weight", "head.weight", "head.bias"} | {
        f"rnn.{kind}_{side}_l{layer}" for kind in ("weight", "bias")
        for side in ("ih", "hh") for layer in (0, 1)}


def test_the_command_samples_and_scores_an_export(trained_run, tmp_path):
    out = tmp_path / "model.safetensors"
    result = run_cli("export", str(trained_run), "--format", "safetensors", "-o", str(out),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == str(out)
    for args in (["sample", "-t", "0", "-p", "the ", "-n", "80"],
                 ["score", "--json"]):
        answers = [run_cli(args[0], str(model), *args[1:], cwd=tmp_path,
                           stdin="all that glitters is not gold.\n")
                   for model in (trained_run, out)]
        assert answers[0].returncode == answers[1].returncode == 0, answers[1].stderr
        assert answers[0].stdout == answers[1].stdout


def test_a_corrupt_export_is_one_line(tmp_path):
    path = export(save_random_model(tmp_path), "safetensors")
    data = path.read_bytes()
    for name, damaged in [("cut", data[:len(data) // 2]), ("header", data[:8] + b"x" * 40),
                          ("foreign", data.replace(b"charlstm-safetensors",
                                                   b"someone-safetensors!"))]:
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(damaged)
        with pytest.raises(CheckpointError) as info:
            charlstm.load(bad)
        assert "\n" not in str(info.value) and str(bad) in str(info.value)
        result = invoke("sample", bad, "-n", "5")
        assert result.exit_code == 1 and result.stderr.count("\n") == 1


def test_bad_requests_are_one_line_and_write_nothing(tmp_path):
    source = save_random_model(tmp_path)
    foreign = tmp_path / "notes.safetensors"
    foreign.write_text("my notes")
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    cases = [(["-f", "gif"], 2, "unknown export format 'gif'"),
             (["-f", "safetensors", "-q", "int8"], 2, "takes no quantization"),
             (["-f", "onnx", "-q", "float16"], 2, "takes no quantization"),
             (["-f", "web", "-q", "int4"], 2, "unknown quantization 'int4'"),
             (["-f", "safetensors", "-o", foreign], 2, "is not a charlstm safetensors"),
             (["-f", "safetensors", "-o", tmp_path], 2, "is a folder"),
             (["-f", "safetensors", "-o", blocked / "x.safetensors"], 1, "could not write"),
             (["-f", "web", "-o", source], 2, "is the model being exported")]
    for args, code, message in cases:
        result = invoke("export", source, *args)
        assert result.exit_code == code, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert foreign.read_text() == "my notes" and blocked.read_text() == "in the way"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "lstm2.pt",
                                                          "notes.safetensors"]


def test_an_export_replaces_its_own_earlier_export(tmp_path):
    first = export(save_random_model(tmp_path, seed=1), "safetensors", tmp_path / "m.st")
    second = export(save_random_model(tmp_path, seed=2), "safetensors", first)
    assert second == first
    with pytest.raises(UsageError):
        export(save_random_model(tmp_path), "safetensors", tmp_path / "lstm2.pt")


def test_a_model_too_large_for_a_page_is_refused_and_says_why(tmp_path, monkeypatch):
    from charlstm.export import web

    source = save_random_model(tmp_path)
    monkeypatch.setattr(web, "MAX_MODEL_CHARS", 1000)
    result = invoke("export", source, "-f", "web")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "more than a browser parses in one string" in result.stderr
    assert "--quantize int8" in result.stderr
    assert not source.with_suffix(".html").exists()


def test_a_foreign_page_is_not_replaced_and_an_own_one_is(tmp_path):
    source = save_random_model(tmp_path)
    foreign = tmp_path / "index.html"
    foreign.write_text("<!DOCTYPE html><title>mine</title>")
    assert invoke("export", source, "-f", "web", "-o", foreign).exit_code == 2
    assert foreign.read_text() == "<!DOCTYPE html><title>mine</title>"
    page = export(source, "web", tmp_path / "page.html", quantize="int8")
    assert export(source, "web", page) == page and "charlstm-web" in page.read_text()


def test_an_onnx_or_web_export_given_to_load_is_named(tmp_path):
    source = save_random_model(tmp_path)
    page = export(source, "web")
    with pytest.raises(CheckpointError, match="does not read back"):
        charlstm.load(page)


def test_exporting_never_imports_the_training_stack():
    import subprocess
    import sys

    code = ("import sys, charlstm.export.exporting, charlstm.export.web, "
            "charlstm.export.safetensors\n"
            "assert not [m for m in sys.modules if m.startswith('charlstm.training')]\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_serve_serves_an_export(trained_run, tmp_path):
    testclient = pytest.importorskip("starlette.testclient")
    from charlstm.serve import create_app, load_models

    path = export(trained_run, "safetensors", tmp_path / "tiny.safetensors")
    request = {"model": "tiny", "prompt": "all that ", "max_tokens": 40, "temperature": 0}
    with testclient.TestClient(create_app(load_models([path]))) as client:
        answer = client.post("/v1/completions", json=request)
    assert answer.status_code == 200, answer.text
    expected = charlstm.load(trained_run).sample("all that ", length=40, temperature=0)
    assert answer.json()["choices"][0]["text"] == expected
