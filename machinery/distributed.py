"""
Data parallel training's bookkeeping, so train.py's loop reads the same with one process or several:
joining the process group torchrun sets up, sharing numbers between processes, agreeing to stop on
Ctrl-C or SIGTERM, and leaving the group cleanly.

Launched by plain `uv run train.py` there is one process (rank 0 of a world of 1) and every function
here is a no-op or returns its input. Under `torchrun --nproc_per_node=N train.py` each process takes
its own slice of every batch and DistributedDataParallel averages the gradients.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    """This process's place among the processes training together."""

    rank: int = 0  # this process, 0 .. world-1
    local_rank: int = 0  # this process on its machine: which GPU it uses
    world: int = 1  # how many processes train together

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes the files."""
        return self.rank == 0


def join() -> Processes:
    """Join the process group when launched by torchrun; a single process otherwise."""
    if "RANK" not in os.environ:
        return Processes()
    local_rank = int(os.environ["LOCAL_RANK"])
    # Imported before the group exists: its functions' default group is read at import, and DDP imports it
    # later; imported after, those defaults would keep the group (and its gloo threads) alive past leave().
    import torch.distributed.nn  # noqa: F401
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        # NCCL carries the GPU tensors (gradients); gloo the CPU ones, such as the stop flag each step,
        # which then needs no wait for the GPU.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")
    return Processes(dist.get_rank(), local_rank, dist.get_world_size())


def gather(value: object, world: int) -> list:
    """Every process's value, in rank order. Under DDP every rank must call this at the same point."""
    if world == 1:
        return [value]
    values = [None] * world
    dist.all_gather_object(values, value)
    return values


def sum_across(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """The tensor summed over all processes (in place)."""
    if world > 1:
        dist.all_reduce(tensor)
    return tensor


def mean_across(tensor: torch.Tensor, world: int) -> torch.Tensor:
    """The tensor averaged over all processes (in place)."""
    return sum_across(tensor, world).div_(world)


class StopSignal:
    """Ctrl-C (SIGINT) and SIGTERM request a stop instead of killing the run, so the loop can save a
    resumable checkpoint first. Used as a context manager: the previous handlers come back on exit, so
    Ctrl-C works again in a notebook after training."""

    def __init__(self):
        self.received: list[int] = []
        self.previous_handlers = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # signal handlers need the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self.previous_handlers[signum] = signal.signal(signum, self.handle)
        return self

    def handle(self, signum: int, frame) -> None:
        self.received.append(signum)

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous_handlers.items():
            if handler is not None:  # None: installed outside Python, so it cannot be put back from here
                signal.signal(signum, handler)

    @property
    def signum(self) -> int:
        """The signal that asked for the stop (SIGTERM for a rank that only learnt of it from another)."""
        return self.received[0] if self.received else signal.SIGTERM

    def requested(self, world: int, here: bool = False) -> bool:
        """Whether a stop has been asked for, by a signal or by this process (here). Under DDP the ranks
        decide together: a signal can reach one process a step before another, and a rank that stopped
        alone would leave the others waiting for it in the next gradient all-reduce forever. The cost is
        one one-number all-reduce per step, on the CPU so that the GPU keeps running ahead."""
        if world == 1:
            return bool(self.received) or here
        flag = torch.tensor(float(bool(self.received) or here))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0


def leave(world: int) -> None:
    """Leave the process group, and with it stop gloo's threads. The caller must drop its references to the
    DDP wrapper first: the wrapper lives in reference cycles, so only a garbage collection frees it, and it
    holds the group. A group still held at interpreter exit is freed then, when a gloo worker thread still
    releasing its work can no longer take the GIL and the process aborts ("terminate called without an
    active exception"): it is freed here, while Python runs (join() keeps torch's own holders away)."""
    if world > 1:
        gc.collect()
        dist.destroy_process_group()
