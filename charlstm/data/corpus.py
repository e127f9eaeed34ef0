"""Corpora: finding the text to train on, building the built-in ones, downloading the rest.

A corpus argument is a file path, `-` for standard input, or the name of a known corpus:
the built-in default (`pystdlib`, assembled from the Python standard library's sources, so
it needs no network), `pydocs`, or an entry of the registry in `corpora/registry.json`,
fetched with `download`. Text is UTF-8, modelled as Unicode code points.

Several paths, a folder or `--glob` make a collection: files found by `collection`, joined
and encoded as one corpus by `collection_encoding`.

`encode` resolves a corpus argument and returns it as a `Corpus`: its vocabulary and its
token ids, which `encoding` computes once per file and caches under `corpora/cache/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import sysconfig
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np

from . import encoding, folder_encoding, folders
from .encoding import Progress, encode_bytes, encode_file
from ..errors import CorpusError, UsageError
from .files import atomic_writer, file_sha256, write_atomically
from ..ranges import FRACTION
from ..settings import SettingError
from .vocab import Vocabulary
from .split import DEFAULT_VAL_FRAC

log = logging.getLogger(__name__)

DEFAULT_CORPUS = "pystdlib"


@dataclass(frozen=True)
class Corpus:
    """An encoded corpus: what training and evaluation read."""

    name: str  # a short name for run folders and messages
    source: str | list[str]  # where the text came from: a path, "-", a known corpus
    # name, or the paths of a collection
    sha256: str  # of the UTF-8 bytes, to tell later whether a resume sees the same text
    vocab: Vocabulary
    tokens: np.ndarray  # (N,) token ids, usually a read-only memory map
    collection: dict | None = None  # several files: {files, skipped, globs}

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,  # a list of paths for a collection
            "sha256": self.sha256,
            "characters": int(len(self.tokens)),
            **(self.collection or {}),
        }


# ---------------------------------------------------------------------------- sources


def registry() -> dict[str, dict]:
    """The known downloadable corpora: name -> {description, url, size, sha256}."""
    text = resources.files("charlstm.corpora").joinpath("registry.json").read_text("utf-8")
    return json.loads(text)


def known_names() -> list[str]:
    return [*BUILT_IN, *registry()]


def resolve(spec: str | None, corpora_dir: Path) -> Path | None:
    """The file a corpus argument names, or None for standard input.

    A path that exists wins over a known name; the default corpus is built on first use.
    """
    if spec is None:
        spec = DEFAULT_CORPUS
    if spec == "-":
        return None
    path = Path(spec).expanduser()
    if path.is_dir():
        raise UsageError(f"corpus {spec!r} is a directory; give a text file")
    if path.exists():
        return path
    if spec in BUILT_IN:
        return BUILT_IN[spec].build(corpora_dir)
    if spec in registry():
        local = corpora_dir / f"{spec}.txt"
        if not local.exists():
            raise UsageError(
                f"corpus {spec!r} is not downloaded yet; run: charlstm corpus get {spec}"
            )
        return local
    raise UsageError(
        f"no such file or known corpus: {spec!r} (known: {', '.join(known_names())})"
    )


def default_corpus_files() -> list[tuple[str, Path]]:
    """The standard-library modules that make up the default corpus, in a fixed order.

    Tests, demos and vendored packages are left out, and so is any file with non-ASCII
    text, which keeps the vocabulary to printable ASCII plus tab and newline. The order is
    by a hash of each module's relative path: a deterministic mix of the whole library
    rather than its first letters.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "idlelib", "lib2to3", "turtledemo",
            "ensurepip", "pydoc_data", "__pycache__", "encodings"}
    chosen = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in skip or part.startswith(("test", "config-")) for part in rel.parts):
            continue
        chosen.append((rel.as_posix(), path))
    return sorted(chosen, key=lambda item: hashlib.sha256(item[0].encode()).hexdigest())


