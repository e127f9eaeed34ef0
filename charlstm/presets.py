"""Named presets: model size and training settings for a given amount of compute.

A preset fills in what the user did not say; any explicit flag wins over it. `small` is
the default: a model that writes recognisable text after a few minutes on a laptop CPU.
"""

from __future__ import annotations

from .errors import UsageError

PRESETS: dict[str, dict] = {
    "tiny": {  # a smoke test: about a minute on a laptop CPU
        "model": {"num_layers": 2, "hidden_size": 128, "embed_size": 32, "dropout": 0.0},
        "train": {"batch_size": 32, "seq_len": 64, "lr": 4e-3, "max_steps": 600,
                  "eval_every": 100},
    },
    "small": {  # the default: a few minutes on a laptop CPU
        "model": {"num_layers": 2, "hidden_size": 256, "embed_size": 64, "dropout": 0.1},
        "train": {"batch_size": 32, "seq_len": 64, "lr": 3e-3, "max_steps": 2000,
                  "eval_every": 250},
    },
    "medium": {  # about an hour on a laptop CPU, minutes on a GPU
        "model": {"num_layers": 2, "hidden_size": 512, "embed_size": 128, "dropout": 0.2},
        "train": {"batch_size": 32, "seq_len": 128, "lr": 2e-3, "max_steps": 5000,
                  "eval_every": 500},
    },
    "large": {  # for a GPU
        "model": {"num_layers": 3, "hidden_size": 768, "embed_size": 128, "dropout": 0.25},
        "train": {"batch_size": 64, "seq_len": 128, "lr": 1.5e-3, "max_steps": 20000,
                  "eval_every": 1000},
    },
}
DEFAULT_PRESET = "small"


def preset(name: str) -> dict:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return PRESETS[name]
