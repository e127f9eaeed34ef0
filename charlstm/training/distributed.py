"""Several processes training one model: the torch.distributed process group.

`torchrun --nproc_per_node=N -m charlstm train ...` starts N processes (on several machines
with its rendezvous flags); the command line has each join one process group (`start`),
and the trainer wraps the model in DistributedDataParallel (`wrap`): every process trains
on its own share of the parallel streams and the gradients are averaged. Only the main
process (rank 0) evaluates, samples, reports and writes files. Whatever decides what the
processes do next (stopping, skipping a step, the learning rate) is computed from values
they all share, so they never disagree about the next collective operation.

The helpers below work on the group if one is running, whoever started it, and are the
identity without one: a single-process run does exactly what it did before, with no
process group and no extra synchronisation.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from ..errors import CharlstmError, UsageError

T = TypeVar("T")

# Generous: while the main process encodes a corpus or evaluates, the others wait in a
# collective; a process that dies is noticed by torchrun, which ends the others anyway.
TIMEOUT = timedelta(hours=1)


def start(local_rank: int) -> None:
    """Join the process group described by torchrun's environment (MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE, read by torch itself).

    gloo carries CPU tensors and NCCL CUDA ones; each process uses the GPU of its
    `local_rank` (its place on its machine).
    """
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT)


def finish() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True when training is shared by more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """The device this process trains on: `cuda` means this process's own GPU."""
    if not active():
        return device
    if device.type == "cuda":
        if device.index is not None:
            raise UsageError.naming(
                f"{{device}} {device} names one GPU, but with several processes each one "
                "uses the GPU of its LOCAL_RANK; give {device} cuda or auto")
        return torch.device("cuda", torch.cuda.current_device())
    if device.type != "cpu":
        raise UsageError(f"several processes can train on CUDA GPUs or CPUs, not on "
                         f"{device.type}")
    return device


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as DistributedDataParallel (gradients averaged over the processes in
    backward), or the model itself in a single process."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def process_seed(seed: int, step: int = 0) -> int:
    """A seed for this process's dropout, different on each process and at each step."""
    return int(np.random.SeedSequence([seed, rank(), step]).generate_state(1, np.uint64)[0])


# ------------------------------------------------------------------ collectives


def host_device(device: torch.device) -> torch.device:
    """Where a few numbers the processes must agree on (the clock, a stop) are reduced:
    on the CPU when the group carries CPU tensors (gloo, alone or beside NCCL as `start`
    sets it up), so that reading the sum never waits for a GPU to finish its queued
    work; on `device` for a group that only has NCCL."""
    if active() and "cpu:" not in dist.get_backend_config():
        return device
    return torch.device("cpu")


def all_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor summed over the processes, in place (itself in a single process)."""
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean(tensor: torch.Tensor) -> torch.Tensor:
    """A new tensor: the mean of `tensor` over the processes."""
    if not active():
        return tensor
    return all_sum(tensor.clone()) / world_size()


def barrier() -> None:
    """Wait until every process gets here."""
    if active():
        dist.barrier()


def broadcast(value: T) -> T:
    """The main process's `value` (any picklable object), on every process."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every process's `value`, in rank order, on every process."""
    if not active():
        return [value]
    values: list = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def gather_streams(state):
    """A recurrent state split by streams over the processes, whole again: each tensor
    (num_layers, B/N, H) becomes (num_layers, B, H), the processes' slices in rank order.
    None, a tensor or a tuple of tensors; every process must call it."""
    if not active() or state is None:
        return state
    if isinstance(state, tuple):
        return tuple(gather_streams(part) for part in state)
    pieces = [torch.empty_like(state) for _ in range(world_size())]
    dist.all_gather(pieces, state.contiguous())
    return torch.cat(pieces, dim=1)


def own_streams(hidden: list[torch.Tensor], batch_size: int,
                streams) -> list[torch.Tensor]:
    """This process's streams of a saved state, which holds all `batch_size` of them
    (a state saved by fewer streams than that is returned as it is)."""
    if hidden and hidden[0].size(1) == batch_size:
        return [t[:, streams].contiguous() for t in hidden]  # (L, b, H)
    return hidden


def gather_rng_states(device: torch.device) -> dict:
    """This process's generator states, and with several processes every process's
    (under "processes"; every process must call it)."""
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if world_size() > 1:
        rng["processes"] = gather(dict(rng))
    return rng


def restore_rng_states(rng: dict, seed: int, step: int, device: torch.device) -> None:
    """Each process takes the generator states of the process of its rank when the run
    was saved; one with no saved states (the run had fewer processes) is seeded from the
    seed, its rank and the step."""
    saved = rng.get("processes") or [rng]
    if rank() >= len(saved):
        torch.manual_seed(process_seed(seed, step))
        return
    torch.set_rng_state(saved[rank()]["torch"])
    if device.type == "cuda" and saved[rank()].get("cuda"):
        torch.cuda.set_rng_state_all(saved[rank()]["cuda"])


def run_on_main(work: Callable[[], T]) -> T:
    """`work()` on the main process only; every process returns its result, or raises
    the expected error (CharlstmError) it raised. The others wait meanwhile."""
    if not active():
        return work()
    outcome = _attempt(work) if is_main() else None
    result, error = broadcast(outcome)
    if error is not None:
        raise error
    return result


def main_first(work: Callable[[], T]) -> T:
    """`work()` on the main process, then on the others (once it has, say, filled a
    cache they read); an expected error on any process is raised on all of them."""
    if not active():
        return work()
    result, error = _attempt(work) if is_main() else (None, None)
    first = broadcast(error)
    if first is not None:
        raise first
    if not is_main():
        result, error = _attempt(work)
    for where, failure in enumerate(gather(error)):
        if failure is not None:
            raise type(failure)(f"process {where}: {failure}")
    return result


def _attempt(work: Callable[[], T]) -> tuple[T | None, CharlstmError | None]:
    try:
        return work(), None
    except CharlstmError as exc:
        return None, exc
