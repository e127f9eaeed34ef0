"""Run folders: where a run lives, and the files beside its checkpoints.

A run lives in one folder (`checkpoints/<corpus>-<model><layers>x<hidden>` unless `out`
names another; a second run of the same name gets `-2`, then `-3`, ...) holding `last.pt`,
`best.pt`, `config.json` (the run's settings and set-up, rewritten when they change) and
`metrics.jsonl` (one JSON line per evaluation, mirroring the checkpoint's history).
A folder without a checkpoint holds no run yet: `--resume` starts one there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path

from ..data import corpus as corpora
from ..errors import CheckpointError, UsageError
from ..data.files import remove_leftovers, write_atomically

log = logging.getLogger(__name__)


def default_run_name(corpus_name: str, model: dict) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", corpus_name).strip("-.") or "corpus"
    return f"{stem}-{model['model']}{model['num_layers']}x{model['hidden_size']}"


def _numbered(base: Path) -> list[Path]:
    """base, base-2, base-3, ... that exist, in that order."""
    found, n = [], 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not candidate.exists():
            return found
        found.append(candidate)
        n += 1


def holds_checkpoint(folder: Path) -> bool:
    """Whether a run has saved something in `folder` (last.pt, or best.pt alone)."""
    return (folder / "last.pt").exists() or (folder / "best.pt").exists()


def new_run_dir(out: Path | None, corpus_name: str, model: dict, checkpoints_dir: Path,
                reuse_unsaved: bool = False) -> Path:
    """The folder for a new run: `out`, or the next free numbered one for its name.
    `reuse_unsaved` (a --resume that found nothing to resume): the first numbered folder
    holding no checkpoint is taken again, so that restarts of a launch killed before its
    first save do not make a new folder each."""
    if out is not None:
        if (Path(out) / "last.pt").exists():
            raise UsageError.naming(f"{out} already holds a run; add {{resume}} to continue "
                                    "it, or choose another {out}")
        return Path(out)
    base = checkpoints_dir / default_run_name(corpus_name, model)
    taken = _numbered(base)
    unsaved = [folder for folder in taken if not holds_checkpoint(folder)]
    if reuse_unsaved and unsaved:
        return unsaved[0]
    return base.with_name(f"{base.name}-{len(taken) + 1}") if taken else base


def run_to_resume(out: Path | None, corpus: str | None, model: dict,
                  checkpoints_dir: Path) -> Path | None:
    """The run folder to resume: `out` (or the folder of a .pt it names), else the most
    recently saved of the numbered runs for the corpus and model.

    None when there is no run yet: the folder is absent, or holds no checkpoint (empty, or
    left by a first launch killed before its first save with its config.json, an empty
    metrics.jsonl and temporary files). The caller then starts the run from scratch; such
    a config.json is not a run's settings, which are the checkpoint's: nothing was
    trained that the new launch's settings would have to match, and it is rewritten.
    """
    if out is None:
        name = "stdin" if corpus == "-" else Path(corpus or corpora.DEFAULT_CORPUS).stem
        base = checkpoints_dir / default_run_name(name, model)
        runs = [r for r in _numbered(base) if (r / "last.pt").exists()]
        return max(runs, key=lambda r: (r / "last.pt").stat().st_mtime) if runs else None
    run_dir = Path(out)
    if run_dir.suffix == ".pt":  # a checkpoint named: it must be there
        run_dir = run_dir.parent
        if not (run_dir / "last.pt").exists():
            raise UsageError(f"nothing to resume: {run_dir} has no last.pt")
    if (run_dir / "last.pt").exists():
        return run_dir
    if (run_dir / "best.pt").exists():  # a trained run that lost its last.pt
        raise UsageError.naming(f"{run_dir} holds best.pt but no last.pt, so its run "
                                "cannot be resumed; sample from best.pt, or train into "
                                "another {out}")
    return None


class RunFolder:
    """The files of one run's folder other than its checkpoints."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.last = self.path / "last.pt"
        self.best = self.path / "best.pt"

    @contextlib.contextmanager
    def _writing(self):
        """An OSError while writing the run folder becomes a one-line CheckpointError."""
        try:
            yield
        except OSError as exc:
            raise CheckpointError(f"cannot write to the run folder {self.path}: "
                                  f"{exc.strerror or exc}") from exc

    def prepare(self, info: dict, history: list[dict]) -> None:
        """Make the folder, remove what a killed writer left, and write config.json and
        metrics.jsonl for the run as it starts (or continues from `history`)."""
        with self._writing():
            self.path.mkdir(parents=True, exist_ok=True)
            for leftover in remove_leftovers(self.path):
                log.info("removed %s, left by a writer that was killed", leftover)
            self.write_config(info)
            self.rewrite_metrics(history)

    def write_config(self, info: dict) -> None:
        with self._writing():
            write_atomically(self.path / "config.json",
                             json.dumps(info, indent=2).encode("utf-8"))

    def rewrite_metrics(self, history: list[dict]) -> None:
        """metrics.jsonl mirrors the history of the checkpoint the run continues from."""
        lines = "".join(json.dumps(record) + "\n" for record in history)
        write_atomically(self.path / "metrics.jsonl", lines.encode("utf-8"))

    def append_metrics(self, record: dict) -> None:
        try:
            with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise CheckpointError(f"cannot append to {self.path / 'metrics.jsonl'}: "
                                  f"{exc.strerror or exc}") from exc