def build_default_corpus(corpora_dir: Path, target_bytes: int = 2_000_000) -> Path:
    """Write (once) the built-in corpus: about 2 MB of Python standard-library source."""
    path = corpora_dir / f"{DEFAULT_CORPUS}.txt"
    if path.exists():
        return path
    parts, total = [], 0
    for rel, source in default_corpus_files():
        try:
            text = source.read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if not text.isascii() or not text.strip():
            continue
        piece = f"# ---- {rel} ----\n{text.rstrip()}\n\n"
        parts.append(piece)
        total += len(piece)
        if total >= target_bytes:
            break
    if not parts:
        raise CorpusError("could not find the Python standard library's sources")
    log.info("built the default corpus from %d standard-library modules", len(parts))
    try:
        write_atomically(path, "".join(parts).encode("utf-8"))
    except OSError as exc:
        raise CorpusError(f"cannot write the default corpus to {path}: "
                          f"{exc.strerror or exc}") from exc
    return path


def build_docs_corpus(corpora_dir: Path) -> Path:
    """Write (once) `pydocs`: the Python language reference as plain text, about 0.5 MB.

    It is English prose about code with a few examples, a corpus of another character
    than the default's source code, and ships with Python (`pydoc_data`), so it too is
    built offline.
    """
    path = corpora_dir / "pydocs.txt"
    if path.exists():
        return path
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise CorpusError("this Python has no pydoc_data to build 'pydocs' from") from exc
    text = "".join(f"{topics[key].strip()}\n\n" for key in sorted(topics))
    try:
        write_atomically(path, text.encode("utf-8"))
    except OSError as exc:
        raise CorpusError(f"cannot write the pydocs corpus to {path}: "
                          f"{exc.strerror or exc}") from exc
    return path


@dataclass(frozen=True)
class BuiltIn:
    """A corpus built on this machine from what Python ships with: no network needed."""

    build: Callable[[Path], Path]  # corpora folder -> the built file
    size: str
    description: str


BUILT_IN = {
    DEFAULT_CORPUS: BuiltIn(lambda folder: build_default_corpus(folder), "~2 MB",
                            "built-in default: Python standard-library sources, made locally"),
    "pydocs": BuiltIn(build_docs_corpus, "~0.5 MB",
                      "the Python language reference, English prose, made locally"),
}


# --------------------------------------------------------------------------- download


def download(name: str, corpora_dir: Path, source: str | None = None,
             progress: Progress | None = None) -> Path:
    """Fetch a registry corpus into `corpora_dir/NAME.txt` and verify its checksum.

    `source` replaces the registry URL: another URL (http, https, file) or a local path,
    e.g. a copy already on disk. Nothing is left behind when the checksum does not match;
    a file already at the target that is not this corpus (someone else's) is refused,
    never replaced.
    """
    entries = registry()
    if name not in entries:
        raise UsageError(f"unknown corpus {name!r} (downloadable: {', '.join(entries)})")
    entry = entries[name]
    target = corpora_dir / f"{name}.txt"
    if target.exists() or target.is_symlink():
        if target.is_file() and file_sha256(target) == entry["sha256"]:
            return target
        # never a download of ours (that is kept only when its checksum matches)
        raise UsageError(f"{target} exists and is not the corpus {name} (its sha256 "
                         "differs), so it is left as it is; move it away to download "
                         f"{name}, or train on it by its path")
    url = source or entry["url"]
    if source and Path(source).expanduser().exists():
        url = Path(source).expanduser().resolve().as_uri()
    digest = hashlib.sha256()
    with atomic_writer(target) as out:  # replaces target only if the checksum matches
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                total = getattr(response, "length", None) or entry.get("size")
                done = 0
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CorpusError(f"could not download {name} from {url}: {reason}") from exc
        if digest.hexdigest() != entry["sha256"]:
            raise CorpusError(
                f"download of {name} from {url} has the wrong checksum "
                f"(sha256 {digest.hexdigest()[:16]}…, expected {entry['sha256'][:16]}…); "
                "nothing was kept"
            )
    return target


# ------------------------------------------------------------------ resolve and encode


