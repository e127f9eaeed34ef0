"""Handing freed memory back to the operating system, so a server's resident size stays flat.

glibc's malloc keeps what a program frees in its heaps (one per thread that allocated,
up to eight per core) for later reuse, and returns it only when the top of a heap is
free. A server whose requests come in every size (batches of 1 to 64 rows, texts to
score of any length, oneDNN's buffers for each) leaves holes all over those heaps, and
its resident size creeps up although the memory in use does not. `malloc_trim(0)` gives
every free page of every heap back. It costs a walk over the heaps (about a millisecond
here), so `Trimmer` runs it at most once every TRIM_SECONDS, when a batch goes idle or a
score is done. Elsewhere than glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time

TRIM_SECONDS = 1.0


def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


class Trimmer:
    """`trimmer()` gives freed memory back, unless it did less than TRIM_SECONDS ago."""

    def __init__(self, every: float = TRIM_SECONDS):
        self.every, self._last = every, 0.0
        self._trim = _malloc_trim()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self._trim is None:
            return
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.every:
                return
            self._last = now
        self._trim(0)
