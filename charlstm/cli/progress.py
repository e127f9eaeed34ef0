"""What a user watches while training: a progress bar, evaluations and milestone samples.

Part of the command line: everything here goes to stderr, so stdout stays free for the
product. On a terminal a tqdm bar shows step, loss, speed, learning rate, the gradient norm
(and how many steps clipping acted on since the last report) and ETA; when
stderr is not a terminal (a log file, CI) plain step lines are written instead. Quiet
(`train -q`) shows only the start, the evaluations and warnings: no bar, step lines or
samples (the command adds the final lines).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm

from .output import format_duration, format_loss
from ..training.callbacks import StepStats, TrainingCallback, TrainResult

PLAIN_REPORT_SECONDS = 10.0  # how often plain (non-terminal) output reports progress


def _gradient_note(stats: StepStats) -> str:
    """', grad 1.23 (clipped 4 of 10)': the mean gradient norm before clipping since the
    last report, and how many of its steps clipping acted on ('' before any)."""
    if not stats.grad_steps:
        return ""
    clipped = f" (clipped {stats.clipped} of {stats.grad_steps})" if stats.clipped else ""
    return f", grad {stats.grad_norm:.3g}{clipped}"


class TrainingDisplay(TrainingCallback):
    def __init__(self, stream: TextIO | None = None, quiet: bool = False,
                 live: bool | None = None, records: Callable[[dict], None] | None = None):
        """`live` draws a bar (default: when the stream is a terminal; never when quiet).
        `records`, if given, also receives each evaluation's metrics record."""
        self.stream = stream or sys.stderr
        self.records = records
        self.quiet = quiet
        self.live = not quiet and (self.stream.isatty() if live is None else live)
        self.bar: tqdm | None = None
        self.total_steps: int | None = None
        self.time_limit: float | None = None
        self.last_plain_report = 0.0
        self.last_val_loss: float | None = None

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def on_start(self, info: dict) -> None:
        model, train, corpus = info["model"], info["train"], info["corpus"]
        self.total_steps = train["max_steps"]
        self.time_limit = train["time_limit"]
        limits = []
        if train["max_steps"]:
            limits.append(f"{train['max_steps']:,} steps")
        if train["epochs"]:
            limits.append(f"{train['epochs']:g} epochs")
        if train["time_limit"]:
            limits.append(format_duration(train["time_limit"]))
        resumed = f", resuming at step {info['step']:,}" if info["step"] else ""
        cell = model["model"].upper()
        article = "a" if cell == "GRU" else "an"  # an LSTM, an RNN, a GRU
        if info.get("plan"):
            self.write(f"charlstm: {info['plan']}")
        self.write(
            f"charlstm: training {article} {cell} {model['num_layers']}x"
            f"{model['hidden_size']} ({info['parameters'] / 1e6:.2f}M parameters) on "
            f"{corpus['name']}: {info['train_chars']:,} training + {info['val_chars']:,} "
            f"validation characters, vocabulary {info['vocab_size']}"
            + (f" (output layer of rank {model['head_rank']})" if model.get("head_rank")
               else "") + "\n"
            f"charlstm: batch {train['batch_size']} x {train['seq_len']} characters, "
            f"lr {train['lr']:g}, until {' or '.join(limits)}{resumed}; "
            f"device {info['device']}, precision {info['precision_note']}\n"
            f"charlstm: writing {info['run_dir']}/ (Ctrl-C saves and stops)")
        if self.live:
            self.bar = tqdm(total=self.total_steps, initial=info["step"], file=self.stream,
                            unit="step", dynamic_ncols=True, leave=False,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                                       "[{elapsed}<{remaining}{postfix}]"
                            if self.total_steps else None)
        self.last_plain_report = time.monotonic()

    def on_step(self, stats: StepStats) -> None:
        speed = f"{stats.chars_per_sec / 1000:.1f}k chars/s"
        gradient = _gradient_note(stats)
        if self.bar is not None:
            self.bar.update(stats.step - self.bar.n)
            postfix = f"loss {stats.loss:.3f}, {speed}, lr {stats.lr:.2e}{gradient}"
            if self.time_limit:
                left = max(self.time_limit - stats.elapsed, 0)
                postfix += f", {format_duration(left)} left"
            self.bar.set_postfix_str(postfix, refresh=True)
            return
        if self.quiet:
            return
        now = time.monotonic()
        if now - self.last_plain_report >= PLAIN_REPORT_SECONDS:
            self.last_plain_report = now
            of = f"/{self.total_steps:,}" if self.total_steps else ""
            self.write(f"step {stats.step:,}{of}  loss {stats.loss:.4f}  {speed}  "
                       f"lr {stats.lr:.2e}{gradient.replace(',', ' ')}  "
                       f"epoch {stats.epoch:.2f}  {format_duration(stats.elapsed)}")

    def on_eval(self, record: dict) -> None:
        self.last_val_loss = record["val_loss"]
        best = "  (best so far)" if record["best"] else ""
        self.write(f"step {record['step']:,}: train loss {record['train_loss']:.4f}, "
                   f"validation {format_loss(record['val_loss'])}{best}  "
                   f"[{format_duration(record['elapsed'])}]")
        if self.records is not None:
            self.records(record)

    def on_sample(self, step: int, text: str) -> None:
        if self.quiet:
            return
        val = ("" if self.last_val_loss is None
               else f", validation loss {self.last_val_loss:.3f}")
        heading = f"---- sample at step {step:,}{val} "
        self.write(f"{heading}{'-' * max(4, 72 - len(heading))}\n{text}\n{'-' * 72}")

    def on_notice(self, message: str) -> None:
        self.write(f"charlstm: warning: {message}")

    def on_end(self, result: TrainResult) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
