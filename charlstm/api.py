"""The Python API: load a trained model and use it, or train one, without the CLI.

    import charlstm
    lm = charlstm.load("checkpoints/pystdlib-lstm1x512")   # a run folder or a .pt file
    for chunk in lm.generate("def ", length=100, seed=1):  # streams text
        print(chunk, end="")
    text = lm.sample("import ", length=200, temperature=0.8, seed=1)
    lm.score("import os\n")["bits_per_char"]                # how surprising a text is
    states = lm.states("def f(x):\n")                       # inside: per-character states
    states["cell_l0"][:, 17]                                 # unit 17 of layer 0's cell
    lm.next_char_probabilities("def f(x")[-1]               # the guess for what comes next

    result = charlstm.train("my.txt", preset="tiny", max_steps=100)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch

from . import checkpoint
from .infer import generate as sampling, scoring
from .infer.inspect import Finding, UnitCorrelations
from .infer.properties import TextProperties
from .infer.states import Chunk, StateWalk
from .device import choose_device
from .errors import CheckpointError, UsageError
from .model.charrnn import CharRNN, ModelConfig
from .data.vocab import Vocabulary

if TYPE_CHECKING:  # loading a model to sample or score never imports the training stack
    from .training.callbacks import TrainingCallback, TrainResult


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

    def generate(self, prime: str | list[str] = "", length: int = 1000,
                 temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, *,
                 num_samples: int = 1, stop_at: str | None = None,
                 generator: torch.Generator | None = None
                 ) -> Iterator[str] | Iterator[list[str]]:
        """Stream a continuation of `prime`, one character at a time (length 0: endless).

        One sample (a str prime, num_samples 1) yields str chunks:

            for chunk in lm.generate("def ", length=100, seed=1): print(chunk, end="")

        Several samples are generated together as one batch, and then each step yields
        a list with one chunk per sample, in order: ask for `num_samples` continuations
        of one prime, or give a list of primes (one sample each; num_samples is then
        ignored). With `stop_at`, a sample ends once its text ends with that string
        (included); an ended sample's chunks are "" until all have ended, and then the
        stream stops. `seed` makes the text reproducible; `generator`, given instead,
        draws from a torch.Generator the caller keeps, to continue one stream of
        randomness over several calls. Options are checked at the call, before any text.
        """
        batched = isinstance(prime, list) or num_samples != 1
        if isinstance(prime, list):
            num_samples = len(prime)
        sampling.check_options(temperature, top_k, top_p, length, max(num_samples, 1)
                               if isinstance(prime, list) else num_samples)
        for text in prime if isinstance(prime, list) else [prime]:
            sampling.check_prime(text, self.vocab)
        if stop_at == "":
            raise UsageError("the stop string must not be empty")
        if generator is None:
            generator = make_generator(seed, self.device)
        steps = sampling.generate(self.model, self.vocab, prime, length, temperature, top_k,
                                  top_p, num_samples, generator, stop_at)
        return steps if batched else (chars[0] for chars in steps)

    def sample(self, prime: str | list[str] = "", length: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None, *, num_samples: int = 1, stop_at: str | None = None,
               generator: torch.Generator | None = None) -> str | list[str]:
        """A whole continuation of `prime` as one string (the prime not included); with
        several samples (num_samples, or a list of primes: see `generate`), a list of
        them, in order."""
        steps = self.generate(prime, length, temperature, top_k, top_p, seed,
                              num_samples=num_samples, stop_at=stop_at, generator=generator)
        if isinstance(prime, list) or num_samples != 1:
            return ["".join(chars) for chars in zip(*steps)]  # steps (length, N) -> N texts
        return "".join(steps)

    def score(self, text: str, *, exact: bool = False) -> dict:
        """How many bits the model needs for `text`: a dict with the keys text,
        characters, bits, bits_per_char and unknown (see `charlstm.infer.scoring`). A long
        text is read as parallel warmed streams, within about 0.005 bits per character
        of the exact score; `exact` reads it one character after another."""
        return scoring.score(self.model, self.vocab, text, exact=exact)

    def score_lines(self, lines: Iterable[str],
                    before_waiting: Callable[[], None] | None = None) -> Iterator[dict]:
        """The score of each of many texts (such as a file's lines), each on its own,
        in order; scored in batches, so 100,000 short lines take seconds.
        `before_waiting` is called when all lines read so far are scored and the next
        has not arrived yet (to flush output for a slow stream)."""
        return scoring.score_texts(self.model, self.vocab, lines,
                                   before_waiting=before_waiting)

    def score_stream(self, pieces: Iterable[str], *, exact: bool = False) -> dict:
        """The score of one long text given in consecutive pieces (a file read block by
        block), in bounded memory; its "text" is None. Read as parallel warmed streams
        at the speed of batches, or with `exact`, one character after another."""
        return scoring.score_stream(self.model, self.vocab, pieces, exact=exact)

    def char_bits(self, text: str) -> list[float]:
        """The bits the model spends on each character of `text`, in order (they add up
        to `score(text)["bits"]`): where in a text the model was surprised."""
        return scoring.char_bits(self.model, self.vocab, text).tolist()

    def walk(self, pieces: str | Iterable[str], *, gates: bool = False,
             predictions: bool = False, exact: bool = True) -> Iterator[Chunk]:
        """What happens inside the model as it reads a text (a str, or consecutive
        pieces of one), in chunks (`charlstm.infer.states.Chunk`): each character's
        bits, every layer's hidden state (and cell state for an LSTM) after it, with
        `gates` the gates, with `predictions` the next character's log-probabilities.
        One row per character; memory bounded however long the text. Without `exact`
        the text is read as parallel warmed streams: many times faster on a CPU, and
        nearly the same values (see `charlstm.infer.states`)."""
        walk = StateWalk(self.model, self.vocab, gates=gates, predictions=predictions,
                         exact=exact)
        return walk.walk([pieces] if isinstance(pieces, str) else pieces)

    def states(self, text: str, *, gates: bool = False) -> dict:
        """Every layer's states after each character of `text`, as NumPy arrays keyed
        as `inspect --dump` writes them: "hidden_l0" (T, H), "cell_l0" (LSTM), with
        `gates` "input_l0", "forget_l0", "cell_input_l0", "output_l0" (LSTM) or
        "reset_l0", "update_l0", "new_l0" (GRU); and "bits" (T,)."""
        parts: dict[str, list] = {"bits": []}
        for chunk in self.walk(text, gates=gates):
            parts["bits"].append(chunk.bits)
            for n, layer in enumerate(chunk.layers):
                named = {"hidden": layer.hidden, "cell": layer.cell, **layer.gates}
                for name, values in named.items():
                    if values is not None:
                        parts.setdefault(f"{name}_l{n}", []).append(values)
        return {name: np.concatenate(arrays) if arrays else np.zeros(0)
                for name, arrays in parts.items()}

    def next_char_probabilities(self, text: str) -> np.ndarray:
        """(T, V): after each character of `text`, the probability of each character of
        the vocabulary (`lm.vocab.chars`, in that order) coming next."""
        rows = [np.exp(chunk.log_probs) for chunk in self.walk(text, predictions=True)]
        return np.concatenate(rows) if rows else np.zeros((0, len(self.vocab)))

    def find_units(self, pieces: str | Iterable[str], best: int = 5, *,
                   exact: bool = False) -> list[Finding]:
        """For each text property of `charlstm.infer.properties`, the `best` units whose
        values follow it most closely over the text (Pearson's correlation), as
        `inspect --find` ranks them (read as parallel warmed streams unless `exact`)."""
        correlations, properties = UnitCorrelations(self.config), TextProperties()
        for chunk in self.walk(pieces, exact=exact):
            correlations.add(chunk, properties.values(chunk.text))
        return correlations.findings(best)


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


def train(corpus: str | list[str] | None = None, out: str | Path | None = None,
          resume: bool = False, preset: str | None = None,
          callback: TrainingCallback | None = None, corpora_dir: str | Path = "corpora",
          checkpoints_dir: str | Path = "checkpoints", lossy: bool = False,
          init_from: str | Path | None = None, globs: tuple[str, ...] = (),
          **settings) -> TrainResult:
    """Train (or resume) a run; `corpus` is a file, a known name, or a list of files and
    folders (filtered by `globs`); `settings` are ModelConfig and TrainConfig fields.
    `init_from` (a checkpoint or run folder) fine-tunes that model on the corpus."""
    launched_at = time.monotonic()
    from .training.setup import make_trainer  # the training stack, only when training

    trainer = make_trainer(corpus, out=Path(out) if out else None, resume=resume,
                           preset=preset, settings=settings, callback=callback,
                           corpora_dir=Path(corpora_dir),
                           checkpoints_dir=Path(checkpoints_dir), lossy=lossy,
                           launched_at=launched_at, globs=globs,
                           init_from=Path(init_from) if init_from else None)
    return trainer.fit()
