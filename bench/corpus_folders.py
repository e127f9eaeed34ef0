"""Corpus preparation of folders: many small files, and a few large ones.

    python bench/corpus_folders.py [--files 100000] [--large-size 400MB] [--large-files 4]
                                   [--workdir DIR] [--keep] [--no-record]

Generates, with corpus_scale's word-salad generator (mostly ASCII, multi-byte words
throughout, reproducible by --seed):

  - `many/`: --files small files (sizes drawn from 20 bytes to 4 KB, about 2 KB on
    average), a thousand to a folder, two folder levels deep, plus one binary file in
    every folder (skipped, as a real tree's binaries are), and `many.txt`, the same text
    as one file;
  - `large/`: --large-files generated files sharing --large-size bytes, and
    `large.txt`, the same text as one file;

then measures `charlstm corpus prepare` in a child process of its own (peak RSS is that
child's, from os.wait4): each folder with an empty cache and again from the cache, and the
single file of the same text with an empty cache. What is compared: the peak RSS of the
folder against the file of the same bytes (the folder may add a few numbers per file, never
its text), and the wall clock of each (files cost an open, a stat and a little Python each).
The generated files go to --workdir (default: a fresh folder under the system's temporary
folder), never into the project, and are deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_scale import ascii_end, generate_corpus, parse_size, run  # noqa: E402
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402

FILES_PER_FOLDER = 1000
SMALL_SIZES = (20, 4000)  # bytes, uniform: about 2 KB on average
BINARY = bytes(range(256)) * 4  # NUL bytes: a binary file, skipped


def make_many(root: Path, text_path: Path, files: int, seed: int) -> int:
    """Cut the text in `text_path` into `files` small files under `root`; returns the bytes
    in them (the single file `text_path` is cut to the same bytes)."""
    data = np.frombuffer(text_path.read_bytes(), np.uint8)
    rng = np.random.default_rng(seed)
    sizes = rng.integers(*SMALL_SIZES, size=files)
    start = 0
    for i, size in enumerate(sizes):
        folder = root / f"{i // (FILES_PER_FOLDER * 10):03d}" / f"{i // FILES_PER_FOLDER:04d}"
        if i % FILES_PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "blob.bin").write_bytes(BINARY)
        piece = ascii_end(data[start:start + int(size)])  # never cut inside a character
        if len(piece) == 0:
            break
        (folder / f"f{i:06d}.txt").write_bytes(piece.tobytes())
        start += len(piece)
    text_path.write_bytes(data[:start].tobytes())
    return start


def make_large(root: Path, text_path: Path, parts: int, size: int, seed: int) -> int:
    """`parts` generated files under `root` sharing `size` bytes, and `text_path`, the same
    text as one file; returns its bytes."""
    root.mkdir(parents=True, exist_ok=True)
    with open(text_path, "wb") as whole:
        for i in range(parts):
            part = root / f"part{i}.txt"
            generate_corpus(part, size // parts, seed + i)
            with open(part, "rb") as f:
                shutil.copyfileobj(f, whole, 16 << 20)
    return text_path.stat().st_size


def make_files(workdir: Path, files: int, large_size: int, large_files: int, seed: int,
               sizes: dict) -> None:
    """Both folders and their single files; `sizes` receives their bytes."""
    generate_corpus(workdir / "many.txt", files * 2300, seed)  # enough for the sizes drawn
    sizes["many"] = make_many(workdir / "many", workdir / "many.txt", files, seed)
    sizes["large"] = make_large(workdir / "large", workdir / "large.txt", large_files,
                                large_size, seed + 1)


def measure(workdir: Path, files: int, large_size: int, large_files: int,
            seed: int) -> list[list[str]]:
    env = {**os.environ, "CHARLSTM_CORPORA": str(workdir / "corpora")}
    charlstm = [sys.executable, "-m", "charlstm", "corpus", "prepare"]
    rows = []
    started = time.perf_counter()
    # in a process of its own: a child's peak RSS as os.wait4 reports it includes that of
    # the process that started it (see corpus_scale), so this one must stay small
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        shared = manager.dict()
        maker = context.Process(target=make_files,
                                args=(workdir, files, large_size, large_files, seed, shared))
        maker.start()
        maker.join()
        if maker.exitcode != 0:
            sys.exit("generating the files failed")
        sizes = dict(shared)
    print(f"generated in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    for name, label in (("many", f"{files:,} small files"),
                        ("large", f"{large_files} large files")):
        size = sizes[name]
        cold, _, cold_mb, summary, _ = run([*charlstm, name], env, workdir)
        warm, _, warm_mb, _, _ = run([*charlstm, name], env, workdir)
        single, _, single_mb, _, _ = run([*charlstm, f"{name}.txt"], env, workdir)
        rows += [
            [f"{label}: {size / 1e6:,.1f} MB", summary.strip(), ""],
            ["  folder, empty cache", f"{cold:.1f} s = {size / 1e6 / cold:,.1f} MB/s",
             f"peak RSS {cold_mb:,.0f} MB"],
            ["  folder, from the cache", f"{warm:.2f} s", f"peak RSS {warm_mb:,.0f} MB"],
            ["  the same text as one file, empty cache",
             f"{single:.1f} s = {size / 1e6 / single:,.1f} MB/s",
             f"peak RSS {single_mb:,.0f} MB"],
            ["  folder - one file", f"{cold - single:+.1f} s",
             f"peak RSS {cold_mb - single_mb:+,.0f} MB"],
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="small files (100000)")
    parser.add_argument("--large-size", type=parse_size, default=parse_size("400MB"),
                        help="bytes in the large files together (400MB)")
    parser.add_argument("--large-files", type=int, default=4, help="large files (4)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the files and caches go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="charlstm-corpus-folders-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = measure(workdir, args.files, args.large_size, args.large_files, args.seed)
    finally:
        if not args.keep:  # what this script made, not a --workdir's other contents
            for made in ("many", "large", "corpora"):
                shutil.rmtree(workdir / made, ignore_errors=True)
            for made in ("many.txt", "large.txt"):
                (workdir / made).unlink(missing_ok=True)
            if args.workdir is None:
                workdir.rmdir()
    table = markdown_table(["measure", "wall clock", "memory"], rows)
    publish(f"Corpus preparation of folders: {args.files:,} small files, "
            f"{args.large_files} large", table, not args.no_record,
            body=f"Corpus: generated word salad (seed {args.seed}); every folder of small "
                 f"files also holds one binary file, which is skipped.\n\n{table}")


if __name__ == "__main__":
    main()
