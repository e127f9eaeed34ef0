"""Every number a user gives is range-checked: each numeric flag of each command, and each
numeric field of each serve endpoint, given hostile numbers (2**80, -1, 0, NaN, a string
of 400 digits, infinities) is refused cleanly or, where the value is in range, taken.

The flags are enumerated from the typer app and the fields from the pydantic request
models, so a new numeric flag or field is tried automatically; one missing from the tables
below fails `test_every_numeric_flag_is_in_the_table` (or its field twin) until its range is
written here (and checked in the code).
"""

from __future__ import annotations

import json
import math
import typing

import pytest
import typer.main

from charlstm.cli import app
from charlstm.ranges import Range
from charlstm.settings import MODEL_RANGES, TRAIN_RANGES, ModelConfig, TrainConfig

from conftest import invoke, isolate_cli, one_line_error

HUGE = str(2**80)
DIGITS = "9" * 400  # an integer beyond any bound; as a float, an infinity
HOSTILE = {"2**80": HUGE, "-1": "-1", "0": "0", "nan": "nan", "digits": DIGITS}

# Each numeric flag (command and long name): whether 0 is in its range. Durations are
# text flags whose values are numbers too; they are listed in DURATION_FLAGS.
ZERO_ALLOWED = {
    "train --val-frac": True, "train --bptt-warmup": True, "train --stream-block": True,
    "train --num-layers": False,
    "train --hidden-size": False, "train --embed-size": False, "train --dropout": True,
    "train --head-rank": True,
    "train --weight-drop": True, "train --batch-size": False, "train --seq-len": False,
    "train --early-batch": True, "train --early-share": True,
    "train --lr": False, "train --min-lr-ratio": True, "train --warmup-steps": True,
    "train --weight-decay": True,
    "train --grad-clip": True, "train --beta1": True, "train --beta2": True, "train --max-steps": False,
    "train --epochs": False, "train --seed": True, "train --eval-every": False,
    "train --eval-chars": True, "train --sample-every": True, "train --sample-length": True,
    "train --time": False, "train --save-every": True,
    "sample --length": True, "sample --temperature": True, "sample --top-k": False,
    "sample --top-p": False, "sample --seed": True, "sample --num-samples": False,
    "sample --beam": False, "sample --max-copy": False, "sample --no-repeat": True,
    "sample --novelty-min": False, "sample --penalty-window": False,
    "sample --repetition-penalty": False, "sample --frequency-penalty": True,
    "sample --presence-penalty": True, "novelty --novelty-min": False, "score --top": True,
    "inspect --top": True, "inspect --best": False,
    "serve --port": False, "serve --max-tokens": False, "serve --max-n": False,
    "serve --max-body": False, "serve --max-batch": True, "serve --max-queue": True,
    "serve --timeout": False, "serve --grace": True,
    "corpus prepare --val-frac": True,
}
DURATION_FLAGS = {"train --time", "train --save-every"}
# what each command needs besides the flag; the paths do not exist, so that a flag whose
# check were missing would fail on them instead of running (and not name the flag)
COMMAND_ARGS = {"train": ["absent-corpus.txt", "--out", "run"], "sample": ["absent-run"],
                "serve": ["absent-run"], "corpus prepare": ["absent-corpus.txt"],
                "novelty": ["absent-run", "absent.txt"], "score": ["absent-run", "absent.txt"],
                "inspect": ["absent-run", "some text"]}
# flags and fields whose range holds -1 too (OpenAI's penalties run from -2 to 2)
NEGATIVE_ALLOWED = {"sample --frequency-penalty", "sample --presence-penalty",
                    "frequency_penalty", "presence_penalty"}


def _walk(command, path=()):
    for name, sub in getattr(command, "commands", {}).items():
        yield from _walk(sub, (*path, name))
    for param in command.params:
        yield " ".join(path), param


def numeric_flags() -> dict[str, type]:
    """'command --flag' -> int or float, for every option of the app taking a number."""
    found = {}
    for command, param in _walk(typer.main.get_command(app)):
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        if param.param_type_name == "option" and annotation in (int, float):
            long_name = max(param.opts, key=len)
            found[f"{command} {long_name}".strip()] = annotation
    return found


