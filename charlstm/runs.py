"""Run folders and run settings: what a `train` request turns into.

A run lives in one folder (`checkpoints/<corpus>-<model><layers>x<hidden>` unless `out`
names another) holding `last.pt`, `best.pt`, `config.json` and `metrics.jsonl`. Settings
are layered: the preset's, then (when resuming) the run's own saved ones, then whatever the
caller gave explicitly. A resumed run keeps its architecture and its corpus; asking for a
different one is a usage error rather than a silent restart.

With several processes (torchrun), the main one chooses the run folder, reads the
checkpoint to resume and plans a time budget, and the others take what it found; the
corpus is encoded by the main process first, so the others read its cache.
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import BinaryIO

from . import budget, checkpoint, corpus as corpora, distributed
from .device import choose_device
from .errors import UsageError
from .model import ModelConfig
from .presets import DEFAULT_PRESET, dropout_for, preset as get_preset
from .training import Trainer, TrainConfig, TrainingCallback, split_point

ARCHITECTURE = ("model", "num_layers", "hidden_size", "embed_size")
SIZES = {"num_layers", "hidden_size", "embed_size"}  # any of these given: no budget plan
MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
LIMITS = ("max_steps", "epochs", "time_limit")


def split_settings(settings: dict) -> tuple[dict, dict]:
    """Explicit settings (None = not given) split into model and training ones."""
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = set(given) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return ({k: v for k, v in given.items() if k in MODEL_FIELDS},
            {k: v for k, v in given.items() if k in TRAIN_FIELDS})


def _with_limits(train: dict, explicit: dict) -> dict:
    """Explicit limits replace all earlier ones: `--time 5m` alone means no step limit."""
    merged = {**train, **explicit}
    if any(k in explicit for k in LIMITS):
        for key in LIMITS:
            merged[key] = explicit.get(key)
    return merged


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


def make_trainer(corpus: str | None = None, out: Path | None = None, resume: bool = False,
                 preset: str | None = None, settings: dict | None = None,
                 callback: TrainingCallback | None = None,
                 corpora_dir: Path = Path("corpora"),
                 checkpoints_dir: Path = Path("checkpoints"),
                 lossy: bool = False, stdin: BinaryIO | None = None,
                 corpus_progress: corpora.Progress | None = None,
                 launched_at: float | None = None) -> Trainer:
    """Build the Trainer for a new run, or for resuming one from its last.pt.

    `launched_at` (a time.monotonic() value) is when the work began; the set-up from then
    on counts against a time limit. None: the limit counts from the first training step.
    """
    model_given, train_given = split_settings(settings or {})
    chosen = get_preset(preset or DEFAULT_PRESET)
    model_settings = {"model": "lstm", **chosen["model"], **model_given}

    if corpus == "-" and distributed.active():
        raise UsageError("several processes cannot share standard input; save the corpus "
                         "to a file and name it instead of '-'")

    def encode(spec: str | None) -> corpora.Corpus:
        data = distributed.main_first(
            lambda: corpora.encode(spec, corpora_dir, lossy, corpus_progress, stdin))
        if len(set(distributed.gather(data.sha256))) > 1:
            raise UsageError(f"the corpus {data.source!r} differs between the processes; "
                             "every machine needs the same text at the same path")
        return data

    saved, budget_plan = None, None
    if resume:
        if preset:  # a preset named on a resume must agree with the run, like explicit flags
            model_given = {**chosen["model"], **model_given}

        def find_and_load() -> tuple[Path, dict]:
            run_dir = _run_to_resume(out, corpus, model_settings, checkpoints_dir)
            return run_dir, checkpoint.load(run_dir / "last.pt")

        run_dir, saved = distributed.run_on_main(find_and_load)
        saved_model = saved["model_config"]
        for key in ARCHITECTURE:
            if key in model_given and model_given[key] != saved_model.get(key):
                raise UsageError(
                    f"--{key.replace('_', '-')} {model_given[key]} differs from the run's "
                    f"{saved_model.get(key)}; a resumed run keeps its architecture "
                    "(start a new run with another --out instead)")
        model_config = ModelConfig.from_dict({**saved_model, **model_given})
        train_config = TrainConfig.from_dict(_with_limits(saved["train_config"], train_given))
        data = encode(corpus or saved["corpus"]["source"])
        if data.sha256 != saved["corpus"]["sha256"]:
            raise UsageError(
                f"the corpus {data.source!r} is not the text this run was trained on "
                f"({saved['corpus']['source']!r}, sha256 {saved['corpus']['sha256'][:12]}…)")
    else:
        data = encode(corpus)
        train_settings = chosen["train"]
        if "time_limit" in train_given and not model_given.keys() & SIZES:
            # measured by the main process alone, so that all train the same model
            budget_plan = distributed.run_on_main(
                lambda: _plan(data, preset, model_given, train_given))
            # what the plan decided and nobody gave is refitted to the speed seen in training
            budget_plan.refit = frozenset({"dropout"} - model_given.keys()
                                          | {"eval_every"} - train_given.keys())
            model_settings = {"model": "lstm", **budget_plan.model, **model_given}
            train_settings = budget_plan.train
        train_config = TrainConfig.from_dict(_with_limits(train_settings, train_given))
        if budget_plan is None and "dropout" not in model_given:
            epochs = _planned_epochs(train_config, len(data.tokens))
            if epochs is not None:
                model_settings["dropout"] = dropout_for(chosen, epochs)
        model_config = ModelConfig(vocab_size=len(data.vocab), **model_settings)
        run_dir = distributed.run_on_main(
            lambda: _new_run_dir(out, data.name, model_settings, checkpoints_dir))
    return Trainer(data, model_config, train_config, run_dir, callback, saved, launched_at,
                   budget_plan)


def _plan(data: corpora.Corpus, preset: str | None, model_given: dict,
          train_given: dict) -> budget.BudgetPlan:
    """Fit the model to --time on this machine: the preset named, or the best for the
    budget among all (the caller gave no model size)."""
    defaults = TrainConfig(max_steps=1)
    device = choose_device(train_given.get("device", defaults.device))
    val_frac = train_given.get("val_frac", defaults.val_frac)
    return budget.plan(train_given["time_limit"], split_point(len(data.tokens), val_frac),
                       len(data.vocab), device, train_given.get("precision", "auto"),
                       model_given.get("model", "lstm"), [preset] if preset else None)


def _planned_epochs(config: TrainConfig, corpus_chars: int) -> float | None:
    """Passes over the training split a run will make, if its limits say (None: only
    a time limit, whose passes depend on this machine's speed)."""
    train_chars = max(1, split_point(corpus_chars, config.val_frac))
    by_steps = (config.max_steps * config.batch_size * config.seq_len / train_chars
                if config.max_steps else None)
    known = [e for e in (by_steps, config.epochs) if e is not None]
    return min(known) if known else None


def _new_run_dir(out: Path | None, corpus_name: str, model: dict, checkpoints_dir: Path) -> Path:
    if out is not None:
        if (Path(out) / "last.pt").exists():
            raise UsageError(f"{out} already holds a run; add --resume to continue it, "
                             "or choose another --out")
        return Path(out)
    base = checkpoints_dir / default_run_name(corpus_name, model)
    taken = _numbered(base)
    if not taken:
        return base
    return base.with_name(f"{base.name}-{len(taken) + 1}")


def _run_to_resume(out: Path | None, corpus: str | None, model: dict,
                   checkpoints_dir: Path) -> Path:
    if out is not None:
        run_dir = Path(out)
        if run_dir.suffix == ".pt":
            run_dir = run_dir.parent
    else:
        name = "stdin" if corpus == "-" else Path(corpus or corpora.DEFAULT_CORPUS).stem
        base = checkpoints_dir / default_run_name(name, model)
        runs = [r for r in _numbered(base) if (r / "last.pt").exists()]
        if not runs:
            raise UsageError(f"nothing to resume: no run at {base}; name it with --out")
        run_dir = max(runs, key=lambda r: (r / "last.pt").stat().st_mtime)
    if not (run_dir / "last.pt").exists():
        raise UsageError(f"nothing to resume: {run_dir} has no last.pt")
    return run_dir
