"""Corpus preparation and training start-up on a large generated corpus.

    python bench/corpus_scale.py [--size 1GB] [--workdir DIR] [--keep] [--no-record]
                                 [-- extra charlstm train arguments]

Generates a reproducible UTF-8 corpus of --size bytes (English-like words, mostly ASCII,
with accented Latin, Greek, Cyrillic, CJK and emoji words sprinkled through every part of
it, so no large stretch is pure ASCII), then measures, each in its own child process
(peak RSS is that child's own, from os.wait4):

  (a) `charlstm corpus prepare BIG` with an empty cache: wall clock from launch to exit,
      the corpus bytes per second of that wall clock, peak RSS (the text itself is in
      the operating system's page cache, having just been written, as it usually is
      after a download);
  (b) the same command again: the cache is hit, so it should take about as long as
      starting Python;
  (c) training start-up: `charlstm train CORPUS --max-steps 1 --eval-every 1
      --sample-length 0 --eval-chars 1000 --precision fp32 --json` with the corpus
      prepared, on the big corpus and on its first 1 MB. The start-up is the wall clock
      from launch to the moment the first JSON record (written after step 1, its
      evaluation and its checkpoint) appears on stdout, minus nothing: it includes
      importing torch, opening the cached corpus, building the model, one training step
      and one evaluation of 1,000 validation characters (the same small amount for both
      corpora; --precision fp32 skips the bf16 speed measurement, which is the same for
      both corpora and only adds noise). Each is run three times, alternating, and the
      fastest run of each kept. The targets are read as limits on what grows with the
      corpus (importing torch alone takes about 2 s here), so what is compared with them
      is the difference big - small: ≤ 2 s, and peak RSS ≤ 400 MB; the absolute numbers
      are in the table too.

Targets (from the issue): preparation ≥ 100 MB/s and peak RSS ≤ 300 MB; start-up on the
prepared corpus ≤ 2 s and ≤ 400 MB more than on a 1 MB corpus. The generated corpus goes
to --workdir (default: a fresh folder under the system's temporary folder), never into
the project, and is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402

PREP_MB_PER_S = 100  # targets from the issue
PREP_PEAK_MB = 300
STARTUP_SECONDS = 2.0
STARTUP_EXTRA_MB = 400
SMALL_BYTES = 1_000_000
EVAL_CHARS = 1_000
BLOCK_BYTES = 16 << 20  # the generator writes this much at a time

ASCII_WORDS = """the of and to in a is that for it as was with be by on not he i this are or
his from at which but have an they you were her she there one all we their been has when
who will more no if out so said what up its about into than them can only other new some
could time these two may then do first any my now such like our over man me even most
made after also did many before must through back years where much your way well down
should because each just those people how too little state good very make world still own
see men work long get here between both life being under never day same another know
while last might us great old year off come since against go came right used take three
river language model character network memory train sample corpus token window layer
hidden state gradient value function return print import class def self none true false
""".split()
OTHER_WORDS = """café naïve résumé über straße façade déjà señor crème brûlée garçon
Ελλάδα λόγος κόσμος αλφάβητο Москва книга язык 東京 世界 日本語 文字 漢字 模型 数据
😀 🎉 🚀 ✨ — “quoted” ‘single’ … € £ ∑ ∞ ≤ ≥ → ½ µ
""".split()


def parse_size(text: str) -> int:
    """'1GB', '50MB', '2.5GB', '1000000' -> bytes (decimal units, as in the issue)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"a size like 50MB or 1GB, not {text!r}")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)


