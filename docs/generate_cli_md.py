"""Write docs/cli.md, the flag reference, from the same help texts `charlstm --help` shows.

The Markdown comes from typer's own generator (`typer charlstm.cli utils docs --name
charlstm`), so each flag's help is written once, in charlstm/cli.py; this script only adds a
header saying how the page was made, and fixes the environment so that the output does not
depend on the terminal. Run it after changing any help text:

    python docs/generate_cli_md.py          # rewrite docs/cli.md
    python docs/generate_cli_md.py --check  # exit 1 if docs/cli.md is stale

tests/test_docs.py runs the check.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

CLI_MD = Path(__file__).resolve().parent / "cli.md"
COMMAND = "python docs/generate_cli_md.py"
# the terminal must not shape the text: no colour, a fixed width
FIXED_ENV = {"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"}


def render() -> str:
    """The text docs/cli.md should hold, from the installed charlstm and typer."""
    os.environ.update(FIXED_ENV)
    import typer
    import typer.cli

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cli.md"
        # the same as `typer charlstm.cli utils docs --name charlstm --output FILE`
        with contextlib.redirect_stdout(io.StringIO()):  # its "Docs saved to ..." line
            typer.cli.app(["charlstm.cli", "utils", "docs", "--name", "charlstm",
                           "--output", str(out)], prog_name="typer", standalone_mode=False)
        body = out.read_text("utf-8")
    header = (f"<!-- Generated from the --help texts by `{COMMAND}` (typer "
              f"{typer.__version__}'s `typer charlstm.cli utils docs --name charlstm`). "
              "Do not edit by hand: change the help in charlstm/cli.py and rerun it. -->\n\n")
    return header + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if docs/cli.md differs from the help texts")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if CLI_MD.exists() and CLI_MD.read_text("utf-8") == text:
            return 0
        print(f"docs/cli.md is stale; regenerate it with: {COMMAND}", file=sys.stderr)
        return 1
    CLI_MD.write_text(text, "utf-8")
    print(f"wrote {CLI_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
