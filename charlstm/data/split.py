"""The validation split: the last part of a corpus, held out from training.

Both the layout of a folder corpus (folder_encoding) and training's evaluation depend on
where it starts, so it is defined once, here.
"""

DEFAULT_VAL_FRAC = 0.1  # the last tenth of a corpus is held out, unless a run says otherwise


def split_point(length: int, val_frac: float) -> int:
    """Where the validation split starts: the last `val_frac` of the corpus, at least 1."""
    if val_frac == 0:
        return length
    return length - max(1, min(length - 1, round(length * val_frac)))
