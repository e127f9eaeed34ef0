"""The Python API: load a trained model and use it, or train one, without the CLI.

    import charlstm
    lm = charlstm.load("checkpoints/pystdlib-lstm1x512")   # a run folder or a .pt file
    for chunk in lm.generate("def ", length=100, seed=1):  # streams text
        print(chunk, end="")
    text = lm.sample("import ", length=200, temperature=0.8, seed=1)
    lm.score("import os\n")["bits_per_char"]                # how surprising a text is

    result = charlstm.train("my.txt", preset="tiny", max_steps=100)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import torch

from . import checkpoint, sampling, scoring
from .device import choose_device
from .errors import CheckpointError
from .model import CharRNN, ModelConfig
from .vocab import Vocabulary

if TYPE_CHECKING:  # loading a model to sample or score never imports the training stack
    from .callbacks import TrainingCallback, TrainResult


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator seeded with `seed`, or from fresh OS entropy when seed is None."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class LanguageModel:
    """A trained model with its vocabulary, ready to generate text."""

    def __init__(self, model: CharRNN, vocab: Vocabulary, checkpoint_data: dict | None = None):
        self.model, self.vocab = model.eval(), vocab
        self.checkpoint = checkpoint_data or {}

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, prime: str = "", length: int = 1000, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 seed: int | None = None) -> Iterator[str]:
        """Stream a continuation of `prime`, one character at a time (length 0: endless)."""
        generator = make_generator(seed, self.device)
        for chars in sampling.generate(self.model, self.vocab, prime, length, temperature,
                                       top_k, top_p, 1, generator):
            yield chars[0]

    def sample(self, prime: str = "", length: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None) -> str:
        """A whole continuation of `prime` as one string (the prime not included)."""
        return "".join(self.generate(prime, length, temperature, top_k, top_p, seed))

    def score(self, text: str) -> dict:
        """How many bits the model needs for `text`: a dict with the keys text,
        characters, bits, bits_per_char and unknown (see `charlstm.scoring`)."""
        return scoring.score(self.model, self.vocab, text)

    def score_lines(self, lines: Iterable[str],
                    before_waiting: Callable[[], None] | None = None) -> Iterator[dict]:
        """The score of each of many texts (such as a file's lines), each on its own,
        in order; scored in batches, so 100,000 short lines take seconds.
        `before_waiting` is called when all lines read so far are scored and the next
        has not arrived yet (to flush output for a slow stream)."""
        return scoring.score_texts(self.model, self.vocab, lines,
                                   before_waiting=before_waiting)

    def score_stream(self, pieces: Iterable[str]) -> dict:
        """The score of one long text given in consecutive pieces (a file read block by
        block), in bounded memory; its "text" is None."""
        return scoring.score_stream(self.model, self.vocab, pieces)


def load(path: str | Path, device: str = "auto") -> LanguageModel:
    """Load a checkpoint file, or a run folder's best.pt (else last.pt)."""
    record = checkpoint.read(Path(path))
    try:
        config = record.model_settings()
        vocab = record.vocabulary()
        model = CharRNN(config)
        model.load_state_dict(record.model)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} has a damaged model or vocabulary: "
                              f"{str(exc).splitlines()[0]}") from exc
    return LanguageModel(model.to(choose_device(device)), vocab, record)


def train(corpus: str | None = None, out: str | Path | None = None, resume: bool = False,
          preset: str | None = None, callback: TrainingCallback | None = None,
          corpora_dir: str | Path = "corpora", checkpoints_dir: str | Path = "checkpoints",
          lossy: bool = False, **settings) -> TrainResult:
    """Train (or resume) a run; `settings` are ModelConfig and TrainConfig fields."""
    launched_at = time.monotonic()
    from .runs import make_trainer  # the training stack, only when training

    trainer = make_trainer(corpus, out=Path(out) if out else None, resume=resume,
                           preset=preset, settings=settings, callback=callback,
                           corpora_dir=Path(corpora_dir),
                           checkpoints_dir=Path(checkpoints_dir), lossy=lossy,
                           launched_at=launched_at)
    return trainer.fit()
