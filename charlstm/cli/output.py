"""What the command line writes: stdout for the product, stderr for bars and diagnostics.

stdout carries only the product (generated text, scores, --json records, tables asked
for) and is flushed often enough to watch but rarely enough to be fast; a reader that goes
away (`| head`) ends the command quietly (PipeClosed), any other failure to write is one
error line. Here too: the `info` view of a checkpoint, the sparkline, byte-progress bars
on stderr (drawn only on a terminal) and the number formats the commands share.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from rich import box
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from ..errors import CharlstmError


def print_error(message: str, where: str | None = None) -> None:
    """An expected failure as one line on stderr: 'charlstm: error: ...', or with the
    command's path ('charlstm sample: error: ...') for a usage error."""
    print(f"{where or 'charlstm'}: error: {message}", file=sys.stderr, flush=True)


class PipeClosed(Exception):
    """The reader of stdout went away (`| head`): stop quietly."""


def stdout_failed(exc: Exception) -> CharlstmError:
    reason = getattr(exc, "strerror", None) or "it is closed"
    return CharlstmError(f"cannot write to standard output: {reason}")


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class StdoutWriter:
    """Streams text to stdout, flushing often enough to watch and rarely enough to be fast."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.last_flush = interval, time.monotonic()

    def write(self, text: str) -> None:
        try:
            sys.stdout.write(text)
            now = time.monotonic()
            if now - self.last_flush >= self.interval:
                sys.stdout.flush()
                self.last_flush = now
        except BrokenPipeError:
            raise PipeClosed from None
        except (OSError, AttributeError) as exc:  # a full disk, a closed stdout (`>&-`)
            raise stdout_failed(exc) from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            raise PipeClosed from None
        except (OSError, AttributeError) as exc:  # a full disk, a closed stdout (`>&-`)
            raise stdout_failed(exc) from None


def write_stdout_bytes(payload: bytes) -> None:
    try:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()
    except OSError as exc:
        raise stdout_failed(exc) from None


class JsonRecords:
    """train --json: each evaluation's metrics record as one JSON line on stdout."""

    def __init__(self):
        self.out = StdoutWriter()

    def __call__(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


def score_json(record: dict) -> str:
    """One JSON line; an empty text's undefined bits per character is null, not NaN."""
    bits_per_char = record["bits_per_char"]
    return json.dumps({**record, "bits_per_char":
                       None if math.isnan(bits_per_char) else bits_per_char})


# ----------------------------------------------------------------------------- formats


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_loss(nats: float | None) -> str:
    if nats is None:
        return "n/a"
    return f"{nats:.4f} nats ({nats / math.log(2):.3f} bits/char)"


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """The values as a row of block characters, low to high (the last `width` of them
    averaged into `width` columns when there are more)."""
    if len(values) > width:
        size = len(values) / width
        values = [sum(values[int(i * size):int((i + 1) * size)])
                  / len(values[int(i * size):int((i + 1) * size)]) for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)


# ----------------------------------------------------------------------------- info


def print_info(summary: dict) -> None:
    """The human view of a checkpoint, from the summary that `info --json` prints: a few
    labelled lines, a sparkline of the validation curve and the history table."""
    console = Console(highlight=False, soft_wrap=True)
    model, train = summary["model"], summary["train"]
    corpus = summary["corpus"] or {}
    history, best, best_step = summary["history"], summary["best_val_loss"], summary["best_step"]
    version = summary["charlstm_version"]
    limit = train.get("max_steps")
    lines = [
        ("checkpoint", f"{summary['path']} (format {summary['format_version']}, charlstm "
                       f"{'?' if version is None else version})"),
        ("model", f"{model['model']}, {model['num_layers']} layers x {model['hidden_size']} "
                  f"units, embedding {model['embed_size']}, dropout {model['dropout']}"
                  f"{' (locked)' if model.get('locked_dropout') else ''}, weight drop "
                  f"{model.get('weight_drop', 0.0)}"
                  + (f", output layer of rank {model['head_rank']}"
                     if model.get("head_rank") else "")
                  + f" ({summary['parameters'] / 1e6:.2f}M parameters)"),
        ("vocabulary", f"{summary['vocab_size']} characters"),
        ("corpus", f"{source_text(corpus)}: {corpus.get('characters', 0):,} characters, "
                   f"sha256 {str(corpus.get('sha256', ''))[:12]}"),
        ("training", f"step {summary['step'] or 0:,}" + (f" of {limit:,}" if limit else "")
                     + f", {format_duration(summary['elapsed'] or 0)}, batch "
                       f"{train.get('batch_size')} x {train.get('seq_len')}, lr "
                       f"{train.get('lr')}, precision {summary['precision']}"),
        ("best validation", format_loss(best) + (f" at step {best_step:,}" if best_step else "")),
    ]
    parent = summary.get("parent")
    if parent:  # a fine-tuning run: the model it started from
        lines.insert(2, ("fine-tuned from", f"{parent.get('path')} (step "
                                            f"{parent.get('step') or 0:,}, sha256 "
                                            f"{str(parent.get('sha256', ''))[:12]})"))
    curve = [r["val_bpc"] for r in history if r.get("val_bpc") is not None]
    if len(curve) > 1:
        lines.append(("validation", f"{sparkline(curve)}  {curve[0]:.3f} -> {curve[-1]:.3f} "
                                    "bits/char"))
    for key, value in lines:
        console.print(f"{key:<16} {value}", markup=False)
    if history:
        console.print(_history_table(history))


def _history_table(history: list[dict]) -> Table:
    table = Table(box=box.SIMPLE, title="history", title_justify="left")
    for column in ("step", "epoch", "train loss", "val loss", "val bits/char", "time"):
        table.add_column(column, justify="right")
    for r in history:
        val = r.get("val_loss")
        table.add_row(f"{r['step']:,}", f"{r.get('epoch', 0):.2f}",
                      f"{r['train_loss']:.4f}",
                      "n/a" if val is None else f"{val:.4f}" + (" *" if r.get("best") else ""),
                      "n/a" if val is None else f"{r['val_bpc']:.3f}",
                      format_duration(r.get("elapsed", 0)))
    return table


# ----------------------------------------------------------------------------- progress bars


def byte_progress(description: str):
    """A tqdm byte counter on stderr for long reads, shown only on a terminal."""
    state: dict = {}

    def update(done: int, total: int | None) -> None:
        if not sys.stderr.isatty() or (total or 0) < 20_000_000:
            return
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, unit="B", unit_scale=True, leave=False,
                                      desc=description, file=sys.stderr)
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    return update


class DownloadProgress:
    """`corpus get`'s byte bar on stderr, drawn only on a terminal; a context manager that
    closes the bar, and the progress callback `corpus.download` reports to."""

    def __init__(self, description: str):
        self.description, self.bar = description, None

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit="B", unit_scale=True, desc=self.description,
                            file=sys.stderr, leave=False, disable=not sys.stderr.isatty())
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> "DownloadProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.close()


def source_text(corpus: dict) -> str:
    """Where a corpus came from, in a line: its path or name, or a collection's paths."""
    source = corpus.get("source", "?")
    if not isinstance(source, list):
        return str(source)
    globs = "".join(f" --glob {g!r}" for g in corpus.get("globs") or [])
    return f"{' '.join(source)}{globs} ({corpus.get('files', '?'):,} files)"
