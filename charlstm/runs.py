"""Run requests: what a `train` call turns into (its settings, corpus and run folder).

`make_trainer` reads the corpus, finds the run to resume or chooses a new run folder (see
rundir), plans a time budget when asked to, and resolves the run's settings from their
layers (see settings.resolve). A resumed run keeps its architecture and its corpus;
asking for a different one is a usage error rather than a silent restart.

With several processes (torchrun), the main one chooses the run folder, reads the
checkpoint to resume and plans a time budget, and the others take what it found; the
corpus is encoded by the main process first, so the others read its cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Sequence

from . import budget, checkpoint, corpus as corpora, distributed
from .callbacks import TrainingCallback
from .device import choose_device
from .errors import UsageError
from .presets import DEFAULT_PRESET, dropout_for, preset as get_preset
from .rundir import new_run_dir, run_to_resume
from .settings import (Layer, ModelConfig, TrainConfig, defaults, resolve, saved_layer,
                       split_point, split_settings)
from .training import Trainer

SIZES = {"num_layers", "hidden_size", "embed_size"}  # any of these given: no budget plan


def make_trainer(corpus: str | list[str] | None = None, *, out: Path | None = None,
                 resume: bool = False,
                 preset: str | None = None, settings: dict | None = None,
                 callback: TrainingCallback | None = None,
                 corpora_dir: Path = Path("corpora"),
                 checkpoints_dir: Path = Path("checkpoints"),
                 lossy: bool = False, stdin: BinaryIO | None = None,
                 corpus_progress: corpora.Progress | None = None,
                 launched_at: float | None = None, globs: Sequence[str] = ()) -> Trainer:
    """Build the Trainer for a new run, or for resuming one from its last.pt.
    `corpus` is a corpus name, a path, or "-" for `stdin`, or paths of files and folders
    to train on as one collection (filtered by `globs`); `settings` are ModelConfig and
    TrainConfig fields given explicitly (None: not given). `launched_at` (a
    time.monotonic() value) is when the work began; the set-up from then on counts
    against a time limit. None: the limit counts from the first training step.
    """
    model_given, train_given = split_settings(settings or {})
    if corpus == "-" and distributed.active():
        raise UsageError("several processes cannot share standard input; save the corpus "
                         "to a file and name it instead of '-'")

    def encode(spec: str | list[str] | None, val_frac: float, globs: Sequence[str] = globs
               ) -> corpora.Corpus:
        return _encode(spec, corpora_dir, lossy, corpus_progress, stdin, globs, val_frac)

    chosen = get_preset(preset or DEFAULT_PRESET)
    if resume:
        run_dir, saved, model_config, train_config = _find_run(
            out=out, corpus=corpora.run_label(corpus),
            named_preset=chosen if preset else None,
            model_given=model_given, train_given=train_given, checkpoints_dir=checkpoints_dir)
        data = encode(corpus or saved.corpus["source"], train_config.val_frac,
                      globs if corpus else saved.corpus.get("globs", ()))
        if data.sha256 != saved.corpus["sha256"]:
            raise UsageError(
                f"the corpus {data.source!r} is not the text this run was trained on "
                f"({saved.corpus['source']!r}, sha256 {saved.corpus['sha256'][:12]}…)")
        return Trainer(data, model_config, train_config, run_dir, callback, saved, launched_at)
    data = encode(corpus, train_given.get("val_frac", corpora.DEFAULT_VAL_FRAC))
    plan = None
    if "time_limit" in train_given and not model_given.keys() & SIZES:
        # measured by the main process alone, so that all train the same model
        plan = distributed.run_on_main(lambda: _plan(data, preset, model_given, train_given))
        # what the plan decided and nobody gave is refitted to the speed seen in training
        plan.refit = frozenset({"dropout"} - model_given.keys()
                               | {"eval_every"} - train_given.keys())
    model_config, train_config = resolve(
        Layer(chosen["model"], chosen["train"]), Layer(model_given, train_given),
        plan=Layer(plan.model, plan.train) if plan else None, vocab_size=len(data.vocab),
        preset_dropout=lambda epochs: dropout_for(chosen, epochs),
        corpus_chars=len(data.tokens))
    run_dir = distributed.run_on_main(
        lambda: new_run_dir(out, data.name, model_config.to_dict(), checkpoints_dir))
    return Trainer(data, model_config, train_config, run_dir, callback, None, launched_at,
                   plan)


def _encode(spec: str | list[str] | None, corpora_dir: Path, lossy: bool,
            progress: corpora.Progress | None, stdin: BinaryIO | None,
            globs: Sequence[str], val_frac: float) -> corpora.Corpus:
    """The corpus, encoded by the main process first (the others then read its cache),
    and the same on every process."""
    data = distributed.main_first(
        lambda: corpora.encode(spec, corpora_dir, lossy, progress, stdin, globs, val_frac))
    if len(set(distributed.gather(data.sha256))) > 1:
        raise UsageError(f"the corpus {data.source!r} differs between the processes; "
                         "every machine needs the same text at the same path")
    return data


def _find_run(*, out: Path | None, corpus: str | None, named_preset: dict | None,
              model_given: dict, train_given: dict, checkpoints_dir: Path
              ) -> tuple[Path, checkpoint.Checkpoint, ModelConfig, TrainConfig]:
    """The run to resume (named by `out`, or by the corpus and model), its last
    checkpoint, and its settings with the explicit ones on top. A preset named on a
    resume must agree with the run, like explicit options."""
    if named_preset is not None:
        model_given = {**named_preset["model"], **model_given}
    model_settings = {**defaults()[0], **model_given}

    def find_and_load() -> tuple[Path, checkpoint.Checkpoint]:
        run_dir = run_to_resume(out, corpus, model_settings, checkpoints_dir)
        return run_dir, checkpoint.read(run_dir / "last.pt")

    run_dir, saved = distributed.run_on_main(find_and_load)
    model_config, train_config = resolve(
        Layer({}, {}), Layer(model_given, train_given),
        saved=saved_layer(saved.model_config, saved.train_config))
    return run_dir, saved, model_config, train_config


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
