"""Run requests: what a `train` call turns into (its settings, corpus and run folder).

`make_trainer` reads the corpus, finds the run to resume or chooses a new run folder (see
rundir), plans a time budget when asked to, and resolves the run's settings from their
layers (see settings.resolve). A resumed run keeps its architecture and its corpus;
asking for a different one is a usage error rather than a silent restart. A resume
that finds no checkpoint yet (a first launch killed before its first save) starts the
run from scratch and says so, so that one command line serves the first launch and
every restart.

With several processes (torchrun), the main one chooses the run folder, reads the
checkpoint to resume and plans a time budget, and the others take what it found; the
corpus is encoded by the main process first, so the others read its cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Sequence

from . import budget, distributed, finetune
from .. import checkpoint
from ..data import corpus as corpora
from .callbacks import TrainingCallback
from ..device import choose_device
from ..errors import UsageError
from .presets import DEFAULT_PRESET, preset as get_preset, regularisation_for
from .rundir import check_owned, new_run_dir, run_to_resume
from ..data.split import DEFAULT_VAL_FRAC
from ..settings import (REGULARISERS, Layer, ModelConfig, TrainConfig, defaults, resolve,
                       saved_layer, split_settings, validation_span)
from .loop import Trainer

# any of these given: the budget plan keeps the model (budget.for_model_given)
SIZES = {"num_layers", "hidden_size", "embed_size"}


def make_trainer(corpus: str | list[str] | None = None, *, out: Path | None = None,
                 resume: bool = False,
                 preset: str | None = None, settings: dict | None = None,
                 callback: TrainingCallback | None = None,
                 corpora_dir: Path = Path("corpora"),
                 checkpoints_dir: Path = Path("checkpoints"),
                 lossy: bool = False, stdin: BinaryIO | None = None,
                 corpus_progress: corpora.Progress | None = None,
                 launched_at: float | None = None, init_from: Path | None = None,
                 globs: Sequence[str] = ()) -> Trainer:
    """Build the Trainer for a new run, or for resuming one from its last.pt.
    `corpus` is a corpus name, a path, or "-" for `stdin`, or paths of files and folders
    to train on as one collection (filtered by `globs`); `settings` are ModelConfig and
    TrainConfig fields given explicitly (None: not given). `launched_at` (a
    time.monotonic() value) is when the work began; the set-up from then on counts
    against a time limit. None: the limit counts from the first training step.
    `init_from` (a checkpoint or run folder) makes a new run a fine-tuning of that model
    (see finetune); with `resume`, the run in `out` continues if it has a checkpoint (it
    must be a fine-tuning of that same file) and starts as a fine-tuning if not.
    """
    model_given, train_given = split_settings(settings or {})
    if corpus == "-" and distributed.active():
        raise UsageError("several processes cannot share standard input; save the corpus "
                         "to a file and name it instead of '-'")

    def encode(spec: str | list[str] | None, val_frac: float, globs: Sequence[str] = globs
               ) -> corpora.Corpus:
        return _encode(spec, corpora_dir, lossy, corpus_progress, stdin, globs, val_frac)

    chosen = get_preset(preset or DEFAULT_PRESET)
    parent = last = None
    if init_from is not None:
        parent = distributed.run_on_main(lambda: finetune.read_parent(init_from))
        finetune.check_architecture(parent, model_given, chosen if preset else None, preset)
        last = _fine_tune_to_resume(out, parent) if resume else None
        resume = last is not None
    found = resume and _find_run(
        out=out, corpus=corpora.run_label(corpus), named_preset=chosen if preset else None,
        model_given=model_given, train_given=train_given, checkpoints_dir=checkpoints_dir,
        last=last)
    if found:
        run_dir, saved, model_config, train_config = found
        data = encode(corpus or saved.corpus["source"], train_config.val_frac,
                      globs if corpus else saved.corpus.get("globs", ()))
        data = _same_text(data, saved, corpora_dir)
        return Trainer(data, model_config, train_config, run_dir, callback, saved, launched_at)
    data = encode(corpus, train_given.get("val_frac", DEFAULT_VAL_FRAC))
    if parent is not None:
        return _fine_tune(data, parent, chosen, model_given, train_given, out=out,
                          callback=callback, corpora_dir=corpora_dir,
                          checkpoints_dir=checkpoints_dir, launched_at=launched_at)
    return _new_run(data, preset, chosen, model_given, train_given, out=out, resume=resume,
                    callback=callback, checkpoints_dir=checkpoints_dir,
                    launched_at=launched_at)


def _same_text(data: corpora.Corpus, saved: checkpoint.Checkpoint,
               corpora_dir: Path) -> corpora.Corpus:
    """The corpus of a resumed run, checked to be the text it was trained on, and read
    with the run's own vocabulary (a fine-tuning run's is the union)."""
    if data.sha256 != saved.corpus["sha256"]:
        raise UsageError(
            f"the corpus {data.source!r} is not the text this run was trained on "
            f"({saved.corpus['source']!r}, sha256 {saved.corpus['sha256'][:12]}…)")
    return distributed.main_first(
        lambda: corpora.with_vocabulary(data, saved.vocabulary(), corpora_dir))


def _new_run(data: corpora.Corpus, preset: str | None, chosen: dict, model_given: dict,
             train_given: dict, *, out: Path | None, resume: bool,
             callback: TrainingCallback | None, checkpoints_dir: Path,
             launched_at: float | None) -> Trainer:
    """A run from scratch: the preset's settings, the budget plan's when --time is given,
    then the explicit ones; in a new run folder (or `out`)."""
    plan = None
    if "time_limit" in train_given:
        # measured by the main process alone, so that all train the same model
        plan = distributed.run_on_main(
            lambda: _plan(data, preset, chosen, model_given, train_given))
        # what the plan decided and nobody gave is refitted to the speed seen in training
        plan.refit = frozenset(set(REGULARISERS) - model_given.keys()
                               | {"eval_every"} - train_given.keys())
    model_config, train_config = resolve(
        Layer(chosen["model"], chosen["train"]), Layer(model_given, train_given),
        plan=Layer(plan.model, plan.train) if plan else None, vocab_size=len(data.vocab),
        preset_regularisation=lambda epochs: regularisation_for(chosen, epochs),
        corpus_chars=len(data.tokens))
    run_dir = distributed.run_on_main(lambda: new_run_dir(
        out, data.name, model_config.to_dict(), checkpoints_dir, reuse_unsaved=resume))
    if resume and distributed.is_main():
        (callback or TrainingCallback()).on_notice(
            f"nothing to resume in {run_dir} (no checkpoint yet): starting the run "
            "from scratch")
    return Trainer(data, model_config, train_config, run_dir, callback, None, launched_at,
                   plan)


def _fine_tune_to_resume(out: Path | None, parent: finetune.Parent
                         ) -> checkpoint.Checkpoint | None:
    """With resume and init_from: the last checkpoint of the run in `out` when it is there
    to continue (it must then be a fine-tuning of the same parent file), None when the
    run is to start now."""
    if out is None:
        raise UsageError.naming("{resume} with {init_from} needs {out}: the fine-tuning run to "
                         "continue, or to start when it has no checkpoint yet")
    check_owned(Path(out))
    path = Path(out) / "last.pt"
    if not path.exists():
        return None
    last = checkpoint.read(path)
    if not last.parent or last.parent.get("sha256") != parent.sha256:
        raise UsageError.naming(f"{out} is not a fine-tuning of {parent.path}; resume it "
                                "without {init_from}, or choose another {out}")
    return last


def _fine_tune(data: corpora.Corpus, parent: finetune.Parent, chosen: dict,
               model_given: dict, train_given: dict, *, out: Path | None,
               callback: TrainingCallback | None, corpora_dir: Path, checkpoints_dir: Path,
               launched_at: float | None) -> Trainer:
    """A new run from the parent's weights, on its text encoded with the union of the
    parent's vocabulary and the text's; the parent's architecture, the preset's training
    settings, the fine-tuning learning rate and warm-up, then the explicit options."""
    vocab = finetune.union_vocabulary(parent, data.vocab)
    data = distributed.main_first(lambda: corpora.with_vocabulary(data, vocab, corpora_dir))
    model_config, train_config = resolve(
        Layer({**chosen["model"], **parent.architecture()},
              {**chosen["train"], **parent.training_defaults()}),
        Layer(model_given, train_given), vocab_size=len(vocab),
        preset_regularisation=lambda epochs: regularisation_for(chosen, epochs),
        corpus_chars=len(data.tokens))
    start = finetune.Start(finetune.child_weights(parent.record.model,
                                                  parent.record.vocabulary(), vocab),
                           parent.describe())
    run_dir = distributed.run_on_main(
        lambda: new_run_dir(out, data.name, model_config.to_dict(), checkpoints_dir))
    return Trainer(data, model_config, train_config, run_dir, callback, None, launched_at,
                   start=start)


def _encode(spec: str | list[str] | None, corpora_dir: Path, lossy: bool,
            progress: corpora.Progress | None, stdin: BinaryIO | None,
            globs: Sequence[str], val_frac: float) -> corpora.Corpus:
    """The corpus, encoded by the main process first (the others then read its cache),
    and the same on every process."""
    data = distributed.main_first(
        lambda: corpora.encode(spec, corpora_dir, lossy, progress, stdin, globs,
                                      val_frac=val_frac))
    if len(set(distributed.gather(data.sha256))) > 1:
        raise UsageError(f"the corpus {data.source!r} differs between the processes; "
                         "every machine needs the same text at the same path")
    return data


def _find_run(*, out: Path | None, corpus: str | None, named_preset: dict | None,
              model_given: dict, train_given: dict, checkpoints_dir: Path,
              last: checkpoint.Checkpoint | None = None
              ) -> tuple[Path, checkpoint.Checkpoint, ModelConfig, TrainConfig] | None:
    """The run to resume (named by `out`, or by the corpus and model), its last
    checkpoint, and its settings with the explicit ones on top; None if it has saved
    nothing yet (see rundir.run_to_resume). A preset named on a resume must agree with
    the run, like explicit options. `last`: the run's last checkpoint when the caller has
    read it already."""
    if named_preset is not None:
        model_given = {**named_preset["model"], **model_given}
    model_settings = {**defaults()[0], **model_given}

    def find_and_load() -> tuple[Path, checkpoint.Checkpoint] | None:
        run_dir = run_to_resume(out, corpus, model_settings, checkpoints_dir)
        return run_dir and (run_dir, last or checkpoint.read(run_dir / "last.pt"))

    found = distributed.run_on_main(find_and_load)
    if found is None:
        return None
    run_dir, saved = found
    model_config, train_config = resolve(
        Layer({}, {}), Layer(model_given, train_given),
        saved=saved_layer(saved.model_config, saved.train_config))
    return run_dir, saved, model_config, train_config


def _plan(data: corpora.Corpus, preset: str | None, chosen: dict, model_given: dict,
          train_given: dict) -> budget.BudgetPlan:
    """Fit the run to --time on this machine, less the time its evaluations of the
    validation split will take: the preset named, or the best for the budget among all;
    or, when the caller gave a model size, the dropout, weight drop and evaluation
    interval of the model given (with the preset's other settings, `chosen`)."""
    config = TrainConfig(**train_given)
    start, end = validation_span(len(data.tokens), config)
    device = choose_device(config.device)
    if model_given.keys() & SIZES:
        model_config, train_config = resolve(
            Layer(chosen["model"], chosen["train"]), Layer(model_given, train_given),
            vocab_size=len(data.vocab))
        return budget.for_model_given(config.time_limit, start, model_config, train_config,
                                      device, preset or DEFAULT_PRESET,
                                      eval_chars=end - start, given=model_given.keys())
    return budget.plan(config.time_limit, start, len(data.vocab), device,
                       config.precision, model_given.get("model", "lstm"),
                       [preset] if preset else None, eval_chars=end - start)
