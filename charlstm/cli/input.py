"""What the command line reads: stdin, primes, lines to continue or score, and options
given as text (escapes, durations).

Input is read as bytes and decoded strictly as UTF-8 (or with --lossy, invalid bytes
become U+FFFD); a failure names the input and where it failed, as one usage error.
`-` means stdin; a closed stdin (`<&-`) reads as empty.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

from ..errors import CharlstmError, UsageError
from ..ranges import MAX_SECONDS

def stdin() -> BinaryIO:
    """Standard input as bytes; a closed one (`<&-`) reads as empty."""
    return sys.stdin.buffer if sys.stdin is not None else io.BytesIO()


def read_stdin_text(what: str) -> str:
    try:
        return stdin().read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} on standard input is not valid UTF-8 "
                         f"(byte offset {exc.start})") from None


def read_prime(prime: str | None, prime_file: str | None) -> str:
    """The prime of `sample`: --prime, else --prime-file ('-' = stdin), else stdin when it
    is not a terminal, else none."""
    if prime is not None and prime_file is not None:
        raise UsageError("give --prime or --prime-file, not both")
    if prime is not None:
        return prime
    if prime_file == "-":
        return read_stdin_text("the prime")
    if prime_file is not None:
        try:
            return Path(prime_file).read_text("utf-8")
        except FileNotFoundError:
            raise UsageError(f"no such prime file: {prime_file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read prime file {prime_file}: {exc}") from None
    if sys.stdin is not None and not sys.stdin.isatty():
        return read_stdin_text("the prime")
    return ""


def stdin_line_batches(size: int) -> Iterator[list[str]]:
    """stdin's lines without their line ends, `size` at a time (the last batch may be
    shorter), each batch as soon as it is complete."""
    if sys.stdin is None:
        return
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict",
                              newline="")
    batch: list[str] = []
    try:
        for raw in stream:
            batch.append(raw.rstrip("\r\n"))
            if len(batch) == size:
                yield batch
                batch = []
    except UnicodeDecodeError as exc:
        raise UsageError(f"standard input is not valid UTF-8: {exc.reason}") from None
    if batch:
        yield batch


def unescape(text: str) -> str:
    """The few backslash escapes a shell leaves alone: \\n, \\t, \\r and \\\\."""
    return re.sub(r"\\([ntr\\])",
                  lambda m: {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[m.group(1)], text)


DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s|ms)?", re.IGNORECASE)


def parse_duration(text: str, option: str = "--time") -> float:
    """'90', '90s', '10m', '1h30m', '2.5m' -> seconds (`option` names it in errors)."""
    cleaned = text.strip().lower().replace(" ", "")
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}
    total, position = 0.0, 0
    for match in DURATION.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * units[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned) or total <= 0:
        raise UsageError(f"{option} takes a duration like 90s, 10m or 1h30m, not {text!r}")
    if not total <= MAX_SECONDS:  # also an infinity: a float of 400 digits
        raise UsageError(f"{option} takes at most {MAX_SECONDS / 86400:.0f} days, "
                         f"not {text!r}")
    return total


def parse_interval(text: str, option: str) -> float:
    """A duration as parse_duration reads it, or '0' / 'off' -> 0 (turned off)."""
    if text.strip().lower() in ("0", "off"):
        return 0.0
    return parse_duration(text, option)


# ----------------------------------------------------------------------------- score input


def open_score_input(file: str | None) -> tuple[str, BinaryIO]:
    """(a name for messages, a binary stream): FILE, or stdin for '-' or for no FILE
    when stdin is not a terminal."""
    if file is None or file == "-":
        if file is None and (sys.stdin is None or sys.stdin.isatty()):
            raise UsageError("nothing to score: give a FILE, or pipe text into standard "
                             "input ('-' reads it even from a terminal)")
        return "standard input", stdin()
    try:
        return file, open(file, "rb")
    except FileNotFoundError:
        raise UsageError(f"no such file: {file}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None


def input_lines(stream, label: str, lossy: bool):
    """Each line of a binary stream, decoded, without its newline ('\\n' only splits)."""
    offset = 0
    try:
        for number, raw in enumerate(stream, 1):
            try:
                line = raw.decode("utf-8", "replace" if lossy else "strict")
            except UnicodeDecodeError as exc:
                from ..data.utf8 import not_utf8_message  # numpy: only once a line is bad

                raise CharlstmError(not_utf8_message(label, exc, offset + exc.start,
                                                     number)) from None
            offset += len(raw)
            yield line[:-1] if line.endswith("\n") else line
    except OSError as exc:
        raise CharlstmError(f"cannot read {label}: {exc.strerror or exc}") from None
