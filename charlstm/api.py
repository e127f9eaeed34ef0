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
from .data.copy_index import CopyIndex, open_index
from .infer import char_probs, generate as sampling, scoring
from .infer.char_probs import CharLogProbs
from .infer.beam import beam_search
from .infer.novelty import (DEFAULT_MIN_LENGTH, CopyGuard, check_min_length,
                            report as novelty_report)
from .infer.penalties import DEFAULT_WINDOW, Penalties
from .infer.inspect import Finding, UnitCorrelations
from .infer.properties import TextProperties
from .infer.states import Chunk, StateWalk
from .device import choose_device
from .errors import CheckpointError, UsageError
from .model.charrnn import CharRNN
from .settings import ModelConfig
from .data.vocab import Vocabulary

if TYPE_CHECKING:  # loading a model to sample or score never imports the training stack
    from .training.callbacks import TrainingCallback, TrainResult


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator seeded with `seed` (checked by sampling.check_options), or from fresh
    OS entropy when seed is None."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class LanguageModel:
    """A trained model with its vocabulary, ready to generate text."""

    def __init__(self, model: CharRNN, vocab: Vocabulary,
                 record: checkpoint.Checkpoint | None = None,
                 corpora_dir: str | Path = "corpora"):
        self.model, self.vocab = model.eval(), vocab
        self.checkpoint = record  # the checkpoint it was loaded from, None if built in memory
        self.corpora_dir = Path(corpora_dir)  # where the training text's copy index is cached
        self._copy_index: CopyIndex | None = None

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
                 generator: torch.Generator | None = None,
                 repetition_penalty: float = 1.0, frequency_penalty: float = 0.0,
                 presence_penalty: float = 0.0, penalty_window: int = DEFAULT_WINDOW,
                 no_repeat: int = 0, max_copy: int | None = None, beam: int | None = None
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

        Loops: `repetition_penalty`, `frequency_penalty` and `presence_penalty` lower the
        logits of the characters of the last `penalty_window` (prime included), and
        `no_repeat` n rules out repeating an n-gram of them (infer/penalties.py).
        `max_copy` keeps every sample free of copies of the training text longer than
        that many characters (infer/novelty.py; needs the corpus or its cached index).
        `beam` K returns the likeliest continuations by beam search instead of sampling
        (infer/beam.py): they come all at once, at the end.
        """
        batched = isinstance(prime, list) or num_samples != 1
        if isinstance(prime, list):
            num_samples = len(prime)
        penalties = Penalties(repetition_penalty, frequency_penalty, presence_penalty,
                              no_repeat, penalty_window)
        sampling.check_options(temperature, top_k, top_p, length, max(num_samples, 1)
                               if isinstance(prime, list) else num_samples,
                               penalties=penalties, max_copy=max_copy, beam=beam,
                               seed=seed, stop_at=stop_at)
        for text in prime if isinstance(prime, list) else [prime]:
            sampling.check_prime(text, self.vocab)
        if beam is not None:
            steps = self._beam_steps(prime, length, beam, num_samples, stop_at)
            return steps if batched else (chars[0] for chars in steps)
        if generator is None:
            generator = make_generator(seed, self.device)
        guard = None
        if max_copy is not None:
            index = self.copy_index()  # before any text: a missing corpus fails here
            guard = lambda samples: CopyGuard(index, self.vocab, max_copy, samples)  # noqa: E731
        steps = sampling.generate(self.model, self.vocab, prime, length, temperature, top_k,
                                  top_p, num_samples, generator, stop_at,
                                  penalties=penalties if penalties.active else None,
                                  copy_guard=guard)
        return steps if batched else (chars[0] for chars in steps)

    def _beam_steps(self, prime: str | list[str], length: int, beam: int,
                    num_samples: int, stop_at: str | None) -> Iterator[list[str]]:
        """Beam search's texts, as the steps `generate` yields: one list per character."""
        primes = prime if isinstance(prime, list) else [prime]
        texts = []
        for text in primes:
            found = beam_search(self.model, self.vocab, text, length, beam,
                                1 if isinstance(prime, list) else num_samples, stop_at)
            texts += [continuation for continuation, _ in found]
        longest = max(map(len, texts), default=0)
        for i in range(longest):
            yield [text[i] if i < len(text) else "" for text in texts]

    def sample(self, prime: str | list[str] = "", length: int = 200, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               seed: int | None = None, *, num_samples: int = 1, stop_at: str | None = None,
               generator: torch.Generator | None = None, **controls) -> str | list[str]:
        """A whole continuation of `prime` as one string (the prime not included); with
        several samples (num_samples, or a list of primes: see `generate`), a list of
        them, in order. `controls`: generate's penalties, max_copy and beam."""
        steps = self.generate(prime, length, temperature, top_k, top_p, seed,
                              num_samples=num_samples, stop_at=stop_at, generator=generator,
                              **controls)
        if isinstance(prime, list) or num_samples != 1:
            return ["".join(chars) for chars in zip(*steps)]  # steps (length, N) -> N texts
        return "".join(steps)

    def copy_index(self) -> CopyIndex:
        """The index of the training text (data/copy_index.py), opened or built once,
        cached in `corpora_dir`/cache."""
        if self._copy_index is None:
            corpus = getattr(self.checkpoint, "corpus", None)
            self._copy_index = open_index(corpus, self.corpora_dir)
        return self._copy_index

    def novelty(self, text: str, min_length: int = DEFAULT_MIN_LENGTH) -> dict:
        """How much of `text` is copied from the training text: the longest copy and
        where it comes from, and the share in copies of at least `min_length`
        characters (see `charlstm.infer.novelty.report`)."""
        check_min_length(min_length)
        return novelty_report(self.copy_index(), text, min_length)

    def score(self, text: str, *, exact: bool = False, precision: str = "auto") -> dict:
        """How many bits the model needs for `text`: a dict with the keys text,
        characters, bits, bits_per_char and unknown (see `charlstm.infer.scoring`). A long
        text is read as parallel warmed streams, within about 0.005 bits per character
        of the exact score; `exact` reads it one character after another, in fp32.
        `precision` auto reads a long text in bf16 where that is measured faster here
        (charlstm.infer.precision); fp32 or bf16 as asked."""
        return scoring.score(self.model, self.vocab, text, exact=exact, precision=precision)

    def score_lines(self, lines: Iterable[str],
                    before_waiting: Callable[[], None] | None = None, *,
                    precision: str = "auto") -> Iterator[dict]:
        """The score of each of many texts (such as a file's lines), each on its own,
        in order; scored in batches, so 100,000 short lines take seconds.
        `before_waiting` is called when all lines read so far are scored and the next
        has not arrived yet (to flush output for a slow stream). `precision` auto: bf16
        where measured faster here (once per model and device), else fp32."""
        return scoring.score_texts(self.model, self.vocab, lines,
                                   before_waiting=before_waiting, precision=precision)

    def score_stream(self, pieces: Iterable[str], *, exact: bool = False,
                     precision: str = "auto") -> dict:
        """The score of one long text given in consecutive pieces (a file read block by
        block), in bounded memory; its "text" is None. Read as parallel warmed streams
        at the speed of batches, or with `exact`, one character after another (fp32);
        `precision` as for `score`."""
        return scoring.score_stream(self.model, self.vocab, pieces, exact=exact,
                                    precision=precision)

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


    def char_log_probs(self, text: str, top: int = 0) -> CharLogProbs:
        """Each character's log-probability in nats (`.nats`, `.bits`), and with `top` K
        the K likeliest characters at each place with theirs (`.top_chars`,
        `.top_nats`); their sum is the exact score (see charlstm.infer.char_probs)."""
        if top < 0:
            raise UsageError(f"top must be 0 or more, not {top}")
        return char_probs.char_log_probs(self.model, self.vocab, text, top)


def load(path: str | Path, device: str = "auto",
         corpora_dir: str | Path = "corpora") -> LanguageModel:
    """Load a checkpoint file, or a run folder's best.pt (else last.pt). `corpora_dir`
    is where the corpora and their caches are (for `novelty` and `max_copy`)."""
    record = checkpoint.read(Path(path))
    try:
        config = record.model_settings()
        vocab = record.vocabulary()
        model = CharRNN(config)
        model.load_state_dict(record.model)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} has a damaged model or vocabulary: "
                              f"{str(exc).splitlines()[0]}") from exc
    return LanguageModel(model.to(choose_device(device)), vocab, record, corpora_dir)


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
