"""Run folders: where a run lives, and the files beside its checkpoints.

A run lives in one folder (`checkpoints/<corpus>-<model><layers>x<hidden>` unless `out`
names another; a second run of the same name gets `-2`, then `-3`, ...) holding `last.pt`,
`best.pt`, `config.json` (the run's settings and set-up, rewritten when they change) and
`metrics.jsonl` (one JSON line per evaluation, mirroring the checkpoint's history).
A folder without a checkpoint holds no run yet: `--resume` starts one there.

A run is written only into a folder that is absent, empty, or charlstm's own: one holding
nothing but the files above (each recognised by its content, not only its name: a
checkpoint of charlstm's format, a config.json with a run's keys, ...) and the temporary
files of its atomic writer, which is what a run leaves, and what a start killed before
its first save leaves. A folder with anything else in it (a project folder, a home
folder, another tool's model.pt) is refused before anything is written (`check_owned`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from pathlib import Path

from .. import checkpoint
from ..data import corpus as corpora
from ..errors import CheckpointError, UsageError
from ..data.files import remove_leftovers, temporary_name, write_atomically
from . import plot

CHECKPOINTS = ("last.pt", "best.pt")
RUN_FILES = (*CHECKPOINTS, "config.json", "metrics.jsonl", plot.PLOT_NAME)
# what file managers leave in any folder they show: neither the user's work nor charlstm's
FILE_MANAGER_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}
SHOWN_FOREIGN = 3  # files named in a refusal

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
    holding no checkpoint, and nothing but charlstm's, is taken again, so that restarts
    of a launch killed before its first save do not make a new folder each."""
    if out is not None:
        check_owned(Path(out))
        if (Path(out) / "last.pt").exists():
            raise UsageError.naming(f"{out} already holds a run; add {{resume}} to continue "
                                    "it, or choose another {out}")
        return Path(out)
    base = checkpoints_dir / default_run_name(corpus_name, model)
    taken = _numbered(base)
    unsaved = [folder for folder in taken
               if not holds_checkpoint(folder) and not foreign_files(folder)]
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
        if not runs:
            return None
        latest = max(runs, key=lambda r: (r / "last.pt").stat().st_mtime)
        check_owned(latest)
        return latest
    run_dir = Path(out)
    if run_dir.suffix == ".pt":  # a checkpoint named: it must be there
        run_dir = run_dir.parent
        if not (run_dir / "last.pt").exists():
            raise UsageError(f"nothing to resume: {run_dir} has no last.pt")
    check_owned(run_dir)
    if (run_dir / "last.pt").exists():
        return run_dir
    if (run_dir / "best.pt").exists():  # a trained run that lost its last.pt
        raise UsageError.naming(f"{run_dir} holds best.pt but no last.pt, so its run "
                                "cannot be resumed; sample from best.pt, or train into "
                                "another {out}")
    return None


def foreign_files(folder: Path) -> list[str]:
    """The names in `folder` of what charlstm did not write, sorted ([] for a folder
    that is absent, empty, or holds only a run of charlstm's or what a killed start
    left). A file named like a run's file counts as charlstm's only if its content is."""
    if not os.path.lexists(folder):
        return []  # (where it cannot be made, making it fails later, as one error)
    if not Path(folder).is_dir():  # (a link to a folder is that folder)
        return [Path(folder).name]
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise UsageError(f"cannot read the run folder {folder}: {exc.strerror or exc}") from exc
    return [name for name in names
            if name not in FILE_MANAGER_FILES and not _written_by_a_run(Path(folder) / name)]


def _written_by_a_run(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False  # a run writes regular files only
    name = path.name
    if any(temporary_name(target).fullmatch(name) for target in RUN_FILES):
        return True  # left by an atomic write that was killed
    if name in CHECKPOINTS:
        return checkpoint.looks_like(path)
    if name == "config.json":
        return _is_run_config(path)
    if name == "metrics.jsonl":
        return _is_metrics(path)
    if name == plot.PLOT_NAME:
        return plot.is_own(path)
    return False


def _is_run_config(path: Path) -> bool:
    """A config.json a run wrote: a JSON object with a run's keys (see Trainer.info)."""
    try:
        if path.stat().st_size > 1 << 20:
            return False
        info = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and {"run_dir", "corpus", "model", "train"} <= info.keys()


def _is_metrics(path: Path) -> bool:
    """A metrics.jsonl a run wrote: empty (a start killed before its first evaluation),
    or a first line that is an evaluation record."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
        if not first:
            return True
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "step" in record and "val_loss" in record


def check_owned(folder: Path) -> None:
    """Refuse a run folder holding anything charlstm did not write (see foreign_files):
    a run there could overwrite it, or be mixed into someone's folder."""
    foreign = foreign_files(folder)
    if not foreign:
        return
    if not Path(folder).is_dir():  # (a link to a folder is that folder)
        raise UsageError(f"{folder} is not a folder but a file; choose another "
                         "--out")
    shown = ", ".join(foreign[:SHOWN_FOREIGN])
    more = f" and {len(foreign) - SHOWN_FOREIGN} more" if len(foreign) > SHOWN_FOREIGN else ""
    raise UsageError(f"{folder} holds files charlstm did not write ({shown}{more}); a run "
                     "goes only into a new or empty folder or its own run folder: choose "
                     "another --out, e.g. a new folder inside this one")


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
        metrics.jsonl for the run as it starts (or continues from `history`); a folder
        holding anything charlstm did not write is refused first (check_owned)."""
        check_owned(self.path)
        with self._writing():
            self.path.mkdir(parents=True, exist_ok=True)
            for leftover in self.tidy():
                log.info("removed %s, left by a writer that was killed", leftover)
            self.write_config(info)
            self.rewrite_metrics(history)

    def tidy(self) -> list[Path]:
        """Remove the temporary files that a write cut short left for the run's own files
        (a killed process, or a third Ctrl-C landing inside a save), and nothing else."""
        return remove_leftovers(self.path, RUN_FILES)

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
