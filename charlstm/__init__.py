"""charlstm: character-level recurrent language models (LSTM, GRU, RNN) for the command line.

The command line (`charlstm`, or `python -m charlstm`) is built on this package's library:

    import charlstm
    model = charlstm.load("checkpoints/pystdlib-lstm1x512/best.pt")
    print(model.sample("def ", length=200, temperature=0.8, seed=1))

`charlstm.load` returns a `LanguageModel` (see `api`); `charlstm.train` trains one.
"""

__version__ = "1.0.0"

__all__ = ["LanguageModel", "load", "train", "__version__"]


def __getattr__(name: str):
    """The library's entry points, imported on first use: they need torch, which takes
    seconds to import, and `charlstm corpus ...`, --help and --version do not."""
    if name in ("LanguageModel", "load", "train"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
