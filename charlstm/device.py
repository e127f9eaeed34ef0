"""Choosing where and in what precision to run: the device and autocast settings.

`auto` picks CUDA, then Apple MPS, then the CPU. Precision `auto` picks bf16 autocast on
CUDA GPUs that support it and fp16 (with a gradient scaler, see training) on older ones; on a
CPU it is decided by measuring (see training), because only CPUs with native bf16 matrix
units (AMX, for example) run bf16 faster than fp32. fp16 is for CUDA only: oneDNN has no
fp16 LSTM on CPUs, and MPS runs fp32.

The measurement itself (`measured_cpu_precision`) is shared: training times a few training
steps with it, scoring a few forward passes (infer/precision.py); each passes what to time.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from .errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
BF16_MIN_SPEEDUP = 1.3  # bf16 must be this much faster than fp32 to be chosen
PRECISION_ROUNDS = 5  # ... in the fastest of this many runs of each, timed in turn


def choose_device(requested: str = "auto") -> torch.device:
    kind, colon, index = requested.partition(":")
    if kind not in DEVICES or (colon and not (kind != "auto" and index.isascii()
                                              and index.isdigit() and len(index) < 6)):
        raise UsageError(f"device must be one of {', '.join(DEVICES)} (or cuda:N), "
                         f"not {requested!r}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError.naming("{device} cuda was asked for, but torch sees no CUDA GPU here")
    if kind == "mps" and not _mps_available():
        raise UsageError.naming("{device} mps was asked for, but torch sees no Apple MPS device here")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise UsageError.naming(f"{{device}} {requested}: torch sees "
                                f"{torch.cuda.device_count()} CUDA GPU(s) here, numbered from 0")
    return torch.device(requested)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def precision_without_measuring(requested: str, device: torch.device) -> str | None:
    """The precision to use, or None when only a measurement can tell (CPU auto)."""
    if requested not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested == "fp16" and device.type != "cuda":
        raise UsageError.naming("{precision} fp16 needs a CUDA GPU; use bf16 or fp32 on "
                         f"{device.type}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return None
    return "fp32"


def autocast(device: torch.device, precision: str):
    """The context to run the forward pass in."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
    return contextlib.nullcontext()


def needs_grad_scaler(precision: str) -> bool:
    """fp16's narrow range underflows small gradients unless the loss is scaled up first."""
    return precision == "fp16"


def grad_scaler(precision: str, device: torch.device,
                state: dict | None = None) -> "torch.amp.GradScaler | None":
    """fp16's loss scaler (with a resumed run's `state`), None in other precisions; its
    scale is part of a run's state."""
    if not needs_grad_scaler(precision):
        return None
    scaler = torch.amp.GradScaler(device.type)
    if state:
        scaler.load_state_dict(state)
    return scaler


def measured_cpu_precision(seconds_of: Callable[[str], float], rounds: int = PRECISION_ROUNDS,
                           warm_up: Callable[[str], object] | None = None) -> tuple[str, str]:
    """On a CPU, bf16 autocast only if it measures clearly faster than fp32 here, and a
    note saying why. `seconds_of(precision)` runs the work once in that precision and
    returns its seconds; `warm_up(precision)` (by default two untimed runs) lets oneDNN
    and the allocator settle first.

    CPUs without AVX-512 or SVE have no native bf16 arithmetic, so bf16 is not tried there;
    elsewhere the fastest of `rounds` runs of each, timed in turn, counts (`fastest_times`).
    """
    missing = missing_bf16()
    if missing:
        return "fp32", missing
    best = fastest_times(seconds_of, ["fp32", "bf16"], rounds, warm_up)
    return bf16_if_faster(best["fp32"], best["bf16"])


def missing_bf16() -> str | None:
    """Why this CPU is not worth trying bf16 on (no AVX-512 or SVE), or None."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith(("AVX512", "SVE")):
        return None
    return f"fp32 (this CPU, {capability}, has no native bf16)"


def fastest_times(seconds_of: Callable, options: list, rounds: int = PRECISION_ROUNDS,
                  warm_up: Callable | None = None) -> dict:
    """The fastest of `rounds` runs of each option (see `timed_rounds`): on a shared
    machine a run is only ever slowed down, by whatever else runs."""
    times = timed_rounds(seconds_of, options, rounds, warm_up)
    return {option: min(seconds) for option, seconds in times.items()}


def timed_rounds(seconds_of: Callable, options: list, rounds: int = PRECISION_ROUNDS,
                 warm_up: Callable | None = None) -> dict[object, list[float]]:
    """The seconds of `rounds` runs of each option, `seconds_of(option)` timing one run,
    after warming each up (`warm_up(option)`, by default two untimed runs). The options
    are timed in turn, round after round: one run of each once is not enough, for on a
    shared machine a single run can come out twice as slow (a run that trained in fp32
    on an AMX CPU for that reason made 40% fewer steps in its budget), and in turn a
    slow spell slows them all."""
    for option in options:
        if warm_up is None:
            seconds_of(option), seconds_of(option)
        else:
            warm_up(option)
    times: dict[object, list[float]] = {option: [] for option in options}
    for _ in range(rounds):
        for option in options:
            times[option].append(seconds_of(option))
    return times


def bf16_if_faster(fp32_seconds: float, bf16_seconds: float) -> tuple[str, str]:
    """bf16 if it took at most 1 / BF16_MIN_SPEEDUP of fp32's time, and a note why."""
    speedup = fp32_seconds / bf16_seconds
    if speedup >= BF16_MIN_SPEEDUP:
        return "bf16", f"bf16 (measured {speedup:.1f}x faster than fp32 on this CPU)"
    return "fp32", f"fp32 (bf16 measured {speedup:.1f}x the speed of fp32 on this CPU)"
