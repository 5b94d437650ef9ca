"""
Compiling generate.py's one-token decode step: torch.compile turns it into one graph, and within one
generation its guards are checked once. docs/generation.md measures what it saves and when it pays off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator

import torch


@functools.cache
def compiled_graph(step: Callable) -> Callable:
    """step compiled by torch.compile as one graph (generate.decode_step: every shape is fixed, the cache's
    position is a tensor), so the Python and the launch of ~100 small operations per token go away. Made
    once per step function and compiled on its first call, and again whenever what it was compiled for
    changes (the model's shapes, the batch size, the precision)."""
    return torch.compile(step, fullgraph=True)


def checked_once(step: Callable) -> Callable:
    """The compiled step, for one generation: its first call runs torch.compile's checks (guards) that the
    compiled graph fits what it is given, compiling again if not; later calls skip them. Within one
    generation the model, the batch, every shape and the precision stay as they were, so the checks would
    pass every time, and at batch 1 on a CPU they are a noticeable part of each token's time."""
    checked = False

    def call(*args) -> torch.Tensor:
        nonlocal checked
        if checked:
            with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
                return step(*args)
        checked = True
        return step(*args)

    return call


def compiled(step: Callable) -> Callable:
    """step compiled (compiled_graph) for one generation: its guards checked on the first call only."""
    return checked_once(compiled_graph(step))


class NoCudaRuntimeNotice(logging.Filter):
    """Drops the one line torch logs when the C++ compiler is first set up on a machine with a CUDA toolkit
    but no CUDA GPU ("No CUDA runtime is found, using CUDA_HOME=..."): compiling for the CPU needs no CUDA,
    so the line only alarms. Every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


@contextlib.contextmanager
def without_cuda_runtime_notice() -> Iterator[None]:
    """A block in which torch.utils.cpp_extension's "No CUDA runtime" line (NoCudaRuntimeNotice) is dropped."""
    logger, notice = logging.getLogger("torch.utils.cpp_extension"), NoCudaRuntimeNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)
