"""Collections: the files that several paths and folders name, to train on as one corpus.

`charlstm train notes/ src/*.py` trains on every text file under `notes/` and on the files
the shell found for `src/*.py`. This module finds them; collection_encoding joins and
encodes them. The rules, which docs/training.md explains to users:

- Order: the arguments in the order given; a folder is walked recursively, depth first,
  each folder's entries sorted by name (so files come in sorted path order). A file met
  twice (named twice, or reached again through a link) is taken once, the first time.
- Walking: names starting with "." (`.git`, `.venv`, `.DS_Store`) are left out; links to
  files are followed, links to folders are not (no loops); `--glob` patterns (fnmatch, case
  sensitive) select files found in folders by their name; files named directly are always
  taken. Empty files add nothing and are left out.
- Skipping: a file found in a folder that is not a regular file (a FIFO, a socket, a
  device: never opened), or whose status cannot be read (a broken link), is left out here;
  one that is not UTF-8 text or cannot be read is left out by the encoder; one warning
  line (`summary`) says how many and names the first few. A file named directly gets the
  usual errors instead.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat as stat_module
from dataclasses import dataclass
from typing import Iterator, Sequence

from ..errors import CorpusError, UsageError

NAMED_IN_SUMMARY = 3  # how many skipped files the warning names


@dataclass(frozen=True)
class Member:
    """A file of a collection, as found on disk before it is read."""

    path: str
    named: bool  # named on the command line (errors are not skipped)
    size: int
    mtime_ns: int
    inode: int


@dataclass
class Collection:
    """The files to encode, in order, and those left out while walking."""

    members: list[Member]
    skipped: list[tuple[int, str, str]]  # (members before it, path, why), in walk order

    def fingerprint(self) -> bytes:
        """What tells whether the files have changed: each one's path, size, modification
        time and inode, and the files left out while walking."""
        digest = hashlib.sha256(repr(self.skipped).encode())
        for m in self.members:
            digest.update(f"\n{os.path.abspath(m.path)}|{m.named}|{m.size}|{m.mtime_ns}|"
                          f"{m.inode}".encode("utf-8", "surrogateescape"))  # any file name
        return digest.digest()


# ------------------------------------------------------------------------ finding files


def collect(paths: Sequence[str], globs: Sequence[str] = ()) -> Collection:
    """The files that paths (files and folders) name, in order; see the module's rules."""
    members: list[Member] = []
    skipped: list[tuple[int, str, str]] = []
    seen: set[tuple[int, int]] = set()

    def take(path: str, info: os.stat_result, named: bool) -> None:
        if (info.st_dev, info.st_ino) in seen or info.st_size == 0:
            return
        seen.add((info.st_dev, info.st_ino))
        members.append(Member(path, named, info.st_size, info.st_mtime_ns, info.st_ino))

    for arg in paths:
        path = os.path.expanduser(arg)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise UsageError(f"no such file or folder: {arg!r}") from None
        except OSError as exc:
            raise CorpusError(f"cannot read corpus {arg}: {exc.strerror or exc}") from None
        if stat_module.S_ISDIR(info.st_mode):
            for found, found_info, why in _walk(path, globs):
                if why:
                    skipped.append((len(members), found, why))
                else:
                    take(found, found_info, False)
        elif stat_module.S_ISREG(info.st_mode):
            take(path, info, True)
        else:
            raise UsageError(f"corpus {arg} is not a regular file or folder")
    if not members:
        chosen = f" matching {' or '.join(repr(g) for g in globs)}" if globs else ""
        raise UsageError(f"no text files{chosen} in {', '.join(paths)}")
    return Collection(members, skipped)


def _walk(folder: str, globs: Sequence[str]
          ) -> Iterator[tuple[str, os.stat_result | None, str | None]]:
    """(path, its stat, None) for each file under `folder`, or (path, None, why it is left
    out), depth first in name order (with a stack of its own: any depth will do)."""
    stack = [iter(_listing(folder))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if isinstance(entry, tuple):  # a folder that could not be listed
            yield entry
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                stack.append(iter(_listing(entry.path)))
                continue
            if globs and not any(fnmatch.fnmatchcase(entry.name, g) for g in globs):
                continue
            info = os.stat(entry.path)  # follows a link to its file
        except OSError as exc:
            yield entry.path, None, f"unreadable ({exc.strerror or exc})"
            continue
        if stat_module.S_ISDIR(info.st_mode):
            continue  # a link to a folder: not followed
        if not stat_module.S_ISREG(info.st_mode):
            yield entry.path, None, "not a regular file"
            continue
        yield entry.path, info, None


def _listing(folder: str) -> list:
    """A folder's entries but the hidden ones, sorted by name; or, when it cannot be
    listed, the reason (as _walk yields it)."""
    try:
        with os.scandir(folder) as listing:
            return sorted((e for e in listing if not e.name.startswith(".")),
                          key=lambda e: e.name)
    except OSError as exc:
        return [(folder, None, f"unreadable folder ({exc.strerror or exc})")]


def summary(skipped: Sequence[tuple[str, str]]) -> str:
    """One line about the files left out: how many, and the first few with why."""
    first = "; ".join(f"{path} ({why})" for path, why in skipped[:NAMED_IN_SUMMARY])
    more = f"; and {len(skipped) - NAMED_IN_SUMMARY:,} more" \
        if len(skipped) > NAMED_IN_SUMMARY else ""
    return f"skipped {len(skipped):,} file(s) that are not readable UTF-8 text: {first}{more}"
