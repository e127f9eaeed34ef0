"""`charlstm sample`: generate text from a trained model; only the text goes to stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..ranges import SAMPLES, SEED, TEMPERATURE, TOP_K, TOP_P
from .app import CHECKPOINT_ARGUMENT, DEVICE_OPTION, HELP, app
from .input import read_prime, stdin_line_batches, unescape
from .output import StdoutWriter


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n"
    "  charlstm sample checkpoints/pystdlib-lstm1x512 -n 500\n\n"
    "  charlstm sample RUN/best.pt -t 0.7 -p 'ROMEO:' | tee romeo.txt\n\n"
    "  echo 'def main(' | charlstm sample RUN -n 300 --seed 7\n\n"
    "  charlstm sample RUN -n 0 | head -c 10000     # endless, until the pipe closes\n\n"
    "  charlstm sample RUN --stop-at '\\n\\n' -n 2000   # up to the first blank line\n\n"
    "  cut -c1-20 names.txt | charlstm sample RUN --each-line --stop-at '\\n'"))
def sample(
    checkpoint_path: Path = CHECKPOINT_ARGUMENT,
    length: int = typer.Option(1000, "--length", "-n",
                               help="Characters to generate per sample; 0 = endless."),
    temperature: float = typer.Option(1.0, "--temperature", "-t",
                                      help="Below 1 safer, above 1 wilder; 0 = always the "
                                           "likeliest character."),
    top_k: Optional[int] = typer.Option(None, "--top-k",
                                        help="Sample only among the k likeliest characters."),
    top_p: Optional[float] = typer.Option(None, "--top-p",
                                          help="Sample only among the likeliest characters "
                                               "whose probabilities add up to p, in (0, 1]."),
    prime: Optional[str] = typer.Option(None, "--prime", "-p",
                                        help="Text to start from (also read from stdin when "
                                             "stdin is not a terminal)."),
    prime_file: Optional[str] = typer.Option(None, "--prime-file",
                                             help="Read the prime from a file, '-' = stdin."),
    echo: bool = typer.Option(True, "--echo/--no-echo",
                              help="Print the prime before its continuation."),
    seed: Optional[int] = typer.Option(None, "--seed", "-s",
                                       help="Make the sample reproducible (default: random)."),
    num_samples: int = typer.Option(1, "--num-samples", "-N",
                                    help="Samples generated together as one batch; printed "
                                         "one after another, separated by a blank line."),
    stop_at: Optional[str] = typer.Option(None, "--stop-at",
                                          help="End each sample once it has written this "
                                               "string (kept); \\n and \\t are understood."),
    each_line: bool = typer.Option(False, "--each-line",
                                   help="Read stdin line by line and write one continuation "
                                        "of each line (its prime), in order; batched."),
    device: str = DEVICE_OPTION,
) -> None:
    """Generate text from a trained model; only the text goes to stdout."""
    from ..api import load, make_generator

    has_prime = prime is not None or prime_file is not None
    stop = _check_sample_options(length, temperature, top_k, top_p, seed, num_samples,
                                 stop_at, each_line, has_prime)
    lm = load(checkpoint_path, device)
    options = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                   stop_at=stop, generator=make_generator(seed, lm.device))
    out = StdoutWriter()
    if each_line:
        _sample_each_line(lm, out, echo, options)
        return
    text = read_prime(prime, prime_file)
    steps = lm.generate(text, num_samples=num_samples, **options)  # checks the prime first
    if echo:
        out.write(text)
    rest: list[list[str]] = [[] for _ in range(num_samples - 1)]
    last = text
    for step in steps:  # the first sample streams; the others are printed after it
        chars = step if num_samples > 1 else [step]
        out.write(chars[0])
        last = chars[0]
        for column, char in zip(rest, chars[1:]):
            column.append(char)
    if not last.endswith("\n"):
        out.write("\n")
    for column in rest:
        body = "".join(column)
        out.write("\n" + (text if echo else "") + body + ("" if body.endswith("\n") else "\n"))
    out.flush()


def _check_sample_options(length: int, temperature: float, top_k: int | None,
                          top_p: float | None, seed: int | None, num_samples: int,
                          stop_at: str | None, each_line: bool, has_prime: bool) -> str | None:
    """The usage errors `sample` reports before it loads the model; returns the stop
    string with its escapes understood."""
    from ..infer.generate import LENGTH, check_options

    for flag, value, allowed in (("--length", length, LENGTH),
                                 ("--temperature", temperature, TEMPERATURE),
                                 ("--top-k", top_k, TOP_K), ("--top-p", top_p, TOP_P),
                                 ("--seed", seed, SEED), ("--num-samples", num_samples, SAMPLES)):
        if value is not None and value not in allowed:
            raise UsageError(allowed.refusal(flag, value))
    check_options(temperature, top_k, top_p, length, num_samples)
    stop = unescape(stop_at) if stop_at is not None else None
    if stop == "":
        raise UsageError("--stop-at must not be empty")
    if length == 0 and num_samples > 1:
        raise UsageError("endless sampling (--length 0) streams one sample; "
                         "drop --num-samples or give a --length")
    if each_line and (has_prime or num_samples > 1 or length == 0):
        raise UsageError("--each-line takes its primes from stdin, one sample per line, of "
                         "a finite --length; drop --prime, --prime-file and --num-samples")
    return stop


EACH_LINE_BATCH = 64  # input lines continued together


def _sample_each_line(lm, out: StdoutWriter, echo: bool, options: dict) -> None:
    """One continuation per stdin line, in order; characters the model never saw are left
    out of that line's prime (and said once on stderr). `options`: LanguageModel.sample's."""
    unknown_lines = 0
    for lines in stdin_line_batches(EACH_LINE_BATCH):
        primes = ["".join(c for c in line if c in lm.vocab) for line in lines]
        unknown_lines += sum(known != line for known, line in zip(primes, lines))
        for line, body in zip(lines, lm.sample(primes, **options)):
            text = (line if echo else "") + body
            out.write(text if text.endswith("\n") else text + "\n")
        out.flush()
    if unknown_lines:
        print(f"charlstm: warning: {unknown_lines:,} line(s) had characters the model never "
              "saw; they were left out of those primes", file=sys.stderr)
