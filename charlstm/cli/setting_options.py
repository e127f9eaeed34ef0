"""`charlstm train`'s options for the model and training settings, made from the one table
beside the settings (settings.OPTIONS): the flag, its help and the default it shows, which
is the dataclass's own (or the default preset's, which is the same).
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import typer

from ..settings import OPTIONS, ModelConfig, Option, TrainConfig, defaults
from ..training.presets import PRESETS
from .app import CKPT, DATA, MODEL, OPTIM, OUTPUT
from .input import parse_duration, parse_interval

PANELS = {"data": DATA, "model": MODEL, "optimization": OPTIM, "checkpoints": CKPT,
          "output": OUTPUT}
# the settings that differ between presets (the default preset's are the dataclass's)
FROM_PRESET = {name for part in ("model", "train") for name in PRESETS["small"][part]
               if len({repr(chosen[part][name]) for chosen in PRESETS.values()}) > 1}


def default_text(option: Option) -> str:
    """How --help states a setting's default: " (default: ...)", or "" for none."""
    model, train = defaults()  # the dataclasses' own
    value = {**model, **train}[option.field]
    if value is None:
        return ""
    if isinstance(value, bool):  # the half of the switch that is the default
        on, off = option.flag.split("/")
        shown = (on if value else off).lstrip("-")
    elif option.kind == "interval":
        shown = "off" if value == 0 else _seconds(value)
    elif option.kind == "duration":
        shown = _seconds(value)
    else:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
    preset = ", or the preset's" if option.field in FROM_PRESET else ""
    return f" (default: {shown}{preset})"


def _seconds(value: float) -> str:
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m" if minutes and not seconds else f"{int(value)}s"


def _parameter(option: Option) -> inspect.Parameter:
    declared = (TrainConfig.__dataclass_fields__.get(option.field)
                or ModelConfig.__dataclass_fields__[option.field])
    annotation = str if option.kind else _plain_type(declared.type)
    names = [option.flag] + ([option.short] if option.short else [])
    return inspect.Parameter(
        option.field, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[annotation],
        default=typer.Option(None, *names, rich_help_panel=PANELS[option.group],
                             help=option.help + default_text(option), show_default=False))


def _plain_type(declared) -> type:
    """int, float, str or bool, from a dataclass field's declared type ("int | None")."""
    text = declared if isinstance(declared, str) else getattr(declared, "__name__", "")
    for plain in (bool, int, float, str):
        if text.split("|")[0].strip() == plain.__name__:
            return plain
    raise TypeError(f"no command-line type for {declared!r}")


def with_setting_options(command: Callable) -> Callable:
    """`command`, taking every setting of OPTIONS as a keyword (None when not given)
    after its own parameters; typer reads the signature this sets."""
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)  # typer passes all by name
           for p in inspect.signature(command).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    order = list(PANELS.values())

    def panel(parameter: inspect.Parameter) -> int:  # arguments and unpanelled first
        name = getattr(parameter.default, "rich_help_panel", None)
        return order.index(name) + 1 if name in order else 0

    parameters = sorted(own + [_parameter(option) for option in OPTIONS], key=panel)
    command.__signature__ = inspect.Signature(parameters)
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    return command


def read_setting(name: str, value):
    """A setting's value as given on the command line, in the settings' own units."""
    option = next(o for o in OPTIONS if o.field == name)
    if value is None or option.kind is None:
        return value
    if option.kind == "duration":
        return parse_duration(value, option.flag)
    return parse_interval(value, option.flag)