def generate_corpus(path: Path, size: int, seed: int = 0, other_share: float = 0.02) -> None:
    """Write about `size` bytes of word salad to `path`, the same for the same seed.

    Words are drawn with Zipf-like frequencies; `other_share` of them are non-ASCII (2 to 4
    UTF-8 bytes per character); one word in twelve ends a line. Blocks are assembled with
    numpy gathers, so a gigabyte takes about a minute. The end is cut after the last
    whole word (a few bytes short of `size` at most).
    """
    words = [w + " " for w in ASCII_WORDS] + [w + " " for w in OTHER_WORDS] + ["\n"]
    encoded = [w.encode("utf-8") for w in words]
    weights = np.array([1 / (rank + 10) for rank in range(len(ASCII_WORDS))])
    weights *= (1 - other_share - 1 / 12) / weights.sum()
    other = np.full(len(OTHER_WORDS), other_share / len(OTHER_WORDS))
    probabilities = np.concatenate([weights, other, [1 / 12]])
    table = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    lengths = np.array([len(w) for w in encoded])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rng = np.random.default_rng(seed)
    mean_length = float(probabilities @ lengths)
    written = 0
    with open(path, "wb") as out:
        while written < size:
            ids = rng.choice(len(words), size=int(BLOCK_BYTES / mean_length) + 1,
                             p=probabilities)
            word_lengths = lengths[ids]
            # (n_bytes,) index into `table`: each word's start, then +1 per byte within it
            offsets = np.cumsum(word_lengths) - word_lengths
            within = np.arange(int(word_lengths.sum())) - np.repeat(offsets, word_lengths)
            block = table[np.repeat(starts[ids], word_lengths) + within]
            if written + len(block) >= size:
                block = ascii_end(block[:size - written])
            out.write(block.tobytes())
            written += len(block)
            if len(block) == 0:
                break


def ascii_end(block: np.ndarray) -> np.ndarray:
    """`block` up to its last ASCII byte, so no character is cut (every word of the
    generated text ends with a space or a newline)."""
    ascii_at = np.flatnonzero(block < 0x80)
    return block[:ascii_at[-1] + 1] if len(ascii_at) else block[:0]


