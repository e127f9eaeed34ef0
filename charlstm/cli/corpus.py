"""`charlstm corpus list | get | prepare`: the corpora that can be trained on."""

from __future__ import annotations

from typing import List, Optional

import typer

from ..data import corpus as corpora
from ..data.split import DEFAULT_VAL_FRAC
from .app import CORPUS_HELP, GLOB_HELP, HELP, corpora_dir, corpus_app
from .input import stdin
from .output import DownloadProgress, byte_progress, source_text


@corpus_app.command("list", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm corpus list\n\n"
    "  charlstm corpus list | grep -v 'not here'    # the ones ready to train on"))
def corpus_list() -> None:
    """Show the built-in and downloadable corpora and whether each is here."""
    folder = corpora_dir()
    rows = []
    for name, built_in in corpora.BUILT_IN.items():
        local = folder / f"{name}.txt"
        rows.append((name, built_in.size, str(local) if local.exists() else "built on first use",
                     built_in.description))
    for name, entry in corpora.registry().items():
        local = folder / f"{name}.txt"
        rows.append((name, f"{entry['size'] / 1e6:.1f} MB",
                     str(local) if local.exists() else f"not here: charlstm corpus get {name}",
                     entry["description"]))
    # plain aligned columns, never cut, so the output greps and pipes well
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])


@corpus_app.command("get", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm corpus get tinyshakespeare\n\n"
    "  charlstm corpus get tinyshakespeare --from ~/data/input.txt   # a local copy"))
def corpus_get(
    name: str = typer.Argument(..., help="A name from 'charlstm corpus list'."),
    source: Optional[str] = typer.Option(None, "--from",
                                         help="Fetch from this URL or local file instead; "
                                              "the checksum is still verified."),
) -> None:
    """Download a known corpus into corpora/ and verify its checksum; prints its path."""
    if name in corpora.BUILT_IN:
        path = corpora.BUILT_IN[name].build(corpora_dir())
    else:
        with DownloadProgress(name) as progress:
            path = corpora.download(name, corpora_dir(), source, progress)
    print(path)


@corpus_app.command("prepare", context_settings=HELP, epilog=(
    "Examples:\n\n  charlstm corpus prepare enwik8.txt      # encode once, train many times\n\n"
    "  charlstm corpus prepare pydocs\n\n"
    "  charlstm corpus prepare notes/ src/ --glob '*.py' --glob '*.md'   # a collection\n\n"
    "  charlstm corpus prepare --lossy scraped.txt   # invalid UTF-8 becomes U+FFFD"))
def corpus_prepare(
    corpus: List[str] = typer.Argument(..., help=CORPUS_HELP, show_default=False),
    globs: List[str] = typer.Option([], "--glob", help=GLOB_HELP, metavar="PATTERN",
                                    show_default=False),
    val_frac: float = typer.Option(DEFAULT_VAL_FRAC, "--val-frac",
                                   help="The --val-frac training will use: a collection's "
                                        "layout depends on it."),
    lossy: bool = typer.Option(False, "--lossy", help="Replace invalid UTF-8 bytes."),
) -> None:
    """Encode a corpus into its token cache now (training would do it on first use)."""
    spec = corpus[0] if len(corpus) == 1 else corpus
    data = corpora.encode(spec, corpora_dir(), lossy, byte_progress("encoding"),
                          stdin() if spec == "-" else None, globs, val_frac=val_frac)
    print(f"{source_text(data.describe())}: {len(data.tokens):,} characters, vocabulary "
          f"{len(data.vocab)} ({data.vocab.dtype.name}), sha256 {data.sha256[:12]}")
