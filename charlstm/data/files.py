"""Writing files so that a crash never leaves half of one.

The data goes to a temporary file in the same folder, is flushed and fsynced, and then
renamed over the target with `os.replace`, which is atomic on POSIX and Windows: a reader
sees the old file or the new one, never a mix. The folder is fsynced too, so the rename
itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by the owner only; give them the usual permissions
FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` when the block ends without an exception.

    If the block raises (a failed checksum, a full disk, Ctrl-C), the temporary file is
    removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.chmod(tmp, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_folder(path.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically; on any error the old file is untouched."""
    with atomic_writer(path) as out:
        out.write(data)


def temporary_name(name: str) -> re.Pattern:
    """The names of the temporary files `atomic_writer` makes for a target named `name`."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]+\.part")


def remove_leftovers(folder: Path, targets: Iterable[str]) -> list[Path]:
    """Delete the temporary files a killed writer left in `folder` for the files named
    `targets` (none after a clean exit), and nothing else; returns what was removed. Only
    one process may write to a folder at a time."""
    patterns = [temporary_name(name) for name in targets]
    removed = []
    for leftover in Path(folder).glob(".*.part"):
        if not any(pattern.fullmatch(leftover.name) for pattern in patterns):
            continue
        try:
            leftover.unlink()
            removed.append(leftover)
        except OSError:
            pass
    return removed


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some platforms (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
