"""Named presets: model size and training settings for a given amount of compute.

A preset fills in what the user did not say; any explicit flag wins over it. `small` is
the default: its values are the settings' own defaults (settings.py), and each preset
below says only what it changes from them. The settings come from measurements on
tinyshakespeare with a 2-core CPU (bench/RESULTS.md): at a minute or two of CPU time a
single wide LSTM layer with a short backpropagation window and a high learning rate
learns fastest, because a CPU step has a fixed cost per layer and more, shorter steps
beat fewer, longer ones.

Unless given, dropout (and weight drop, in a preset whose schedule has a
`weight_drop_per_epoch`: `medium`) follows from how many passes over the corpus a run
will make (`regularisation_for`): none for the first `free_epochs`, when nearly every
character is new, then `per_epoch` (`weight_drop_per_epoch`) more for each further pass,
up to the model's `dropout` (`weight_drop`). `min_chars` marks the presets a time
budget may choose (see budget.py): how many training characters the preset needs
within the budget to do better than the smaller ones.
`outgrown_epochs` is the other half of that choice: the passes over the corpus after
which a preset has stopped gaining, so that the next larger one is worth its slower
steps. Below it, the smaller preset learns more in the same time even when the larger
one would get its `min_chars`.

`batch_growth` gives a time budget's run more streams a step when the budget gives the
preset many characters of a corpus too large to pass over more than `max_passes` times:
the batch doubles, up to `max_batch`, while the run still makes `min_steps` steps, and
the training settings under its `train` take effect with it. In a short run many small
steps learn fastest; in a long one over a large corpus, fewer, less noisy steps over more
text do. Over a small corpus seen many times, they did not.

`instead_of` marks a preset that a time budget takes in place of the one it names, a
wider layer for a long run over a large corpus: when the budget has grown that one's
batch to its `max_batch` and gives the wider one at least its `min_steps` steps of it (a
wider layer falls behind at first and passes the narrower one only after enough steps).
It shares the named preset's training settings and batch growth.
"""

from __future__ import annotations

from ..errors import UsageError
from ..settings import defaults

_SMALL_SCHEDULE = {"free_epochs": 2.0, "per_epoch": 0.02}
# how small's batch grows with a long budget on a large corpus (in small's comments below)
_GROWTH = {"min_steps": 3000, "max_batch": 128, "max_passes": 10.0,
           "train": {"min_lr_ratio": 0.01, "beta1": 0.7, "stream_block": 1024,
                     "early_batch": 32}}
# The steps of its grown batch (128 streams, as the plan predicts them) from which `wide`
# (LSTM 1x768) beats small, on a corpus small would see at most 10 times. On a 2-core
# Xeon without AMX, fp32 (bench/RESULTS.md), 1x768 with small's settings: on 10 MB of
# manual pages it lost at 23 minutes by 0.6% (0.9323 nats against 0.9265; 3,249 steps
# of 128 counted in characters, about 3,800 as the plan would predict them from its
# faster first steps) and won at 30 minutes by 1.7-1.9% (0.9001 against 0.9159 and
# 0.9173; 4,347 of 128, about 4,900 predicted); on 10 MB of scripts at 30 minutes, where
# the plan predicted 4,276, it won by 1.2% (1.0755 against 1.0885); on 50 MB at 30
# minutes (2,400-2,700 of 128) it tied or lost. The line is between 3,800 and 4,276.
MIN_STEPS_WIDE = 4000

