"""`charlstm train`'s setting options come from one table (settings.OPTIONS): one flag per
setting, and the default its --help shows is the one the code uses."""

from __future__ import annotations

from dataclasses import fields

import pytest
import typer

from charlstm.cli import app, flag_for
from charlstm.settings import MODEL_FIELDS, OPTION_OF, OPTIONS, TRAIN_FIELDS, ModelConfig, \
    TrainConfig

SETTINGS = sorted(MODEL_FIELDS | TRAIN_FIELDS)


def train_command():
    return typer.main.get_command(app).commands["train"]


def shown_default(name: str) -> str | None:
    """What --help must say of a setting's default, from the dataclass itself."""
    record = ModelConfig if name in MODEL_FIELDS else TrainConfig
    value = {f.name: f.default for f in fields(record)}[name]
    option = OPTION_OF[name]
    if value is None:
        return None
    if isinstance(value, bool):
        return option.flag.split("/")[0 if value else 1].lstrip("-")
    if option.kind:  # seconds: 300 -> 5m
        return "off" if value == 0 else (f"{int(value) // 60}m" if value % 60 == 0
                                         else f"{int(value)}s")
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_every_setting_has_exactly_one_row_and_one_option():
    assert sorted(option.field for option in OPTIONS) == SETTINGS  # no setting twice
    params = [p.name for p in train_command().params]
    for name in SETTINGS:
        assert params.count(name) == 1, name


@pytest.mark.parametrize("name", SETTINGS)
def test_the_help_shows_the_dataclass_default(name):
    param = next(p for p in train_command().params if p.name == name)
    option = OPTION_OF[name]
    assert option.flag.split("/")[0] in param.opts
    expected = shown_default(name)
    if expected is None:
        assert "(default:" not in param.help
    else:
        assert param.help.count("(default:") == 1
        assert f"(default: {expected}" in param.help, param.help


def test_error_messages_name_the_table_s_flag():
    assert flag_for("time_limit") == "--time"
    assert flag_for("locked_dropout") == "--locked-dropout"
    assert flag_for("batch_size") == "--batch-size"
    assert flag_for("init_from") == "--init-from"  # not a setting: dashes for underscores


def test_a_setting_reaches_the_trainer_from_its_flag(tmp_path, tiny_corpus):
    from conftest import run_cli

    result = run_cli("train", str(tiny_corpus), "--min-lr-ratio", "2", "--max-steps", "1",
                     "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 2
    assert "--min-lr-ratio must be in [0, 1], not 2.0" in result.stderr.decode()
