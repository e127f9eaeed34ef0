"""nanoGPT's character-level CPU recipe, run from a checkout the user provides.

Nothing of nanoGPT is copied here: its `train.py`, `model.py`, `configurator.py` and
`config/train_shakespeare_char.py` are run or imported from the checkout, in a scratch
folder that holds what its recipe expects to find in its working directory:

- `data/shakespeare_char/{train,val}.bin, meta.pkl`, prepared here as nanoGPT's
  `data/shakespeare_char/prepare.py` does (the vocabulary is the sorted characters of the
  whole text, ids as uint16), but from any corpus, without network, and with the split
  where charlstm puts it (`charlstm.data.split.split_point`). nanoGPT's script cuts at
  `int(n * 0.9)`, charlstm keeps the last `round(n * 0.1)` characters; the two differ by
  at most one character, and here both models hold out exactly the same text.
- `configurator.py`, a link to the checkout's (train.py reads it from the working
  directory), and `out-N/ckpt.pt`, where the run writes its checkpoint.

nanoGPT saves its checkpoint only at its evaluations (every `eval_interval` = 250
iterations in this config) and only when its estimate of the validation loss improved,
so its final model is the one of its last improving evaluation; the record says which.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import pickle
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

CONFIG = "config/train_shakespeare_char.py"
NEEDED = ("train.py", "model.py", "configurator.py", CONFIG)
DATASET = "shakespeare_char"  # the config's dataset: data/shakespeare_char under the cwd
EVAL_INTERVAL = 250  # the config's eval_interval: checkpoints are saved only then
RECIPE_ITERS = 2000
# nanoGPT's documented CPU recipe for character-level Shakespeare (its README), with the
# evaluation shortened (eval_iters 20) and dropout off, as issue 15 fixed it
RECIPE = {"device": "cpu", "compile": False, "eval_iters": 20, "log_interval": 1,
          "block_size": 64, "batch_size": 12, "n_layer": 4, "n_head": 4, "n_embd": 128,
          "dropout": 0.0}
IGNORE = -1  # the target id nanoGPT's loss ignores (its cross_entropy's ignore_index)
ITERATION = re.compile(r"^iter (\d+): loss [-\d.naif]+, time ([\d.]+)ms", re.M)


class NanoGPTError(Exception):
    """The checkout is not usable or a run failed: a one-line reason."""


def check_checkout(nanogpt: Path) -> None:
    missing = [name for name in NEEDED if not (nanogpt / name).is_file()]
    if missing:
        raise NanoGPTError(f"{nanogpt} is not a nanoGPT checkout (no {', '.join(missing)}); "
                           "clone https://github.com/karpathy/nanoGPT and give its folder")


def version(nanogpt: Path, stated_commit: str | None = None) -> str:
    """The checkout's commit (when it is a git clone, +changes when edited; else the one
    the user states, e.g. for a `git archive` export) and a hash of the files the recipe
    runs, which names the code even in a copy without git."""
    digest = hashlib.sha256()
    for name in NEEDED:
        digest.update((nanogpt / name).read_bytes())
    files = f"sha256 of {', '.join(NEEDED)}: {digest.hexdigest()[:12]}"
    try:
        commit = subprocess.run(["git", "-C", str(nanogpt), "rev-parse", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(nanogpt), "status", "--porcelain", "--",
                                *NEEDED], capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        stated = f"commit {stated_commit} (as stated)" if stated_commit else "commit unknown"
        return f"{stated}, not a git clone; {files}"
    return f"commit {commit}{' +changes' if dirty else ''}; {files}"


def prepare(text: str, val_start: int, workdir: Path, nanogpt: Path) -> np.ndarray:
    """Write the recipe's data into workdir/data/shakespeare_char (train: text[:val_start],
    val: the rest) and link configurator.py; returns the whole text's ids, (N,) uint16."""
    chars = sorted(set(text))
    if len(chars) > 65536:
        raise NanoGPTError(f"{len(chars):,} distinct characters: nanoGPT's uint16 ids hold "
                           "at most 65,536")
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.fromiter((stoi[ch] for ch in text), dtype=np.uint16, count=len(text))
    data = workdir / "data" / DATASET
    data.mkdir(parents=True, exist_ok=True)
    ids[:val_start].tofile(data / "train.bin")
    ids[val_start:].tofile(data / "val.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    with open(data / "meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    link = workdir / "configurator.py"
    if not link.exists():
        link.symlink_to((nanogpt / "configurator.py").resolve())
    return ids


def arguments(max_iters: int, out_dir: str) -> list[str]:
    """The recipe's overrides for `max_iters` iterations (the cosine schedule decays over
    all of them). Below one evaluation interval the run evaluates at its end instead, so
    that it saves a checkpoint at all."""
    settings = {**RECIPE, "max_iters": max_iters, "lr_decay_iters": max_iters,
                "out_dir": out_dir}
    if max_iters < EVAL_INTERVAL:
        settings["eval_interval"] = max_iters
    return [f"--{key}={value}" for key, value in settings.items()]


@dataclass
class Run:
    max_iters: int
    seconds: float  # wall clock from launch to exit
    iteration_seconds: list[float]  # the time train.py logged for each iteration
    checkpoint: Path

    def pace(self) -> tuple[float, float]:
        """(seconds outside the iterations, seconds per iteration) of this run: the
        iterations after the first, whose time includes the recurring evaluations."""
        later = self.iteration_seconds[1:]
        per_iteration = sum(later) / max(1, len(later))
        return self.seconds - per_iteration * len(self.iteration_seconds), per_iteration


def train(nanogpt: Path, workdir: Path, max_iters: int, name: str) -> Run:
    """Run `python train.py config/train_shakespeare_char.py ...` in workdir, timed from
    launch to exit; its output goes to workdir/NAME.log."""
    command = [sys.executable, str(nanogpt / "train.py"), str(nanogpt / CONFIG),
               *arguments(max_iters, name)]
    log = workdir / f"{name}.log"
    started = time.perf_counter()
    with open(log, "w") as output:
        status = subprocess.run(command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    text = log.read_text(errors="replace")
    if status != 0:
        raise NanoGPTError(f"nanoGPT's train.py failed ({status}); the end of {log}:\n"
                           f"{text[-2000:]}")
    checkpoint = workdir / name / "ckpt.pt"
    if not checkpoint.exists():
        raise NanoGPTError(f"nanoGPT saved no checkpoint (its validation estimate never "
                           f"improved after iteration 0); see {log}")
    times = [float(ms) / 1000 for _, ms in ITERATION.findall(text)]
    if not times:
        raise NanoGPTError(f"no 'iter N: loss L, time T ms' lines in {log}: has train.py's "
                           "log changed?")
    return Run(max_iters, seconds, times, checkpoint)


def iterations_for_budget(budget: float, startup: float, per_iteration: float,
                          interval: int = EVAL_INTERVAL) -> int:
    """max_iters whose run takes about `budget` seconds, at a run's measured pace (see
    Run.pace; train.py runs max_iters + 1 iterations), to the nearest multiple of the
    evaluation interval, since iterations after the last evaluation never reach the
    checkpoint. Under one interval, the iterations themselves (at least 1)."""
    iterations = (budget - startup) / per_iteration - 1
    if iterations < interval:
        return max(1, math.floor(iterations))
    return interval * round(iterations / interval)


# ------------------------------------------------------------------------------ scoring


def window_batches(tokens: np.ndarray, start: int, end: int, block_size: int,
                   windows: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """nanoGPT's non-overlapping block_size windows whose targets are every character of
    tokens[start:end] exactly once, `windows` per batch: (inputs (B, T), targets (B, T)).

    As in nanoGPT's training, a window's inputs are its targets shifted by one, so its
    first target sees one character of context (the one before it: for the split's
    first character, the last of the training split) and its last sees block_size; no
    context crosses from one window to the next. Targets past `end` are IGNORE.
    """
    if start < 1 or end <= start:
        raise ValueError("scoring needs at least one character before and in the span")
    count = -(-(end - start) // block_size)
    for first in range(0, count, windows):
        rows = np.arange(first, min(first + windows, count))
        positions = start + rows[:, None] * block_size + np.arange(block_size)  # (B, T)
        clamped = np.minimum(positions, end - 1)
        targets = np.where(positions < end, tokens[clamped].astype(np.int64), IGNORE)
        yield (torch.from_numpy(tokens[clamped - 1].astype(np.int64)),
               torch.from_numpy(targets))


@torch.no_grad()
def windowed_loss(logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  tokens: np.ndarray, start: int, end: int, block_size: int) -> float:
    """Mean cross-entropy in nats over every character of tokens[start:end], read in
    window_batches; `logits_of(inputs, targets)` gives (B, T, V) logits."""
    total = torch.zeros((), dtype=torch.float64)
    for inputs, targets in window_batches(tokens, start, end, block_size):
        logits = logits_of(inputs, targets)
        total += torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).double(), targets.flatten(), ignore_index=IGNORE,
            reduction="sum")
    return total.item() / (end - start)


def load_model(nanogpt: Path, checkpoint: Path) -> tuple[torch.nn.Module, int]:
    """nanoGPT's model in eval mode, built by its own model.py from its checkpoint, and
    the iteration the checkpoint was saved at."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    with contextlib.redirect_stdout(sys.stderr):  # it prints its parameter count
        model = module.GPT(module.GPTConfig(**saved["model_args"]))
    # compiled runs save their weights under this prefix, as nanoGPT's sample.py knows
    weights = {key.removeprefix("_orig_mod."): value for key, value in saved["model"].items()}
    model.load_state_dict(weights)
    return model.eval(), int(saved["iter_num"])


def score(nanogpt: Path, checkpoint: Path, tokens: np.ndarray, start: int) -> tuple[float, int]:
    """(mean loss in nats over tokens[start:], the checkpoint's iteration)."""
    model, iteration = load_model(nanogpt, checkpoint)
    block_size = model.config.block_size
    # with targets, nanoGPT's forward returns the logits of every position, not the last
    loss = windowed_loss(lambda inputs, targets: model(inputs, targets)[0], tokens, start,
                         len(tokens), block_size)
    return loss, iteration

