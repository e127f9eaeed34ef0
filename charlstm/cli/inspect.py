"""`charlstm inspect`: see inside a model as it reads a text: surprise per character, the
likeliest next characters, chosen units' values, the units that track properties of the
text (--find), how often the gates saturate (--gates), and every state to a file (--dump).

The walk (`charlstm.infer.states`) streams the text in chunks; each view draws chunk by
chunk or keeps running sums, so a long input costs bounded memory.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console

from ..errors import UsageError
from .app import CHECKPOINT_ARGUMENT, DEVICE_OPTION, HELP, app
from .input import open_score_input
from .output import StdoutWriter
from . import inspect_view as view

EXCERPT_LINES = 6  # lines of the excerpt each --find property is shown on


@app.command(context_settings=HELP, epilog=(
    "Layers and units are counted from 0. Properties for --find (computed from the text "
    "alone): line_position, indentation, in_double_quotes, in_single_quotes, "
    "bracket_depth, in_comment, in_word, since_space, is_upper (docs/inspect.md).\n\n"
    "Examples:\n\n"
    "  charlstm inspect RUN 'def main(argv):'          # coloured by surprise\n\n"
    "  charlstm inspect RUN notes.txt --top 5          # the model's guesses\n\n"
    "  charlstm inspect RUN code.py --find             # units that track the text\n\n"
    "  charlstm inspect RUN code.py --unit 0:17 --state cell\n\n"
    "  charlstm inspect RUN book.txt --gates -o gates.png\n\n"
    "  charlstm inspect RUN - --dump states.npz < book.txt"))
def inspect(
    checkpoint_path: Path = CHECKPOINT_ARGUMENT,
    source: Optional[str] = typer.Argument(
        None, metavar="[TEXT|FILE|-]", show_default=False,
        help="The text to look at: a file if one has this name, '-' (or none, when stdin "
             "is not a terminal) for stdin, else the argument itself as text."),
    top: int = typer.Option(0, "--top", "-k", min=0, max=100,
                            help="One row per character: its bits and the model's K "
                                 "likeliest next characters with their probabilities."),
    units: list[str] = typer.Option([], "--unit", "-u", metavar="LAYER:UNIT",
                                    help="Colour the text by this unit's value, blue "
                                         "(negative) to red (positive); repeatable."),
    state: Optional[str] = typer.Option(None, "--state",
                                        help="cell or hidden: the state --unit reads "
                                             "(default: cell for an LSTM; a GRU and an RNN "
                                             "have only hidden)."),
    find: bool = typer.Option(False, "--find",
                              help="Rank every unit by how closely it tracks each property "
                                   "of the text (Pearson's correlation), and show the best "
                                   "one on an excerpt."),
    best: int = typer.Option(3, "--best", min=1, max=65536,
                             help="Units listed per property by --find."),
    gates: bool = typer.Option(False, "--gates",
                               help="For each layer and gate, the fraction of steps spent "
                                    "left-saturated (< 0.1) and right-saturated (> 0.9)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="With --gates: also write the saturation "
                                               "plot to this PNG (needs matplotlib)."),
    exact: bool = typer.Option(False, "--exact",
                               help="With --find or --gates: read the text as one stream, "
                                    "character after character (slower), instead of as "
                                    "parallel streams each warmed on the text before it "
                                    "(nearly the same values)."),
    dump: Optional[Path] = typer.Option(None, "--dump", metavar="FILE.npz",
                                        help="Write every layer's states and gates (one row "
                                             "per character), the bits and the text to a "
                                             "NumPy .npz file."),
    as_json: bool = typer.Option(False, "--json",
                                 help="JSON lines instead: one per character (char, bits, "
                                      "top, units), or per property with --find, or per "
                                      "layer and gate with --gates."),
    lossy: bool = typer.Option(False, "--lossy",
                               help="Replace invalid UTF-8 bytes with U+FFFD (an unknown "
                                    "character) instead of failing."),
    device: str = DEVICE_OPTION,
) -> None:
    """Look inside a model as it reads a text: surprise, guesses, units, gates."""
    from ..api import load

    if sum([bool(units), find, gates]) > 1:
        raise UsageError("choose one of --unit, --find and --gates")
    if output is not None and not gates:
        raise UsageError("--output is for the --gates plot")
    started = time.monotonic()
    pieces, close = _open_text(source, lossy)
    try:
        lm = load(checkpoint_path, device)
        config = lm.config
        kind = state or ("cell" if config.model == "lstm" else "hidden")
        from ..infer.inspect import check_state_kind, parse_unit

        check_state_kind(kind, config)
        chosen = [parse_unit(spec, kind, config) for spec in units]
        inspection = Inspection(lm, chosen, top, as_json, dump, exact)
        if find:
            characters, unknown = inspection.find(pieces, best)
        elif gates:
            characters, unknown = inspection.gates(pieces, output)
        else:
            characters, unknown = inspection.text(pieces)
    finally:
        close()
    _summary(characters, unknown, dump, started)


def _open_text(source: str | None, lossy: bool):
    """The text as pieces, and what closes its file."""
    from ..data.utf8 import decode_blocks

    if source is not None and source != "-" and not _names_a_file(source):
        return iter([source]), lambda: None
    label, stream = open_score_input(source)
    close = stream.close if source not in (None, "-") else (lambda: None)
    return decode_blocks(stream, label, lossy), close


def _names_a_file(source: str) -> bool:
    try:
        return "\n" not in source and Path(source).is_file()
    except (OSError, ValueError):  # too long for a name, or a NUL in it
        return False


def _summary(characters: int, unknown: int, dump: Path | None, started: float) -> None:
    from ..infer.scoring import UNKNOWN_CHAR_BITS

    if unknown:
        print(f"charlstm: warning: {unknown:,} character(s) the model never saw, scored "
              f"{UNKNOWN_CHAR_BITS:.2f} bits each; the state goes on from the character "
              "before", file=sys.stderr)
    if dump is not None:
        print(f"charlstm: wrote {dump} ({characters:,} characters)", file=sys.stderr)
    logging.getLogger("charlstm").info("inspected %s characters in %.1f s",
                                       f"{characters:,}", time.monotonic() - started)


class Inspection:
    """One inspect run: the walk over the text, with its dump, and the view asked for."""

    def __init__(self, lm, units: list, top: int, as_json: bool, dump: Path | None,
                 exact: bool):
        from ..infer.dump import StateDump

        self.lm, self.units, self.top, self.as_json = lm, units, top, as_json
        self.exact = exact  # for the statistics views; the others always are
        self.dump = StateDump(dump) if dump is not None else None
        self.out = StdoutWriter()
        self.console = Console(highlight=False, soft_wrap=True)
        self.coloured = self.console.is_terminal and not self.console.no_color
        self.characters = self.unknown = 0

    def _chunks(self, pieces, gates: bool = False, predictions: bool = False,
                exact: bool = True):
        """The walk's chunks, each also dumped; an empty text is an error, and a dump
        is written only when the walk ends well."""
        from ..infer.scoring import UNKNOWN_CHAR_BITS

        walk = self.lm.walk(pieces, gates=gates or self.dump is not None,
                            predictions=predictions, exact=exact)
        if self.dump is not None:
            self.dump.__enter__()
        try:
            for chunk in walk:
                self.characters += len(chunk.text)
                self.unknown += int((chunk.bits == UNKNOWN_CHAR_BITS).sum())
                if self.dump is not None:
                    self.dump.add(chunk)
                yield chunk
            if not self.characters:
                raise UsageError("the text is empty: nothing to inspect")
        except BaseException:
            if self.dump is not None:
                self.dump.__exit__(*sys.exc_info())
            raise
        if self.dump is not None:
            self.dump.__exit__(None, None, None)

    def text(self, pieces) -> tuple[int, int]:
        """The default view: the text coloured by bits or by --unit units; --top guesses;
        or --json records."""
        quiet = self.dump is not None and not (self.units or self.top or self.as_json)
        rows = ([view.Row(str(u), False) for u in self.units] if self.units
                else [view.Row("bits", True)])
        painter = view.TextPainter(rows, self.coloured, self.console)
        chars = self.lm.vocab.chars
        for chunk in self._chunks(pieces, predictions=bool(self.top)):
            if quiet:
                continue
            values = [self._unit_values(chunk, u) for u in self.units] or [chunk.bits]
            guesses = None
            if self.top:
                from ..infer.inspect import top_guesses

                guesses = top_guesses(chunk.log_probs, chars, self.top)
            if self.as_json:
                self._json_records(chunk, values, guesses)
            elif self.top:
                for t, char in enumerate(chunk.text):
                    self.out.write(view.guesses_line(char, chunk.bits[t], guesses[t],
                                                     self.coloured, self.console))
            else:
                self.out.write(painter.add(chunk.text, values))
        if not (quiet or self.as_json or self.top):
            self.out.write(painter.finish())
        self.out.flush()
        return self.characters, self.unknown

    def _unit_values(self, chunk, unit) -> np.ndarray:
        from ..infer.inspect import unit_values

        values = unit_values(chunk, unit)
        return np.tanh(values) if unit.kind == "cell" else values

    def _json_records(self, chunk, values, guesses) -> None:
        from ..infer.inspect import unit_values

        raw = [unit_values(chunk, u) for u in self.units]
        lines = []
        for t, char in enumerate(chunk.text):
            record = {"char": char, "bits": float(chunk.bits[t])}
            if guesses is not None:
                record["top"] = [[c, p] for c, p in guesses[t]]
            if self.units:
                record["units"] = {f"{u.layer}:{u.index}:{u.kind}": float(v[t])
                                   for u, v in zip(self.units, raw)}
            lines.append(json.dumps(record, ensure_ascii=False))
        self.out.write("\n".join(lines) + "\n")

    def find(self, pieces, best: int) -> tuple[int, int]:
        """--find: each property's best units, and the best one on an excerpt."""
        from ..infer.inspect import UnitCorrelations
        from ..infer.properties import TextProperties

        correlations = UnitCorrelations(self.lm.config)
        properties = TextProperties()
        for chunk in self._chunks(pieces, exact=self.exact):
            correlations.add(chunk, properties.values(chunk.text))
        for finding in correlations.findings(best):
            if self.as_json:
                self.out.write(json.dumps({
                    "property": finding.property, "description": finding.description,
                    "units": [{"layer": u.layer, "unit": u.index, "state": u.kind,
                               "correlation": r} for u, r in finding.units]}) + "\n")
            else:
                self.out.write(self._finding_text(finding, correlations))
        self.out.flush()
        return self.characters, self.unknown

    def _finding_text(self, finding, correlations) -> str:
        heading = f"{finding.property}: {finding.description}\n"
        if finding.constant:
            return heading + "  (it never changes in this text: nothing to correlate)\n\n"
        listed = "".join(f"  unit {u.layer}:{u.index} {u.kind:<6}  r = {r:+.3f}\n"
                         for u, r in finding.units)
        unit = finding.units[0][0]
        text, values = correlations.excerpt(unit)
        lines = text.split("\n")[:EXCERPT_LINES]
        text = "\n".join(lines)
        values = values[:len(text)]
        # centred and scaled to the excerpt's range, so that how it follows the
        # property shows even in a unit that never changes sign
        centred = values - values.mean() if values.size else values
        shown = centred / max(float(np.abs(centred).max(initial=0.0)), 1e-9)
        excerpt = view.paint(text, shown, view.Row("", False), self.coloured, self.console)
        return f"{heading}{listed}  the best, {unit}, on the start of the text (blue below its mean, red above):\n{excerpt}\n"

    def gates(self, pieces, output: Path | None) -> tuple[int, int]:
        """--gates: the saturation table (and plot)."""
        from ..infer.inspect import GateSaturation

        saturation = GateSaturation(self.lm.config)
        for chunk in self._chunks(pieces, gates=True, exact=self.exact):
            saturation.add(chunk)
        rows = saturation.table()
        if self.as_json:
            self.out.write("".join(json.dumps(row) + "\n" for row in rows))
        else:
            self.out.write(view.saturation_chart(rows))
        self.out.flush()
        if output is not None:
            from ..infer.saturation_plot import save_saturation_plot

            config = self.lm.config
            save_saturation_plot(*saturation.fractions(), saturation.gates, output,
                                 f"{config.model.upper()} {config.num_layers}x"
                                 f"{config.hidden_size}: gate saturation over "
                                 f"{self.characters:,} characters")
            print(output, file=sys.stderr)
        return self.characters, self.unknown
