"""Writing a walk's states to a NumPy `.npz` file as they are computed, for notebooks:

    data = np.load("states.npz")
    data["text"].item()        # the text, a str
    data["bits"]               # (T,) bits spent on each character
    data["hidden_l0"]          # (T, H) layer 0's hidden state after each character
    data["cell_l0"]            # (T, H) its cell state (LSTM)
    data["forget_l0"]          # (T, H) its forget gate (LSTM: input, forget, cell_input,
                               #  output; GRU: reset, update, new)

One row per character of the text. Each array's rows go to a spool file as each chunk
is walked, so memory stays bounded; when the walk ends the `.npz` (a zip of `.npy`
files, whose headers need the final row count) is assembled from the spools into a
temporary file beside the target and renamed over it: a failure or Ctrl-C leaves no
half-written file. `StateDump` opens that temporary file at once, so an unwritable path
fails before any work is done.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..data.files import atomic_writer
from ..errors import CharlstmError, UsageError
from .states import Chunk

COPY_BLOCK = 1 << 24  # bytes copied from a spool at a time
MARKER = "bits.npy"  # a member every dump has: an existing file with it is ours to replace


class StateDump:
    """`with StateDump(path) as dump: dump.add(chunk) ...`: the file appears, whole,
    when the block ends without an exception."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists() and not _is_dump(self.path):
            raise UsageError(f"{self.path} exists and is not a states dump charlstm wrote; "
                             "not replacing it")
        self._spools: dict[str, tuple] = {}  # name: (spool file, dtype, row shape)
        self.rows = 0

    def __enter__(self) -> "StateDump":
        try:
            self._writer = atomic_writer(self.path)
            self._file = self._writer.__enter__()
        except OSError as exc:
            raise CharlstmError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self._folder = tempfile.mkdtemp(prefix="charlstm-dump-")
        return self

    def add(self, chunk: Chunk) -> None:
        """Append the chunk's rows: its text, bits and every layer's states and gates."""
        self._append("text", np.frombuffer(chunk.text.encode("utf-32-le", "surrogatepass"),
                                           dtype="<u4"))
        self._append("bits", chunk.bits.astype("<f8"))
        for n, layer in enumerate(chunk.layers):
            self._append(f"hidden_l{n}", layer.hidden)
            if layer.cell is not None:
                self._append(f"cell_l{n}", layer.cell)
            for name, values in layer.gates.items():
                self._append(f"{name}_l{n}", values)
        self.rows += len(chunk.text)

    def _append(self, name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        if name not in self._spools:
            spool = open(os.path.join(self._folder, name), "w+b")
            self._spools[name] = (spool, array.dtype, array.shape[1:])
        spool = self._spools[name][0]
        spool.write(array.tobytes())

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                self._assemble()
        except BaseException as exc:
            self._close_spools()
            self._writer.__exit__(type(exc), exc, exc.__traceback__)  # removes the file
            if isinstance(exc, OSError):
                raise CharlstmError(f"cannot write {self.path}: "
                                    f"{exc.strerror or exc}") from None
            raise
        self._close_spools()
        self._writer.__exit__(kind, value, traceback)  # in place, or removed on a failure

    def _close_spools(self) -> None:
        for spool, _, _ in self._spools.values():
            spool.close()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _assemble(self) -> None:
        """The zip of .npy members, each a header and then its spool's bytes."""
        with zipfile.ZipFile(self._file, "w", zipfile.ZIP_STORED, allowZip64=True) as bundle:
            for name, (spool, dtype, tail) in self._spools.items():
                if name == "text":  # the code points as one str: a 0-d '<U{rows}' array
                    dtype, shape = np.dtype(f"<U{max(self.rows, 1)}"), ()
                else:
                    shape = (self.rows, *tail)
                with bundle.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(
                        member, {"descr": np.lib.format.dtype_to_descr(dtype),
                                 "fortran_order": False, "shape": shape})
                    spool.seek(0)
                    shutil.copyfileobj(spool, member, COPY_BLOCK)


def _is_dump(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as bundle:
            return MARKER in bundle.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