def test_every_numeric_flag_is_in_the_table():
    flags = set(numeric_flags()) | DURATION_FLAGS
    assert flags - set(ZERO_ALLOWED) == set(), "numeric flags missing from ZERO_ALLOWED"
    assert set(ZERO_ALLOWED) - flags == set(), "ZERO_ALLOWED names flags that are gone"
    assert set(COMMAND_ARGS) == {flag.rsplit(" ", 1)[0] for flag in flags}


CASES = [(flag, label) for flag in sorted(ZERO_ALLOWED) for label in HOSTILE
         if not (label == "0" and ZERO_ALLOWED[flag])
         and not (label == "-1" and flag in NEGATIVE_ALLOWED)]


@pytest.mark.parametrize("flag, label", CASES)
def test_a_hostile_number_is_one_line_and_exit_2(flag, label, tmp_path, monkeypatch):
    isolate_cli(tmp_path, monkeypatch)
    command, option = flag.rsplit(" ", 1)
    result = invoke(*command.split(), *COMMAND_ARGS[command], option, HOSTILE[label])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    line = one_line_error(result.stderr)
    assert option in line, line
    assert result.stdout == ""
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "sample", "serve"])
@pytest.mark.parametrize("device", [f"cuda:{HUGE}", "cuda:-1", "cuda:", "cpu:nan"])
def test_a_device_number_out_of_range_is_one_line(command, device, tmp_path, monkeypatch,
                                                  trained_run):
    """--device is text, but cuda:N holds a number too (checked once the input is read)."""
    isolate_cli(tmp_path, monkeypatch)
    (tmp_path / "text.txt").write_text("abcabcabc\n" * 50)
    given = ["text.txt", "--out", "run"] if command == "train" else [trained_run]
    result = invoke(command, *given, "--device", device)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert f"not {device!r}" in one_line_error(result.stderr)
    assert not (tmp_path / "run").exists()


def test_a_seed_out_of_range_in_the_library_is_a_usage_error():
    import torch

    from charlstm.api import make_generator
    from charlstm.errors import UsageError
    from charlstm.infer.generate import check_options

    for seed in (2**80, -1, 2**63):
        with pytest.raises(UsageError, match=r"seed must be in \[0, 2\*\*63\)"):
            check_options(1.0, None, None, 10, 1, seed=seed)
    check_options(1.0, None, None, 10, 1, seed=2**63 - 1)
    assert make_generator(2**63 - 1, torch.device("cpu")).initial_seed() == 2**63 - 1


def test_the_ends_of_every_settings_range_are_taken():
    """Each closed end of each setting's range is a value the settings take (the hostile
    test does not run in-range values through train: they would train)."""
    for name, allowed in {**MODEL_RANGES, **TRAIN_RANGES}.items():
        ends = [end for end, is_open in ((allowed.low, allowed.low_open),
                                         (allowed.high, allowed.high_open)) if not is_open]
        for value in ends:
            if name in MODEL_RANGES:
                ModelConfig(**{"vocab_size": 5, name: value})
            else:  # (the early batch is at most the batch, whose range is the same)
                TrainConfig(**{name: value},
                            **({"batch_size": value or 1} if name == "early_batch" else {}))


@pytest.mark.parametrize("bound", [Range(1, 10), Range(0.0, 1.0, low_open=True,
                                                        high_open=True)])
def test_a_range_refuses_what_is_outside_and_every_non_number(bound):
    assert bound.low + 0.5 in bound
    for outside in (bound.high + 1, bound.low - 1, math.nan, math.inf, -math.inf, True, "5",
                    None, 2**80):
        assert outside not in bound
    assert (bound.low in bound) is not bound.low_open
    assert (bound.high in bound) is not bound.high_open


def test_the_refusal_names_the_range():
    assert Range(0, 2**63, high_open=True).refusal("--seed", 2**80) == (
        f"--seed must be in [0, 2**63), not {2**80}")
    assert Range(0.0, 1.0, low_open=True).refusal("top_p", math.nan) == (
        "top_p must be in (0, 1], not nan")


