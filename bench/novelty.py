"""Text you can trust: the copy index, loops with and without penalties, beam search.

    python bench/novelty.py [--run checkpoints/pystdlib-lstm1x512] [--index-mb 100]
                            [--samples 20] [--length 2000] [--beam-widths 4,8]
                            [--corpora corpora] [--no-record]

Four tables (the last two need --run, a model trained on the default corpus):

- index: building the copy index of a synthetic corpus of --index-mb MB (the default
  corpus's lines, shuffled and repeated to that size, so the text repeats little more
  than real text does) in a child process: wall time and the child's peak resident
  memory (targets: 60 s and 1.5 GB for 100 MB). And the default corpus's own index.
- check: the time of one `novelty.report` on a 1,000-character text against the
  default 2 MB corpus once its index is open (target: 20 ms): texts sampled from --run
  at t=0.8, else pieces of the corpus with random characters between them; median of 20.
- loops: the share of --samples samples of --length characters that end in a loop, at
  temperatures 0 and 0.5, without loop control, with the one docs/novelty.md recommends
  (infer.penalties.RECOMMENDED: --no-repeat 24), and with frequency and presence
  penalties (0.1, 0.3); and the model's own bits per character of the samples (what the
  control costs the text: looping text is cheap, garbage dear). A sample ends in a loop when its last 400 characters
  are one block repeated: some period p <= 200 with text[i] == text[i + p] throughout.
  Each sample has its own prime (a line of the corpus) and seed.
- beam: bits per character of 200-character continuations of the same primes, by beam
  search (--beam-widths), greedy decoding and sampling at t=0.8, read by the model
  itself (lower: likelier), and their speed in characters per second.

Prints the tables and appends them to bench/RESULTS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import publish  # noqa: E402
from runner import markdown_table  # noqa: E402

import charlstm  # noqa: E402
from charlstm.data import corpus as corpora  # noqa: E402
from charlstm.data.copy_index import open_index  # noqa: E402
from charlstm.data.files import file_sha256  # noqa: E402
from charlstm.infer.novelty import report  # noqa: E402
from charlstm.infer.penalties import RECOMMENDED  # noqa: E402

LOOP_TAIL, MAX_PERIOD = 400, 200
PENALTIES = {"frequency_penalty": 0.1, "presence_penalty": 0.3}


def synthetic_corpus(source: Path, megabytes: float, target: Path) -> None:
    lines = source.read_text("utf-8").splitlines(keepends=True)
    rng = random.Random(0)
    written, goal = 0, int(megabytes * 1e6)
    with open(target, "w", encoding="utf-8") as out:
        while written < goal:
            rng.shuffle(lines)
            for line in lines:
                out.write(line)
                written += len(line)
                if written >= goal:
                    break


def build_in_child(corpus: Path, cache: Path) -> tuple[float, float]:
    """(seconds, peak MB) of building the index of `corpus` in a fresh process."""
    code = ("import sys, hashlib; from pathlib import Path; "
            "from charlstm.data.copy_index import open_index; "
            "p = Path(sys.argv[1]); "
            "open_index({'name': p.stem, 'source': str(p), 'sha256': sys.argv[3]}, "
            "Path(sys.argv[2]))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(corpus), str(cache), file_sha256(corpus)],
                   check=True)
    took = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(peak, before) / 1024


def index_table(default: Path, megabytes: float) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        big = Path(folder) / f"synthetic{megabytes:g}mb.txt"
        synthetic_corpus(default, megabytes, big)
        for path in (default, big):
            took, peak = build_in_child(path, Path(folder) / "corpora")
            size = path.stat().st_size / 1e6
            rows.append([path.name, f"{size:,.1f}", f"{took:.1f}", f"{peak:,.0f}"])
    return markdown_table(["corpus", "MB", "build (s, target 60 for 100 MB)",
                           "peak memory (MB, target 1,500)"], rows)


def check_table(default: Path, corpora_dir: Path, lm) -> str:
    record = {"name": default.stem, "source": str(default), "sha256": file_sha256(default)}
    index = open_index(record, corpora_dir)
    corpus_text = default.read_text("utf-8")
    rng = random.Random(1)
    texts = []
    for seed in range(20):
        if lm is not None:
            texts.append(lm.sample("", 1000, temperature=0.8, seed=seed))
            continue
        pieces = []
        while sum(map(len, pieces)) < 1000:
            start = rng.randrange(len(corpus_text) - 100)
            pieces += [corpus_text[start:start + rng.randrange(5, 80)],
                       chr(rng.randrange(33, 127))]
        texts.append("".join(pieces)[:1000])
    times, longest = [], []
    for text in texts:
        started = time.perf_counter()
        found = report(index, text)
        times.append(time.perf_counter() - started)
        longest.append(found["longest"]["length"] if found["longest"] else 0)
    return markdown_table(
        ["texts", "median check (ms, target 20)", "slowest (ms)", "median longest copy"],
        [["sampled at t=0.8" if lm is not None else "corpus pieces",
          f"{statistics.median(times) * 1e3:.1f}", f"{max(times) * 1e3:.1f}",
          f"{statistics.median(longest):.0f}"]])


def ends_in_loop(text: str) -> bool:
    tail = text[-LOOP_TAIL:]
    if len(tail) < LOOP_TAIL:
        return False
    return any(tail[:-period] == tail[period:] for period in range(1, MAX_PERIOD + 1))


def primes(default: Path, count: int) -> list[str]:
    lines = [line for line in default.read_text("utf-8").splitlines() if len(line) > 20]
    return [line[:20] for line in random.Random(2).sample(lines, count)]


def loops_table(lm, starts: list[str], length: int) -> str:
    rows = []
    for temperature in (0.0, 0.5):
        for label, controls in (("none", {}), ("recommended", RECOMMENDED),
                                ("penalties", PENALTIES)):
            looped, bits = 0, []
            for seed, prime in enumerate(starts):
                text = lm.sample(prime, length, temperature=temperature, seed=seed,
                                 **controls)
                looped += ends_in_loop(text)
                bits.append(bits_per_char(lm, prime, text))
            rows.append([f"{temperature:g}", label, ", ".join(
                f"{k}={v}" for k, v in controls.items()) or "-",
                f"{looped}/{len(starts)} ({looped / len(starts):.0%})",
                f"{statistics.mean(bits):.3f}"])
    return markdown_table(["temperature", "loop control", "settings",
                           f"samples ending in a loop (last {LOOP_TAIL} chars periodic)",
                           "bits per character (model's own)"], rows)


def bits_per_char(lm, prime: str, text: str) -> float:
    found = lm.char_log_probs(prime + text)
    return float(found.bits[len(prime):].mean())


def beam_table(lm, starts: list[str], widths: list[int]) -> str:
    ways = [(f"beam {k}", dict(beam=k)) for k in widths]
    ways += [("greedy (t=0)", dict(temperature=0)), ("sampling t=0.8", dict(temperature=0.8))]
    rows = []
    for label, options in ways:
        bits, chars, took = [], 0, 0.0
        for seed, prime in enumerate(starts):
            started = time.perf_counter()
            text = lm.sample(prime, 200, **options, **({} if "beam" in options else
                                                        {"seed": seed}))
            took += time.perf_counter() - started
            chars += len(text)
            bits.append(bits_per_char(lm, prime, text))
        rows.append([label, f"{statistics.mean(bits):.3f}", f"{chars / took:,.0f}"])
    return markdown_table(["decoding", "bits per character (model's own)", "chars/s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a model trained on the default corpus")
    parser.add_argument("--index-mb", type=float, default=100, help="synthetic corpus size")
    parser.add_argument("--samples", type=int, default=20, help="samples per loop setting")
    parser.add_argument("--length", type=int, default=2000, help="characters per sample")
    parser.add_argument("--beam-widths", default="4,8")
    parser.add_argument("--corpora", default="corpora", help="where the default corpus is")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args()

    corpora_dir = Path(args.corpora)
    default = corpora.resolve(None, corpora_dir)  # built on first use
    lm = charlstm.load(args.run, "cpu", corpora_dir) if args.run else None
    sections = [("Copy index: build time and peak memory", index_table(default, args.index_mb)),
                ("Copy check of a 1,000-character text against the default corpus",
                 check_table(default, corpora_dir, lm))]
    if lm is not None:
        starts = primes(default, args.samples)
        sections.append((f"Loops at --length {args.length}, without and with loop control",
                         loops_table(lm, starts, args.length)))
        widths = [int(k) for k in args.beam_widths.split(",")]
        sections.append(("Beam search against greedy and sampling",
                         beam_table(lm, starts, widths)))
    else:
        print("(no --run: the loop and beam tables need a model)", file=sys.stderr)
    for title, table in sections:
        publish(title, table, not args.no_record)


if __name__ == "__main__":
    main()
