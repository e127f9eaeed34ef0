"""Fine-tuning: a new run that starts from a trained model's weights (`train --init-from`).

The new run keeps its parent's architecture and weights, and has a new run folder, a new
optimizer and a fresh schedule from step 0. Its vocabulary is the union of the parent's
and the new text's characters (see Vocabulary.union), in code point order: a character
the parent knew keeps its meaning, even where its id moves, and a character the new text
lacks stays. A character the parent never saw gets an embedding row (the mean of the
parent's, an "average character" to read) and an output row whose weights are zero and
whose bias is low enough that at step 0 all new characters together have at most
NEW_MASS of the probability (see `new_char_bias`), whatever the model has read: the old
characters' probabilities are then the parent's to within that factor. Adam moves each
weight by about the learning rate per step whatever its gradient's size, so the new rows
are learnt within a few dozen steps all the same.

The checkpoint records its parent (`describe`: path, SHA-256 of the file, step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint
from ..checkpoint import Checkpoint
from ..errors import UsageError
from ..settings import (ARCHITECTURE, FINE_TUNE_LR_RATIO, FINE_TUNE_WARMUP_STEPS,
                       ModelConfig, SettingError, TrainConfig)
from ..data.files import file_sha256
from ..data.vocab import Vocabulary

# All new characters together get at most this share of the probability at step 0
NEW_MASS = 1e-6


@dataclass(frozen=True)
class Parent:
    """The trained model a fine-tuning run starts from."""

    path: Path  # the checkpoint file
    sha256: str  # of that file
    record: Checkpoint

    def describe(self) -> dict:
        """What the child's checkpoint records of it (its `parent` key)."""
        return {"path": str(self.path.resolve()), "sha256": self.sha256,
                "step": self.record.step}

    def architecture(self) -> dict:
        saved = ModelConfig.from_dict(self.record.model_config)  # older runs: defaults
        return {key: getattr(saved, key) for key in ARCHITECTURE}

    def training_defaults(self) -> dict:
        """The learning rate and warm-up a fine-tuning run takes unless told otherwise
        (measured: see settings.FINE_TUNE_LR_RATIO)."""
        lr = self.record.train_config.get("lr", TrainConfig().lr) * FINE_TUNE_LR_RATIO
        return {"lr": float(f"{lr:.3g}"), "warmup_steps": FINE_TUNE_WARMUP_STEPS}


@dataclass(frozen=True)
class Start:
    """What a fine-tuning run's Trainer starts from: the weights for the run's
    vocabulary, and the record of the parent."""

    weights: dict  # a state_dict for CharRNN with the union vocabulary
    parent: dict  # Parent.describe()


def read_parent(spec: Path) -> Parent:
    """The checkpoint `--init-from` names (a .pt file, or a run folder: its best.pt, else
    its last.pt), read and checked."""
    path = checkpoint.find(Path(spec))
    record = checkpoint.read(path)
    return Parent(path, file_sha256(path), record)



def check_architecture(parent: Parent, model_given: dict, named_preset: dict | None,
                       preset_name: str | None) -> None:
    """A usage error when an explicit size option, or a named preset's model, contradicts
    the parent's architecture (which a fine-tuning run keeps)."""
    arch = parent.architecture()
    for key, value in model_given.items():
        if key in ARCHITECTURE and value != arch[key]:
            raise SettingError(
                f"{{{key}}} {value} contradicts the parent model's {arch[key]}; a "
                "fine-tuning run keeps its parent's architecture (leave {" + key + "} out)")
    if named_preset is not None:
        differs = [k for k, v in named_preset["model"].items() if k in arch and v != arch[k]]
        if differs:
            shape = ", ".join(f"{k} {named_preset['model'][k]} (parent: {arch[k]})"
                              for k in differs)
            raise UsageError.naming(f"preset {preset_name!r} has another model than the parent "
                             f"({shape}); a fine-tuning run keeps its parent's "
                             "architecture, so leave {preset} out or name one that matches")


def union_vocabulary(parent: Parent, text_vocab: Vocabulary) -> Vocabulary:
    return parent.record.vocabulary().union(text_vocab)


def child_weights(parent: dict, old: Vocabulary, new: Vocabulary,
                  new_mass: float = NEW_MASS) -> dict:
    """The parent's state_dict for a model over `new` (a superset of `old`): the rows of
    the embedding and the output layer move to the characters' new ids; new characters
    get the mean embedding, zero output weights and `new_char_bias`. A factored head
    (charrnn.FactoredHead) keeps its first matrix; its second gets the new rows."""
    old_ids = torch.tensor([new.encode(c)[0] for c in old.chars])
    added = torch.tensor([i for i, c in enumerate(new.chars) if c not in old], dtype=torch.long)
    weights = dict(parent)
    rows = "head.out" if "head.out.weight" in parent else "head"  # the (V, ...) matrix
    embed, head_w, head_b = (parent["embed.weight"], parent[f"{rows}.weight"],
                             parent[f"{rows}.bias"])
    if embed.size(0) != len(old) or head_w.size(0) != len(old):
        raise UsageError("the parent checkpoint's weights do not match its vocabulary")
    new_embed = embed.new_empty(len(new), embed.size(1))
    new_embed[old_ids] = embed
    new_embed[added] = embed.mean(dim=0)
    new_head_w = head_w.new_zeros(len(new), head_w.size(1))
    new_head_w[old_ids] = head_w
    new_head_b = head_b.new_empty(len(new))
    new_head_b[old_ids] = head_b
    whole_w = head_w @ parent["head.down.weight"] if rows == "head.out" else head_w  # (V, H)
    new_head_b[added] = new_char_bias(whole_w, head_b, len(added), new_mass)
    weights.update({"embed.weight": new_embed, f"{rows}.weight": new_head_w,
                    f"{rows}.bias": new_head_b})
    return weights


def new_char_bias(head_w: torch.Tensor, head_b: torch.Tensor, n_new: int,
                  new_mass: float) -> float:
    """The output bias of each new character (whose output weights are zero) that keeps
    the new characters' total probability at most `new_mass` for any hidden state.

    The stack's output h lies in [-1, 1] in every unit (LSTM: o * tanh(c); GRU: a mix of
    tanh values starting from 0; RNN: tanh), so each old logit w_i . h + b_i is at least
    b_i - |w_i|_1, and their exponentials sum to at least e^m with m the largest of
    those. With bias m + log(new_mass / n_new) the n_new new characters' share
    n e^b / (Z + n e^b) is below new_mass, so each old probability is the parent's times
    a factor in [1 - new_mass, 1].
    """
    floor = (head_b.float() - head_w.float().abs().sum(dim=1)).max().item()
    return floor + math.log(new_mass / max(1, n_new))
