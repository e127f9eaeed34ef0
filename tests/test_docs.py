"""docs/cli.md matches the --help texts it is generated from (docs/generate_cli_md.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "docs" / "generate_cli_md.py"


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_cli_md", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_generated_from_the_current_help(monkeypatch):
    for name in ("COLUMNS", "NO_COLOR", "TERM"):  # render() sets them; keep them local
        monkeypatch.delenv(name, raising=False)
    generator = load_generator()
    committed = generator.CLI_MD.read_text("utf-8")
    made_with = re.search(r"\(typer (\S+)'s", committed)
    if made_with and made_with.group(1) != typer.__version__:
        # another typer lays the Markdown out differently; that is not staleness
        pytest.skip(f"docs/cli.md was generated with typer {made_with.group(1)}, "
                    f"this is typer {typer.__version__}")
    assert committed == generator.render(), (
        f"docs/cli.md is stale (a --help text changed); regenerate it with: "
        f"{generator.COMMAND}")
