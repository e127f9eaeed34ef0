"""A run's settings: the two config dataclasses and the one function that resolves them.

`ModelConfig` says what the model is, `TrainConfig` how it is trained. Their defaults are
the default preset's (`small`): each default is written once, here. A run's settings come
from layers, each replacing what the one before it said (`resolve`):

    dataclass defaults < preset < saved run (on resume) < time-budget plan < explicit options

Validation errors name the setting (`lr`, `time_limit`), as `SettingError`s; a front end
(the command line) shows each name in its own spelling (`--lr`, `--time`).

This module is plain Python (no torch), so that anything may read a run's settings cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Callable

from .data.split import DEFAULT_VAL_FRAC, split_point
from .errors import UsageError, spell
from .ranges import FRACTION, MAX_COUNT, MAX_SECONDS, SEED, SEED_LIMIT, Range

MAX_SEED = SEED_LIMIT  # seeds are in [0, MAX_SEED): what torch.manual_seed takes on every device
CELLS = ("lstm", "gru", "rnn")
# fixed for a run's life
ARCHITECTURE = ("model", "num_layers", "hidden_size", "embed_size", "head_rank")
LIMITS = ("max_steps", "epochs", "time_limit")  # when a run ends: the first one reached
# A fine-tuning run's (train --init-from) learning rate as a share of its parent's, and
# its warm-up in steps, unless given: measured by `python bench/finetune.py --sweep`
# (bench/RESULTS.md, "Fine-tuning learning rate and warm-up"): at a fixed number of steps
# the parent's own rate beat 0.3 and 0.1 of it, and a 20-step warm-up beat 100 at each
FINE_TUNE_LR_RATIO = 1.0
FINE_TUNE_WARMUP_STEPS = 20
# What runs saved before a setting existed trained with, where that is not today's default
SAVED_BEFORE = {"beta1": 0.9}
MODEL_SAVED_BEFORE = {"locked_dropout": False, "weight_drop": 0.0}
# The regularisers whose amounts follow the passes a run makes (presets.regularisation_for)
REGULARISERS = ("dropout", "weight_drop")


class SettingError(UsageError):
    """A setting with a value it cannot take; the message names settings as {name} (see
    CharlstmError.naming)."""

    def __init__(self, template: str):
        super().__init__(spell(template, lambda name: name))
        self.template = template


def _check_ranges(config, ranges: dict[str, Range]) -> None:
    """Each setting in its range (see RANGES); None is allowed where a setting may be off."""
    for name, allowed in ranges.items():
        value = getattr(config, name)
        if value is not None and value not in allowed:
            raise SettingError(allowed.refusal(f"{{{name}}}", value))


class _Record:
    """Saved as a plain dict (in checkpoints and config.json) and read back from one,
    ignoring keys this version does not know."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ModelConfig(_Record):
    vocab_size: int  # characters in the vocabulary (the input and output size)
    model: str = "lstm"  # recurrent cell: lstm, gru or rnn (tanh)
    num_layers: int = 1  # stacked recurrent layers
    hidden_size: int = 512  # units per recurrent layer
    embed_size: int = 64  # size of each character's input embedding
    dropout: float = 0.25  # on the stack's input, between its layers and before the head
    # DropConnect on the recurrent matrices while training, one mask per step (dropout.py);
    # off unless given: at a 10-minute budget it cost more than it gave (docs/training.md)
    weight_drop: float = 0.0
    # input and output dropout with one mask per stream per step, not per character
    locked_dropout: bool = True
    # 0: the output layer is one (V, H) matrix; r > 0: factored through r units (a new
    # run that does not say gets H/2 when its vocabulary is larger than that:
    # auto_head_rank; runs saved before the setting existed have one matrix)
    head_rank: int = 0

    def __post_init__(self) -> None:
        if self.model not in CELLS:
            raise SettingError(f"{{model}} must be one of {', '.join(CELLS)}, "
                               f"not {self.model!r}")
        _check_ranges(self, MODEL_RANGES)