# What each preset changes from the settings' defaults (settings.py), which are `small`'s
_PRESETS: dict[str, dict] = {
    "tiny": {  # a smoke test: seconds on a laptop CPU
        "model": {"num_layers": 1, "hidden_size": 128, "embed_size": 32, "dropout": 0.0},
        "train": {"batch_size": 32, "seq_len": 32, "lr": 1e-2, "beta1": 0.9,
                  "max_steps": 500, "eval_every": 100},
    },
    "small": {  # the default: a minute or two on a laptop CPU
        "model": {},
        "train": {},
        "dropout_schedule": _SMALL_SCHEDULE,
        "min_chars": 0,
        # 10 minutes on a 2-core Xeon: tinyshakespeare (19 passes of small) 1.4438 nats
        # with small against 1.4603 with medium, pydocs (45 passes) 1.1692 against
        # 1.0745 (bench/RESULTS.md): the line is between, at 30
        "outgrown_epochs": 30.0,
        # a time budget's run on a corpus it passes over at most 10 times doubles the
        # batch, up to 128, while the budget still gives 3,000 steps. At 10 minutes on
        # 10 MB of scripts (1.7 passes) batch 32 gave 1.2679 nats, 64 1.2011, 128
        # 1.1799 (3,748 steps), 256 1.1937 (1,810 steps); on 3 MB of manual pages (6
        # passes) 32 1.0758, 128 1.0272; on pystdlib (9.4 passes) 32 1.1220, 128
        # 1.1143; on tinyshakespeare (19 passes) 32 1.4000, 64 1.4074, 128 1.4152; at
        # 20 minutes on 10 MB of manual pages (2.9 passes) 128 0.9445 (6,233 steps),
        # 256 0.9549 (3,186): 256 never won (bench/RESULTS.md).
        # Such a run also ends its cosine at 1% of the peak learning rate, not 10%,
        # with less momentum: at 10 minutes on 10 MB of manual pages (batch 128) 1.0323
        # nats before, 1.0156 with the cosine to 1%, then 1.0013 with beta1 0.7 (1.0990
        # with 0.9). And its streams read the corpus in shuffled blocks of 1,024
        # characters: on the manual pages 1.0081 nats with contiguous streams, 0.9990
        # with blocks of 1,024, 1.0000 with 8,192, 1.0135 with 256 (beta2 0.95 instead
        # of 0.99: 1.0087). For its first 30% (--early-share, settings.py) it trains
        # only 32 of those streams a step (--early-batch): for its first 15%, 0.9953
        # nats against 1.0218 without, side by side
        "batch_growth": _GROWTH,
    },
    "wide": {  # an evening over a large corpus: one wider layer
        "model": {"hidden_size": 768},
        "train": {},
        "dropout_schedule": _SMALL_SCHEDULE,
        "batch_growth": _GROWTH,
        # a time budget takes it instead of small when it grows small's batch to 128 and
        # the budget gives wide MIN_STEPS_WIDE steps of that batch (see above)
        "instead_of": "small", "min_steps": MIN_STEPS_WIDE,
    },
    "medium": {  # tens of minutes on a laptop CPU, minutes on a GPU
        "model": {"num_layers": 2, "hidden_size": 512, "embed_size": 128, "dropout": 0.25,
                  "weight_drop": 0.1},
        "train": {"batch_size": 32, "seq_len": 64, "lr": 3e-3, "beta1": 0.9,
                  "max_steps": 5000, "eval_every": 500},
        # weight drop reaches 0.1 after 11 passes: at 10 minutes on pydocs (about 20
        # passes) 0.1 gave 1.0451 nats against 1.0632 without (bench/RESULTS.md)
        "dropout_schedule": {"free_epochs": 1.0, "per_epoch": 0.04,
                             "weight_drop_per_epoch": 0.01},
        "min_chars": 4_500_000,
    },
    "large": {  # for a GPU
        "model": {"num_layers": 3, "hidden_size": 768, "embed_size": 128, "dropout": 0.3},
        "train": {"batch_size": 64, "seq_len": 128, "lr": 1.5e-3, "beta1": 0.9,
                  "max_steps": 20000, "eval_every": 1000},
        "dropout_schedule": {"free_epochs": 1.0, "per_epoch": 0.04},
        "min_chars": 150_000_000,
    },
}


def _filled(spec: dict) -> dict:
    """A preset with every size and training setting spelled out (the cell, lstm, gru
    or rnn, is not a preset's to choose, nor the output layer's rank, which follows the
    vocabulary: settings.auto_head_rank)."""
    model, train = defaults()
    del model["model"], model["head_rank"]
    return {**spec, "model": {**model, **spec["model"]}, "train": {**train, **spec["train"]}}


PRESETS: dict[str, dict] = {name: _filled(spec) for name, spec in _PRESETS.items()}
DEFAULT_PRESET = "small"


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def regularisation_for(spec: dict, epochs: float) -> dict[str, float]:
    """The preset's dropout and weight drop for a run of `epochs` passes over its
    training text."""
    model, schedule = spec["model"], spec.get("dropout_schedule")
    if schedule is None:
        return {"dropout": model["dropout"], "weight_drop": model["weight_drop"]}
    passes = max(0.0, epochs - schedule["free_epochs"])
    rates = {"dropout": schedule["per_epoch"],
             "weight_drop": schedule.get("weight_drop_per_epoch")}
    return {name: model[name] if rate is None else round(min(model[name], passes * rate), 2)
            for name, rate in rates.items()}
