"""charlstm: character-level recurrent language models (LSTM, GRU, RNN) for the command line.

The command line (`charlstm`, or `python -m charlstm`) is built on this package's library:

    import charlstm
    model = charlstm.load("checkpoints/pystdlib-lstm1x512/best.pt")
    print(model.sample("def ", length=200, temperature=0.8, seed=1))

`charlstm.load` returns a `LanguageModel` (see `api`); `charlstm.train` trains one.
"""

__version__ = "1.0.0"

from .api import LanguageModel, load, train  # noqa: E402  (needs __version__ above)

__all__ = ["LanguageModel", "load", "train", "__version__"]