def run(command: list[str], env: dict, cwd: Path
        ) -> tuple[float, float | None, float, str, str]:
    """Run a command; return (seconds to exit, seconds to its first stdout line or None,
    peak RSS in MB, stdout, stderr)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
        first_seen, lines = None, []
        for line in process.stdout:
            if first_seen is None:
                first_seen = time.perf_counter() - started
            lines.append(line)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{shlex.join(command)} failed ({code}):\n{stderr[-2000:]}")
    return seconds, first_seen, usage.ru_maxrss / 1024, "".join(lines), stderr


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=parse_size, default=parse_size("1GB"),
                        help="corpus size in bytes: 50MB, 1GB, ... (default: 1GB)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the corpus and caches go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--seed", type=int, default=0, help="the corpus generator's seed")
    parser.add_argument("--no-record", action="store_true", help="print only")
    parser.add_argument("train_args", nargs=argparse.REMAINDER,
                        help="after --: more `charlstm train` arguments for (c)")
    args = parser.parse_args()
    extra = [a for a in args.train_args if a != "--"]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="charlstm-corpus-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        rows = measure(workdir, args.size, args.seed, extra)
    finally:
        if not args.keep:  # what this script made, not a --workdir's other contents
            for made in ("big.txt", "small.txt", "corpora", "checkpoints"):
                shutil.rmtree(workdir / made, ignore_errors=True)
                (workdir / made).unlink(missing_ok=True)
            if args.workdir is None:
                workdir.rmdir()
    table = markdown_table(["measure", "value", "target", "status"], rows)
    publish(f"Corpus preparation and start-up at {args.size / 1e6:,.0f} MB", table,
            not args.no_record, body=f"Corpus: generated, {args.size:,} bytes, mostly ASCII "
            f"with multi-byte words throughout (seed {args.seed}).\n\n{table}")


def measure(workdir: Path, size: int, seed: int, extra: list[str]) -> list[list[str]]:
    big, small = workdir / "big.txt", workdir / "small.txt"
    for leftover in ("corpora", "checkpoints"):  # from an earlier run: start cold
        shutil.rmtree(workdir / leftover, ignore_errors=True)
    started = time.perf_counter()
    # in a process of its own: a child's peak RSS as os.wait4 reports it includes the peak
    # of the process that started it (Linux counts the memory it replaces at exec), so
    # this one must stay small
    generator = multiprocessing.get_context("spawn").Process(target=generate_corpus,
                                                              args=(big, size, seed))
    generator.start()
    generator.join()
    if generator.exitcode != 0:
        sys.exit("generating the corpus failed")
    with open(big, "rb") as f:
        small.write_bytes(ascii_end(np.frombuffer(f.read(SMALL_BYTES), np.uint8)).tobytes())
    size = big.stat().st_size
    print(f"generated {size:,} bytes in {time.perf_counter() - started:.1f} s: {big}",
          file=sys.stderr)
    env = {**os.environ, "CHARLSTM_CORPORA": str(workdir / "corpora"),
           "CHARLSTM_CHECKPOINTS": str(workdir / "checkpoints")}
    charlstm = [sys.executable, "-m", "charlstm"]

    cold, _, cold_mb, summary, _ = run([*charlstm, "corpus", "prepare", str(big)], env,
                                       workdir)
    warm, _, warm_mb, _, _ = run([*charlstm, "corpus", "prepare", str(big)], env, workdir)
    run([*charlstm, "corpus", "prepare", str(small)], env, workdir)
    rate = size / 1e6 / cold

    def start_up(path: Path, name: str) -> tuple[float, float]:
        command = [*charlstm, "train", str(path), "--max-steps", "1", "--eval-every", "1",
                   "--sample-length", "0", "--eval-chars", str(EVAL_CHARS), "--json",
                   "--precision", "fp32",
                   "--quiet", "--out", str(workdir / "checkpoints" / name), *extra]
        _, first, peak, _, _ = run(command, env, workdir)
        if first is None:
            sys.exit(f"{shlex.join(command)} wrote no JSON record")
        return first, peak

    # alternately, three times each, keeping the fastest: the very first start of torch
    # can take many times longer while its libraries are read from disk
    runs = [start_up(path, f"{name}-{i}") for i in (1, 2, 3)
            for path, name in ((small, "small"), (big, "big"))]
    small_s, small_mb = min(runs[0::2])
    big_s, big_mb = min(runs[1::2])
    return [
        ["corpus", f"{size / 1e6:,.0f} MB: {summary.strip()}", "", ""],
        ["(a) prepare, empty cache: wall clock", f"{cold:.1f} s = {rate:,.0f} MB/s",
         f"≥ {PREP_MB_PER_S} MB/s", met(rate >= PREP_MB_PER_S)],
        ["(a) prepare, empty cache: peak RSS", f"{cold_mb:,.0f} MB", f"≤ {PREP_PEAK_MB} MB",
         met(cold_mb <= PREP_PEAK_MB)],
        ["(b) prepare again, cache hit: wall clock", f"{warm:.2f} s", "", ""],
        ["(b) prepare again, cache hit: peak RSS", f"{warm_mb:,.0f} MB", "", ""],
        ["(c) train start-up to first record, 1 MB corpus",
         f"{small_s:.2f} s, peak RSS {small_mb:,.0f} MB", "", ""],
        [f"(c) train start-up to first record, {size / 1e6:,.0f} MB corpus",
         f"{big_s:.2f} s, peak RSS {big_mb:,.0f} MB", "", ""],
        ["(c) start-up, big - small", f"{big_s - small_s:+.2f} s",
         f"≤ {STARTUP_SECONDS:g} s", met(big_s - small_s <= STARTUP_SECONDS)],
        ["(c) peak RSS, big - small", f"{big_mb - small_mb:+,.0f} MB",
         f"≤ {STARTUP_EXTRA_MB} MB", met(big_mb - small_mb <= STARTUP_EXTRA_MB)],
    ]


if __name__ == "__main__":
    main()