@dataclass
class TrainConfig(_Record):
    batch_size: int = 32  # parallel streams per step
    # > 0 (a divisor of batch_size): only this many of the streams (evenly spaced) train
    # a step during the run's first early_share (as the learning-rate schedule counts
    # it): small steps learn fastest early on, larger ones later. At 10 minutes on 10 MB
    # of manual pages (32 of 64 streams, an Intel Xeon), a share of 0.3 gave 0.9856 nats
    # against 1.0210 with 0.15 (bench/RESULTS.md)
    early_batch: int = 0
    early_share: float = 0.3
    seq_len: int = 32  # characters per stream per step, backpropagated through
    bptt_warmup: int = 0  # characters run without gradient where no state is carried
    shuffle: bool = False  # random windows instead of contiguous streams
    # > 0: the streams read blocks of this many characters in a shuffled order
    stream_block: int = 0
    lr: float = 1e-2  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine schedule ends at lr * min_lr_ratio
    warmup_steps: int = 100  # steps of linear learning-rate warm-up
    # AdamW decay of weight matrices and embeddings. 0.1: at 11,000 steps of small on
    # tinyshakespeare 1.4018 nats, against 1.4152 at 0.03, 1.4440 at 0.01 and 1.4443
    # at 0.3; no different at 70 s (bench/RESULTS.md)
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # cap on the global gradient norm; 0 turns clipping off
    beta1: float = 0.8  # AdamW's momentum: the decay of its running mean of gradients
    beta2: float = 0.99  # the decay of AdamW's running mean of squared gradients
    max_steps: int | None = 2000  # stop after this many steps
    epochs: float | None = None  # stop after this many passes over the training split
    time_limit: float | None = None  # stop after this many wall-clock seconds
    eval_every: int = 250  # steps between evaluations (and checkpoints)
    # wall-clock seconds between checkpoints written between evaluations, without
    # evaluating, so that a kill loses at most this much training; 0 = off. Five minutes:
    # the largest preset's save (150 MB) took 1.9 s on a loaded 2-core machine
    # (bench/save_cost.py), under 1% of it
    save_every: float = 300.0
    eval_chars: int = 500_000  # validation characters per evaluation (its start); 0 = all
    sample_every: int = 0  # steps between milestone samples; 0 = at each evaluation
    sample_length: int = 200  # characters per milestone sample
    val_frac: float = DEFAULT_VAL_FRAC  # the last fraction of the corpus held out for validation
    seed: int = 1337  # seeds initialisation, dropout and data order
    device: str = "auto"  # auto, cpu, cuda[:N] or mps
    precision: str = "auto"  # auto, fp32, bf16 or fp16 (autocast; fp16 on CUDA only)
    compile: bool = False  # torch.compile the model for training

    def __post_init__(self) -> None:
        _check_ranges(self, TRAIN_RANGES)
        if self.early_batch and self.batch_size % self.early_batch:
            raise SettingError(f"{{early_batch}} {self.early_batch} trains every "
                               f"(batch size / early batch)-th stream, so it must divide "
                               f"{{batch_size}} {self.batch_size}")
        if self.max_steps is None and self.epochs is None and self.time_limit is None:
            raise SettingError("give at least one of {max_steps}, {epochs} or {time_limit}")