# ------------------------------------------------------------------- serve request fields

fastapi = pytest.importorskip("fastapi")
testclient = pytest.importorskip("starlette.testclient")

from charlstm.serve import requests as request_models  # noqa: E402  (needs pydantic)

BODIES = {  # each endpoint's request model, and a valid body to change one field of
    "/v1/completions": (request_models.CompletionRequest,
                        {"model": "run", "prompt": "the ", "max_tokens": 3}),
    "/v1/score": (request_models.ScoreRequest, {"model": "run", "text": "the "}),
}
FIELD_ZERO_ALLOWED = {"max_tokens": False, "temperature": True, "top_p": False, "n": False,
                      "seed": True, "best_of": False, "logprobs": True, "max_copy": False,
                      "no_repeat": True, "novelty_min": False, "penalty_window": False,
                      "repetition_penalty": False, "frequency_penalty": True,
                      "presence_penalty": True}
RAW_HOSTILE = {"2**80": HUGE, "-1": "-1", "0": "0", "NaN": "NaN", "Infinity": "Infinity",
               "-Infinity": "-Infinity", "1e400": "1e400", "digits": DIGITS,
               "a string of digits": json.dumps("12")}


def _numeric(annotation) -> bool:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation in (int, float) or (len(args) == 1 and args[0] in (int, float))


def numeric_fields() -> dict[str, list[str]]:
    """Endpoint path -> its request model's numeric fields."""
    return {path: [name for name, info in model.model_fields.items()
                   if _numeric(info.annotation)] for path, (model, _) in BODIES.items()}


def test_every_request_model_and_numeric_field_is_in_the_table():
    models = {value for value in vars(request_models).values()
              if isinstance(value, type) and issubclass(value, request_models.BaseModel)
              and value is not request_models.BaseModel}
    assert models == {model for model, _ in BODIES.values()}, "a request model is untried"
    fields = {name for names in numeric_fields().values() for name in names}
    assert fields == set(FIELD_ZERO_ALLOWED), "numeric fields missing from the table"


@pytest.fixture(scope="module")
def client(trained_run):
    from charlstm.serve import ServeOptions, create_app, load_models

    application = create_app(load_models([trained_run]), ServeOptions())
    with testclient.TestClient(application, raise_server_exceptions=False) as client:
        yield client


FIELD_CASES = [(path, name) for path, names in numeric_fields().items() for name in names]


@pytest.mark.parametrize("path, field", FIELD_CASES)
def test_a_hostile_number_in_a_request_is_a_400_naming_the_field(client, path, field):
    _, body = BODIES[path]
    for label, raw in RAW_HOSTILE.items():
        text = json.dumps({**body, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', raw)
        answer = client.post(path, content=text)
        if (label == "0" and FIELD_ZERO_ALLOWED[field]
                or label == "-1" and field in NEGATIVE_ALLOWED):
            assert answer.status_code == 200, (label, answer.text)
            continue
        assert answer.status_code == 400, (label, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == field and field in error["message"], (label, error)
        assert error["type"] == "invalid_request_error"
        if label != "a string of digits":  # a number: its range is named
            assert "must be in [" in error["message"] or "must be in (" in error["message"]


@pytest.mark.slow
def test_the_reported_seed_gets_a_400_from_a_real_server(trained_run, tmp_path):
    """The issue's case: "seed": 2**80 was a 500 and a logged traceback."""
    from serving import Server

    server = Server(str(trained_run), cwd=tmp_path)
    try:
        for field, raw in (("seed", HUGE), ("temperature", "NaN"), ("n", "-1")):
            text = f'{{"model": "run", "prompt": "the ", "max_tokens": 3, "{field}": {raw}}}'
            status, answer = server.post("/v1/completions", raw=text.encode())
            assert status == 400, answer
            assert answer["error"]["param"] == field
            assert "must be in" in answer["error"]["message"]
    finally:
        server.stop()
    assert "Traceback" not in server.process.stderr.read().decode()
