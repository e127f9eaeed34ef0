"""`charlstm sample`: generate text from a trained model; only the text goes to stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from ..infer.novelty import DEFAULT_MIN_LENGTH, check_min_length
from ..infer.penalties import DEFAULT_WINDOW
from .app import CHECKPOINT_ARGUMENT, DEVICE_OPTION, HELP, app, corpora_dir
from .input import read_prime, stdin_line_batches, unescape
from .novelty import report_novelty
from .output import StdoutWriter


@app.command(context_settings=HELP, epilog=(
    "Examples:\n\n"
    "  charlstm sample checkpoints/pystdlib-lstm1x512 -n 500\n\n"
    "  charlstm sample RUN/best.pt -t 0.7 -p 'ROMEO:' | tee romeo.txt\n\n"
    "  echo 'def main(' | charlstm sample RUN -n 300 --seed 7\n\n"
    "  charlstm sample RUN -n 0 | head -c 10000     # endless, until the pipe closes\n\n"
    "  charlstm sample RUN --stop-at '\\n\\n' -n 2000   # up to the first blank line\n\n"
    "  cut -c1-20 names.txt | charlstm sample RUN --each-line --stop-at '\\n'\n\n"
    "  charlstm sample RUN -t 0.5 --frequency-penalty 0.3 --presence-penalty 0.3\n\n"
    "  charlstm sample RUN --novelty --max-copy 40   # copies of the corpus: at most 40\n\n"
    "  charlstm sample RUN --beam 8 -N 3 --stop-at '\\n\\n'"))
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
    repetition_penalty: float = typer.Option(
        1.0, "--repetition-penalty", help="Divide the positive logits of characters in the "
        "penalty window by this (multiply the negative ones); 1 = off, e.g. 1.2."),
    frequency_penalty: float = typer.Option(
        0.0, "--frequency-penalty", help="Lower each character's logit by this much per "
        "time it occurs in the penalty window (OpenAI's meaning), in [-2, 2]."),
    presence_penalty: float = typer.Option(
        0.0, "--presence-penalty", help="Lower the logit of each character that occurs in "
        "the penalty window by this much (OpenAI's meaning), in [-2, 2]."),
    penalty_window: int = typer.Option(
        DEFAULT_WINDOW, "--penalty-window", help="The last characters (the prime's "
        "included) the penalties and --no-repeat look at."),
    no_repeat: int = typer.Option(
        0, "--no-repeat", help="Never repeat an n-gram of this many characters within the "
        "penalty window; 0 = off."),
    max_copy: Optional[int] = typer.Option(
        None, "--max-copy", help="No sample contains more than this many characters copied "
        "verbatim from the training text (needs the corpus or its cached index)."),
    novelty: bool = typer.Option(
        False, "--novelty", help="After each sample, report on stderr its longest copy of "
        "the training text (length, file:line) and the share in copies."),
    novelty_min: int = typer.Option(
        DEFAULT_MIN_LENGTH, "--novelty-min", help="The length from which a copied stretch "
        "counts towards --novelty's share."),
    beam: Optional[int] = typer.Option(
        None, "--beam", help="Beam search with this many beams: the likeliest text, the "
        "same every run (no -t, --top-k, --top-p, penalties, --max-copy)."),
    device: str = DEVICE_OPTION,
) -> None:
    """Generate text from a trained model; only the text goes to stdout."""
    from ..api import load, make_generator

    has_prime = prime is not None or prime_file is not None
    controls = dict(repetition_penalty=repetition_penalty,
                    frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                    penalty_window=penalty_window, no_repeat=no_repeat, max_copy=max_copy,
                    beam=beam)
    stop = _check_sample_options(length, temperature, top_k, top_p, seed, num_samples,
                                 stop_at, each_line, has_prime, controls)
    check_min_length(novelty_min)
    lm = load(checkpoint_path, device, corpora_dir())
    if novelty:
        lm.copy_index()  # a missing corpus fails before any text
    options = dict(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                   stop_at=stop, generator=make_generator(seed, lm.device), **controls)
    report = (lambda body: report_novelty(lm.novelty(body, novelty_min))) if novelty \
        else (lambda body: None)
    out = StdoutWriter()
    if each_line:
        _sample_each_line(lm, out, echo, options, report)
        return
    text = read_prime(prime, prime_file)
    steps = lm.generate(text, num_samples=num_samples, **options)  # checks the prime first
    if echo:
        out.write(text)
    first: list[str] = []  # the first sample's text, kept only for its report
    last = text
    rest: list[list[str]] = [[] for _ in range(num_samples - 1)]
    for step in steps:  # the first sample streams; the others are printed after it
        chars = step if num_samples > 1 else [step]
        out.write(chars[0])
        last = chars[0]
        if novelty:
            first.append(chars[0])
        for column, char in zip(rest, chars[1:]):
            column.append(char)
    if not last.endswith("\n"):
        out.write("\n")
    out.flush()
    report("".join(first))
    for column in rest:
        body = "".join(column)
        out.write("\n" + (text if echo else "") + body + ("" if body.endswith("\n") else "\n"))
        out.flush()
        report(body)


def _check_sample_options(length: int, temperature: float, top_k: int | None,
                          top_p: float | None, seed: int | None, num_samples: int,
                          stop_at: str | None, each_line: bool, has_prime: bool,
                          controls: dict) -> str | None:
    """The usage errors `sample` reports before it loads the model; returns the stop
    string with its escapes understood."""
    from ..infer.generate import check_options
    from ..infer.penalties import Penalties

    penalties = Penalties(controls["repetition_penalty"], controls["frequency_penalty"],
                          controls["presence_penalty"], controls["no_repeat"],
                          controls["penalty_window"])
    # the library checks every option, naming it as the API does; the command line's
    # handler spells those names as flags (--top-k)
    stop = unescape(stop_at) if stop_at is not None else None
    check_options(temperature, top_k, top_p, length, num_samples, penalties=penalties,
                  max_copy=controls["max_copy"], beam=controls["beam"], seed=seed,
                  stop_at=stop)
    if controls["beam"] is not None and each_line:
        raise UsageError("--beam continues one prime; drop --each-line")
    if length == 0 and num_samples > 1:
        raise UsageError("endless sampling (--length 0) streams one sample; "
                         "drop --num-samples or give a --length")
    if each_line and (has_prime or num_samples > 1 or length == 0):
        raise UsageError("--each-line takes its primes from stdin, one sample per line, of "
                         "a finite --length; drop --prime, --prime-file and --num-samples")
    return stop


EACH_LINE_BATCH = 64  # input lines continued together


def _sample_each_line(lm, out: StdoutWriter, echo: bool, options: dict, report) -> None:
    """One continuation per stdin line, in order; characters the model never saw are left
    out of that line's prime (and said once on stderr). `options`: LanguageModel.sample's."""
    unknown_lines = 0
    for lines in stdin_line_batches(EACH_LINE_BATCH):
        primes = ["".join(c for c in line if c in lm.vocab) for line in lines]
        unknown_lines += sum(known != line for known, line in zip(primes, lines))
        for line, body in zip(lines, lm.sample(primes, **options)):
            text = (line if echo else "") + body
            out.write(text if text.endswith("\n") else text + "\n")
            report(body)
        out.flush()
    if unknown_lines:
        print(f"charlstm: warning: {unknown_lines:,} line(s) had characters the model never "
              "saw; they were left out of those primes", file=sys.stderr)