# The range of every number a run's settings hold: generous bounds (what a machine could
# run at all), so that a mistyped 2**80 or NaN is refused here, naming the setting
MODEL_RANGES = {
    "vocab_size": Range(1, 0x110000),  # at most every Unicode code point
    "num_layers": Range(1, 256),
    "hidden_size": Range(1, 65536),
    "embed_size": Range(1, 65536),
    "dropout": FRACTION,
    "weight_drop": FRACTION,
    "head_rank": Range(0, 65536),
}
TRAIN_RANGES = {
    "batch_size": Range(1, 65536),
    "early_batch": Range(0, 65536),
    "early_share": FRACTION,
    "seq_len": Range(1, 1_000_000),
    "bptt_warmup": Range(0, 1_000_000),
    "stream_block": Range(0, MAX_COUNT),
    "lr": Range(0.0, 1e6, low_open=True),  # far above any that trains: a test diverges at 1e6
    "min_lr_ratio": Range(0.0, 1.0),
    "warmup_steps": Range(0, MAX_COUNT),
    "weight_decay": Range(0.0, 100.0),
    "grad_clip": Range(0.0, 1e9),  # 0 = off
    "beta1": FRACTION,
    "beta2": FRACTION,
    "max_steps": Range(1, MAX_COUNT),  # each limit: None = not this one
    "epochs": Range(0.0, 1e6, low_open=True),
    "time_limit": Range(1.0, MAX_SECONDS),  # seconds: less leaves no time for a step
    "eval_every": Range(1, MAX_COUNT),
    "save_every": Range(0.0, MAX_SECONDS),  # 0 = off
    "eval_chars": Range(0, MAX_COUNT * 1000),  # 0 = the whole validation split
    "sample_every": Range(0, MAX_COUNT),
    "sample_length": Range(0, 1_000_000),
    "val_frac": FRACTION,
    "seed": SEED,
}


@dataclass(frozen=True)
class Option:
    """How one setting is given on the command line (`charlstm train`): a row of OPTIONS.
    Its default is not written here: `train --help` shows the dataclass's."""

    field: str  # the ModelConfig or TrainConfig field
    flag: str  # the flag; "--on/--off" for a switch
    group: str  # where `train --help` lists it: data, model, optimization, checkpoints, output
    help: str  # what it does, in a phrase
    short: str | None = None  # a one-letter alias
    # seconds given as text: "duration" (90s, 10m, 1h30m) or "interval" (also 0 or off)
    kind: str | None = None


OPTIONS = (
    Option("val_frac", "--val-frac", "data", "Last fraction held out for validation"),
    Option("shuffle", "--shuffle/--no-shuffle", "data",
           "Train on random windows instead of contiguous streams"),
    Option("bptt_warmup", "--bptt-warmup", "data",
           "Characters run without gradient to build the state where none is carried "
           "(epoch starts, --shuffle)"),
    Option("stream_block", "--stream-block", "data",
           "Streams read the training text in blocks of this many characters, dealt out "
           "in a shuffled order each epoch; 0 = each stream one contiguous stretch"),
    Option("model", "--model", "model", "Recurrent cell: lstm, gru or rnn"),
    Option("num_layers", "--num-layers", "model", "Stacked recurrent layers"),
    Option("hidden_size", "--hidden-size", "model", "Units per layer"),
    Option("embed_size", "--embed-size", "model", "Character embedding size"),
    Option("dropout", "--dropout", "model",
           "Dropout on the stack's input, between layers and before the head (unless "
           "given, it follows the passes over the corpus)"),
    Option("weight_drop", "--weight-drop", "model",
           "DropConnect on the recurrent weight matrices while training, one mask per step "
           "(medium's follows the passes over the corpus; see docs/training.md)"),
    Option("head_rank", "--head-rank", "model",
           "Factor the output layer through this many units (0: one matrix); unless "
           "given, hidden-size/2 when the vocabulary has more characters than that"),
    Option("locked_dropout", "--locked-dropout/--fresh-dropout", "model",
           "Input and output dropout with one mask per stream for a whole step, or a fresh "
           "mask per character"),
    Option("batch_size", "--batch-size", "optimization", "Parallel streams per step",
           short="-b"),
    Option("early_batch", "--early-batch", "optimization",
           "Of each step's streams, train only this many (evenly spaced; it must divide "
           "--batch-size) for the run's first --early-share, the others' text skipped; "
           "0 = all from the start"),
    Option("early_share", "--early-share", "optimization",
           "The share of the run (by its limit: time, steps or passes) that --early-batch "
           "lasts"),
    Option("seq_len", "--seq-len", "optimization", "Characters backpropagated per step"),
    Option("lr", "--lr", "optimization", "Peak learning rate (AdamW)"),
    Option("min_lr_ratio", "--min-lr-ratio", "optimization",
           "Where the cosine decay ends, as a fraction of the peak learning rate"),
    Option("warmup_steps", "--warmup-steps", "optimization",
           "Linear learning-rate warm-up steps; cosine decay follows"),
    Option("weight_decay", "--weight-decay", "optimization",
           "AdamW weight decay of the weight matrices and embeddings"),
    Option("grad_clip", "--grad-clip", "optimization", "Global gradient norm cap, 0 = off"),
    Option("beta1", "--beta1", "optimization",
           "AdamW's momentum, the decay of its running mean of gradients"),
    Option("beta2", "--beta2", "optimization",
           "The decay of AdamW's running mean of squared gradients"),
    Option("max_steps", "--max-steps", "optimization", "Stop after this many steps"),
    Option("epochs", "--epochs", "optimization", "Stop after this many passes over the data"),
    Option("time_limit", "--time", "optimization",
           "Wall-clock budget from launch to the final evaluation: 90s, 10m, 1h30m. "
           "Without a model size it also picks the model, and for a large corpus the batch "
           "with the schedule, momentum and stream blocks that suit it; with one, it fits "
           "dropout, weight drop and the evaluation interval to that model's speed",
           kind="duration"),
    Option("seed", "--seed", "optimization",
           "Seed for initialisation, dropout and data order"),
    Option("device", "--device", "optimization", "auto, cpu, cuda, cuda:N or mps"),
    Option("precision", "--precision", "optimization",
           "auto, fp32, bf16 or fp16 (CUDA only, with loss scaling) autocast; auto measures "
           "on CPUs"),
    Option("compile", "--compile/--no-compile", "optimization",
           "torch.compile the model for training: slower start, maybe faster steps"),
    Option("eval_every", "--eval-every", "checkpoints",
           "Steps between evaluations and checkpoints"),
    Option("save_every", "--save-every", "checkpoints",
           "Also save last.pt this often between evaluations, without evaluating, so a kill "
           "loses at most this much: 30s, 5m; 0 or off = only at evaluations",
           kind="interval"),
    Option("eval_chars", "--eval-chars", "checkpoints",
           "Validation characters each evaluation reads, from the start of the split; 0 = all"),
    Option("sample_every", "--sample-every", "output",
           "Steps between milestone samples, 0 = at each evaluation"),
    Option("sample_length", "--sample-length", "output",
           "Characters per milestone sample, 0 = none"),
)
OPTION_OF = {option.field: option for option in OPTIONS}


MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}


def defaults() -> tuple[dict, dict]:
    """The dataclass defaults: model settings (without vocab_size) and training ones."""
    model = {f.name: f.default for f in fields(ModelConfig) if f.name != "vocab_size"}
    return model, TrainConfig().to_dict()


def split_settings(settings: dict) -> tuple[dict, dict]:
    """Explicit settings (None = not given) split into model and training ones, each
    checked against its range first, before anything is computed from it (a time
    budget's plan, the corpus)."""
    given = {k: v for k, v in settings.items() if v is not None}
    unknown = set(given) - MODEL_FIELDS - TRAIN_FIELDS
    if unknown:
        raise UsageError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    ranges = {**MODEL_RANGES, **TRAIN_RANGES}
    for name, value in given.items():
        if name in ranges and value not in ranges[name]:
            raise SettingError(ranges[name].refusal(f"{{{name}}}", value))
    return ({k: v for k, v in given.items() if k in MODEL_FIELDS},
            {k: v for k, v in given.items() if k in TRAIN_FIELDS})




def validation_span(length: int, config: TrainConfig) -> tuple[int, int]:
    """Where the validation split starts, and where evaluations stop reading it: at most
    eval_chars of its start (on a gigabyte corpus the whole split would take hours)."""
    start = split_point(length, config.val_frac)
    return start, length if not config.eval_chars else min(length, start + config.eval_chars)


@dataclass
class Layer:
    """One layer of settings: model and training ones, each only what the layer says."""
    model: dict
    train: dict


