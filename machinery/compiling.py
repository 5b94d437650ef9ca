"""
Compiling generate.py's one-token decode step: torch.compile turns it into one graph, and within one
generation its guards are checked once. What it compiles is kept on disk between runs (compile_cache_dir),
so a later run of the same model compiles in a fraction of the time, and generate.py knows when that is so
(compiled_before). docs/generation.md measures what it saves and when it pays off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from machinery.files import write_atomically

# The list, inside the compile cache, of the decode steps compiled into it (compiled_before).
COMPILED_LIST = "tinygpt-compiled.json"
# The files whose code a compiled decode step is made from: an edit to either compiles it anew.
COMPILED_SOURCES = ("model.py", "generate.py")


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


def compile_cache_dir() -> Path:
    """Where torch.compile keeps what it compiles for generate.py, from one run to the next: torch's own
    $TORCHINDUCTOR_CACHE_DIR where it is set, else tinygpt/compiled under $XDG_CACHE_HOME (~/.cache), which
    outlives torch's default under /tmp (emptied at reboot on many systems)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinygpt" / "compiled"


@contextlib.contextmanager
def inductor_cache_at(directory: str | Path) -> Iterator[None]:
    """A block in which torch.compile reads and writes its on-disk cache in directory
    ($TORCHINDUCTOR_CACHE_DIR); the environment is as it was afterwards."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


def caching_compiled_code() -> contextlib.AbstractContextManager[None]:
    """A block in which torch.compile keeps what it compiles in compile_cache_dir(), for later runs."""
    return inductor_cache_at(compile_cache_dir())


def step_key(model: torch.nn.Module, batch_size: int = 1) -> str:
    """A name for one compiled decode step: a hash of what it is compiled for (torch and Python's versions,
    the device, the weights' dtype, the model's config, the batch size) and of the code it is made from
    (COMPILED_SOURCES). Two runs with the same key compile the same graph."""
    weight = next(model.parameters())
    root = Path(__file__).resolve().parents[1]
    sources = [hashlib.sha256((root / name).read_bytes()).hexdigest() for name in COMPILED_SOURCES]
    what = [torch.__version__, platform.python_version(), weight.device.type, str(weight.dtype),
            dataclasses.asdict(model.config), batch_size, sources]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def compiled_list(directory: Path) -> dict[str, float]:
    """The decode steps compiled into the cache at directory: key -> seconds their first compile took
    ({} for a cache with none, or with a list that cannot be read)."""
    try:
        listed = json.loads((directory / COMPILED_LIST).read_text())
    except (OSError, ValueError):
        return {}
    return listed if isinstance(listed, dict) else {}


def compiled_before(key: str) -> bool:
    """Whether the decode step named key was compiled into compile_cache_dir() by an earlier run, so that
    compiling it again reads torch's cache instead of generating and building its code."""
    return key in compiled_list(compile_cache_dir())


def remember_compiled(key: str, seconds: float) -> None:
    """Add key to the list of decode steps compiled into compile_cache_dir() (a first compile's seconds are
    kept). Raises OSError where the list cannot be written."""
    directory = compile_cache_dir()
    listed = compiled_list(directory)
    listed.setdefault(key, round(seconds, 2))
    write_atomically(directory / COMPILED_LIST, json.dumps(listed, indent=1).encode())
