"""What every benchmark records beside its numbers: date, machine, and software versions."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The commit measured, marked "+changes" when the package or the benchmarks in the
    working tree differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "charlstm", "bench",
                                ":!bench/RESULTS.md"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {commit}" + (" +changes" if dirty else "")


def describe() -> str:
    import torch

    import charlstm

    return (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {cpu_model()}, "
            f"{os.cpu_count()} cores; Python {platform.python_version()}, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), charlstm "
            f"{charlstm.__version__} ({git_commit()})")


# environment variables that change which kernels torch and its libraries run, or on how
# many threads: a record made with any of them set says so in its command
KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                    "MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def this_command() -> str:
    """The command line that ran this benchmark, as it can be typed again, after any of
    KERNEL_VARIABLES that are set."""
    settings = [f"{name}={os.environ[name]}" for name in KERNEL_VARIABLES
                if name in os.environ]
    return " ".join([*settings, shlex.join(["python", f"bench/{Path(sys.argv[0]).name}",
                                            *sys.argv[1:]])])


def publish(section: str, table: str, record: bool, body: str | None = None,
            command: str | None = None, results: Path | None = None) -> None:
    """Print a benchmark's table, and unless told not to (--no-record), append it (or a
    longer `body`) to RESULTS.md (or to `results`) with the command that made it."""
    print(table)
    if record:
        append(section, command or this_command(), body or table, results)


def append(section: str, command: str, body: str, results: Path | None = None) -> None:
    """Add one result block to bench/RESULTS.md (or to another file, for trial runs)."""
    block = f"\n### {section}\n\n- command: `{command}`\n- when and where: {describe()}\n\n{body}\n"
    with open(results or RESULTS, "a", encoding="utf-8") as f:
        f.write(block)
