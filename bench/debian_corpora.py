"""Corpora assembled from the text files a Debian system carries, for the budget planner's
sweep and its targets (issue 32), so that no rule is fitted to the corpora the bench
already uses.

    python bench/debian_corpora.py [--out DIR] [--kind KIND ...] [--mb N ...]

Each kind reads one family of files, whole, in an order fixed by a hash of each file's
path (so that packages are mixed and the last 10%, the validation split, is a sample of
files rather than one package), until N megabytes of UTF-8 are reached. A file gives at
most its first MAX_FILE bytes (a few long changelogs would otherwise be half of a
corpus), cut at a line end, as is the last file. Files that are not valid UTF-8 are
skipped.

- `man`: manual pages as roff source, in every language installed (English, German,
  French, Russian, Japanese, Chinese, ...): markup and prose, a large vocabulary.
- `scripts`: Python and Perl modules (`*.py`, `*.pm`): the Python standard library and
  Debian's Perl, two languages of code.
- `docs`: package documentation prose (README, NEWS, changelogs, *.txt, *.md, *.rst;
  no licence texts, no HTML).
- `headers`: C headers (`*.h`).

The planner's rule is derived from `man` and `scripts` (1, 10 and 50 MB); `docs` and
`headers` (10 MB) are the targets it is checked on. The same system gives the same
corpora; the printed sha256 says whether two machines agree. Writes DIR/KIND-NMB.txt
(default DIR: ~/.cache/charlstm-bench/corpora), and refuses to replace a file there that
differs from what it would write.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path
from typing import Callable, Iterator

MB = 1_000_000
MAX_FILE = 200_000
DEFAULT_OUT = Path.home() / ".cache" / "charlstm-bench" / "corpora"

PROSE_NAMES = ("readme", "news", "changelog", "todo", "faq", "authors", "thanks")
PROSE_SUFFIXES = (".txt", ".md", ".rst")


def _prose(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return (name.startswith(PROSE_NAMES) or name.endswith(PROSE_SUFFIXES)) \
        and "copyright" not in name and "license" not in name


KINDS: dict[str, tuple[list[str], Callable[[Path], bool]]] = {
    "man": (["/usr/share/man"], lambda p: True),
    "scripts": (["/usr/lib/python3", "/usr/lib/python3.11", "/usr/share/perl",
                 "/usr/share/perl5"], lambda p: p.suffix in (".py", ".pm")),
    "docs": (["/usr/share/doc"], _prose),
    "headers": (["/usr/include"], lambda p: p.suffix == ".h"),
}


def files(kind: str) -> list[Path]:
    """The kind's files, in the order of a hash of their path."""
    roots, wanted = KINDS[kind]
    found = {p.resolve() for root in roots if Path(root).is_dir()
             for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink() and wanted(p)}
    return sorted(found, key=lambda p: hashlib.sha256(str(p).encode()).hexdigest())


def texts(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(raw) > MAX_FILE:
            text = _cut(text, MAX_FILE)
        if text.strip():
            yield text if text.endswith("\n") else text + "\n"


def _cut(text: str, size: int) -> str:
    """The longest start of `text` within `size` bytes of UTF-8 that ends a line."""
    start = text.encode("utf-8")[:size].decode("utf-8", "ignore")
    return start[:start.rfind("\n") + 1]


def assemble(kind: str, size: int) -> tuple[str, int]:
    """About `size` bytes of the kind's files, whole but the last, and how many files."""
    parts, total = [], 0
    for count, text in enumerate(texts(files(kind)), 1):
        encoded = len(text.encode("utf-8"))
        if total + encoded >= size:
            parts.append(_cut(text, size - total))
            return "".join(parts), count
        parts.append(text)
        total += encoded
    sys.exit(f"debian_corpora: only {total / MB:.1f} MB of {kind} here, not {size / MB:g}")


def write(path: Path, text: str) -> str:
    data = text.encode("utf-8")
    if path.exists() and path.read_bytes() != data:
        sys.exit(f"debian_corpora: {path} exists and differs; move it away first")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--kind", action="append", choices=list(KINDS))
    parser.add_argument("--mb", action="append", type=float)
    args = parser.parse_args()
    for kind in args.kind or list(KINDS):
        for mb in args.mb or [10]:
            text, count = assemble(kind, int(mb * MB))
            path = args.out / f"{kind}-{mb:g}MB.txt"
            digest = write(path, text)
            print(f"{path}: {len(text):,} characters from {count:,} files, "
                  f"{len(set(text)):,} distinct, sha256 {digest[:16]}")


if __name__ == "__main__":
    main()