def resolve(preset: Layer, explicit: Layer, *, saved: Layer | None = None,
            plan: Layer | None = None, vocab_size: int | None = None,
            preset_regularisation: Callable[[float], dict] | None = None,
            corpus_chars: int = 0) -> tuple[ModelConfig, TrainConfig]:
    """A run's settings from its layers, in this order, each replacing the one before:
    the dataclass defaults, the preset, the saved run (on resume: it keeps its
    architecture), the time-budget plan, the explicit options.

    Explicit limits replace all earlier ones: `time_limit` alone means no step limit.
    `vocab_size` is the corpus's, for a new run (a saved run has its own). A new run
    without a plan takes the preset's dropout and weight drop for the passes it will make
    over its `corpus_chars` (`preset_regularisation(epochs)`; see
    presets.regularisation_for), each unless given.
    """
    model, train = defaults()
    for layer in (preset, saved, plan):
        if layer is not None:
            model.update(layer.model)
            train.update(layer.train)
    if saved is not None:
        for key, value in explicit.model.items():
            if key in ARCHITECTURE and value != saved.model.get(key):
                raise SettingError(
                    f"{{{key}}} {value} differs from the run's {saved.model.get(key)}; a "
                    "resumed run keeps its architecture (start a new run with another "
                    "{out} instead)")
    layered_batch = train["batch_size"]
    model.update(explicit.model)
    train.update(explicit.train)
    if train["batch_size"] != layered_batch and "early_batch" not in explicit.train:
        train["early_batch"] = 0  # an early batch not given went with the batch replaced
    if any(key in explicit.train for key in LIMITS):
        for key in LIMITS:
            train[key] = explicit.train.get(key)
    train_config = TrainConfig.from_dict(train)
    if saved is None:
        model["vocab_size"] = vocab_size
        # unless given, or kept from a parent model (a fine-tuning run's first layer)
        if "head_rank" not in explicit.model | preset.model and vocab_size is not None:
            model["head_rank"] = auto_head_rank(vocab_size, model["hidden_size"])
        if plan is None and preset_regularisation:
            epochs = planned_epochs(train_config, corpus_chars)
            if epochs is not None:
                model.update({key: value for key, value in preset_regularisation(epochs).items()
                              if key not in explicit.model})
    return ModelConfig.from_dict(model), train_config


def auto_head_rank(vocab_size: int, hidden_size: int) -> int:
    """The output layer's rank for a new run that does not give one: half the hidden
    size when the vocabulary has more characters than that, else 0 (one matrix).
    Measured with LSTM 1x512 in bf16 (bench/RESULTS.md):

    - 1,274 characters (10 MB of manual pages): at a fixed 3,000 steps one matrix
      reached 1.4164 nats, ranks 64, 128 and 256 1.3797, 1.3385 and 1.2944; in 10
      minutes one matrix 1.1966, rank 256 1.1137;
    - 354 characters (10 MB of documentation prose): at 3,000 steps one matrix 1.8628,
      rank 256 1.7916; in 10 minutes 1.7216 and 1.7066;
    - 65 to 100 characters (tinyshakespeare, pydocs, pystdlib), rank 128: better at a
      fixed 2,000 steps (1.4542 against 1.4784 on tinyshakespeare) but not in time,
      where its slower steps and smaller gain left it behind on two corpora of three at
      105 s (pydocs by 0.053 nats) and on pydocs at 10 minutes (by 0.009)."""
    half = max(1, hidden_size // 2)
    return half if vocab_size > half else 0


def saved_layer(model_config: dict, train_config: dict) -> Layer:
    """A saved run's settings as a layer; settings it predates get what it trained with."""
    return Layer({**MODEL_SAVED_BEFORE, **model_config}, {**SAVED_BEFORE, **train_config})


def planned_epochs(config: TrainConfig, corpus_chars: int) -> float | None:
    """Passes over the training split a run will make, if its limits say (None: only
    a time limit, whose passes depend on this machine's speed)."""
    train_chars = max(1, split_point(corpus_chars, config.val_frac))
    by_steps = (config.max_steps * config.batch_size * config.seq_len / train_chars
                if config.max_steps else None)
    known = [e for e in (by_steps, config.epochs) if e is not None]
    return min(known) if known else None