def encode(spec: str | Sequence[str] | None, corpora_dir: Path, lossy: bool = False,
           progress: Progress | None = None, stdin: BinaryIO | None = None,
           globs: Sequence[str] = (), val_frac: float = DEFAULT_VAL_FRAC) -> Corpus:
    """Resolve a corpus argument and return it encoded, from the cache when it can.

    `spec` is one file, "-" or a known name, as always; or several paths or a folder, as
    one collection (see folders.py; `globs` choose the files found in folders; the layout
    depends on `val_frac`, the validation fraction training will use).
    """
    if val_frac not in FRACTION:
        raise SettingError(FRACTION.refusal("{val_frac}", val_frac))
    paths = [spec] if isinstance(spec, str) else list(spec or [])
    has_folder = any(Path(p).expanduser().is_dir() for p in paths)
    if globs and not has_folder:
        raise UsageError.naming("{glob} chooses among the files found in folders, and no "
                                "corpus path is a folder")
    if len(paths) > 1 or has_folder:
        return _encode_collection(paths, corpora_dir, lossy, progress, globs, val_frac)
    spec = paths[0] if paths else None
    path = resolve(spec, corpora_dir)
    if path is None:
        data = (stdin or sys.stdin.buffer).read()
        encoded = encode_bytes(data, "standard input", lossy)
        return Corpus("stdin", "-", encoded.sha256, encoded.vocab, encoded.tokens)
    encoded = encode_file(path, corpora_dir / "cache", lossy, progress)
    return Corpus(path.stem, spec or DEFAULT_CORPUS, encoded.sha256, encoded.vocab,
                  encoded.tokens)


def with_vocabulary(data: Corpus, vocab: Vocabulary, corpora_dir: Path) -> Corpus:
    """The corpus with its tokens as ids of `vocab`, a vocabulary holding all its
    characters (a fine-tuning run's). The re-encoded tokens are cached beside the corpus's
    own, named by its SHA-256 and the vocabulary's, so the cache is right whatever file
    the text came from; standard input is re-encoded in memory."""
    if vocab == data.vocab or vocab.chars == data.vocab.chars:
        return replace(data, vocab=vocab)
    target = None
    if data.source != "-":
        vocab_key = hashlib.sha256(vocab.chars.encode("utf-8")).hexdigest()[:12]
        target = corpora_dir / "cache" / f"{data.name}-{data.sha256[:16]}-v{vocab_key}.tokens"
    return replace(data, vocab=vocab,
                   tokens=encoding.remap(data.tokens, data.vocab, vocab, target))


def collection_name(paths: Sequence[str]) -> str:
    """A short name for a collection, for its run folder: the first path's name, and how
    many more paths there are (`notes`, `notes+2`)."""
    first = Path(os.path.abspath(os.path.expanduser(paths[0])))
    name = (first.name if first.is_dir() else first.stem) or "files"
    name = name.replace(".", "_")  # run folders are found again by Path(name).stem
    return name if len(paths) == 1 else f"{name}+{len(paths) - 1}"


def run_label(spec: str | Sequence[str] | None) -> str | None:
    """What a run folder is named after: the corpus argument itself, or for a
    collection its name (see collection_name)."""
    paths = [spec] if isinstance(spec, str) else list(spec or [])
    if not paths:
        return None
    if len(paths) == 1 and not Path(paths[0]).expanduser().is_dir():
        return paths[0]
    return collection_name(paths)


def _encode_collection(paths: list[str], corpora_dir: Path, lossy: bool,
                       progress: Progress | None, globs: Sequence[str],
                       val_frac: float) -> Corpus:
    for path in paths:
        if path == "-":
            raise UsageError("'-' (standard input) cannot be combined with other corpus "
                             "paths or a folder")
        if not Path(path).expanduser().exists() and path in known_names():
            raise UsageError(f"the known corpus {path!r} cannot be combined with other "
                             "corpus paths or a folder; train on it alone")
    files = folders.collect(paths, globs)
    name = collection_name(paths)
    encoded, n_files, skipped = folder_encoding.encode_collection(
        files, corpora_dir / "cache", name, lossy, val_frac, progress)
    if skipped:
        log.warning("warning: %s", folders.summary(skipped))
    return Corpus(name, list(paths), encoded.sha256, encoded.vocab, encoded.tokens,
                  {"files": n_files, "skipped": len(skipped), "globs": list(globs)})

