"""Running one real `charlstm train` command as a user would, and reading what it did."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


@dataclass
class TrainRun:
    args: list[str]  # the arguments after `charlstm train`
    seconds: float  # wall clock from launch to exit
    peak_mb: float  # peak resident memory of the training process
    records: list[dict]  # metrics.jsonl: one record per evaluation
    config: dict  # config.json: settings, parameters, precision and the budget plan
    stderr: str
    workdir: Path | None = None  # where it ran: the run folder is workdir / "run"

    @property
    def last(self) -> dict:
        return self.records[-1]

    @property
    def val_loss(self) -> float:
        return self.last["val_loss"]

    @property
    def val_bpc(self) -> float:
        return self.last["val_loss"] / math.log(2)

    @property
    def chars(self) -> int:
        train = self.config["train"]
        return self.last["step"] * train["batch_size"] * train["seq_len"]

    def samples(self) -> list[tuple[str, str]]:
        """The milestone samples printed during the run: (heading, text) pairs."""
        found = re.findall(r"^---- (sample at step [^\n]*?) -+\n(.*?)\n-{72}$", self.stderr,
                           flags=re.M | re.S)
        return [(heading, text) for heading, text in found]

    def model(self) -> str:
        m = self.config["model"]
        regularised = f"dropout {m['dropout']:g}"
        if "locked_dropout" in m:  # runs of charlstm before weight drop have neither key
            regularised += (f" ({'locked' if m['locked_dropout'] else 'fresh'}), weight drop "
                            f"{m['weight_drop']:g}")
        return (f"{m['model']} {m['num_layers']}x{m['hidden_size']} "
                f"({self.config['parameters'] / 1e6:.2f}M), {regularised}")


def train(args: list[str], workdir: Path | None = None, python: str | None = None,
          launcher: list[str] | None = None) -> TrainRun:
    """Run `python -m charlstm train ARGS --out run` in a fresh folder (so the corpus cache
    and the run start empty, as for a new user) and time it from launch to exit; with
    this interpreter unless `python` names another (an earlier charlstm's, say), or with
    `launcher` (a command that runs charlstm's command line) instead of `python -m
    charlstm`."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="charlstm-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    launcher = launcher or [python or sys.executable, "-m", "charlstm"]
    command = [*launcher, "train", *args, "--out", "run"]
    env = {**os.environ, "CHARLSTM_CORPORA": str(workdir / "corpora")}
    log = workdir / "stderr.txt"
    started = time.perf_counter()
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                   stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own peak memory
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    errors = log.read_text()
    if process.returncode != 0:
        sys.exit(f"training failed ({process.returncode}):\n{errors[-2000:]}")
    run = workdir / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    config = json.loads((run / "config.json").read_text())
    return TrainRun(args, seconds, usage.ru_maxrss / 1024, records, config, errors, workdir)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
