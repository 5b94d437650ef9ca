"""
Compiling generate.py's one-token decode step ahead of time: torch.export traces it as one graph of
tensors in, tensors out, and AOTInductor builds that graph into a package of compiled C++ (a .pt2 file),
kept on disk (compile_cache_dir) under a name for what it was built for (step_key). A later run of the
same model loads the package in milliseconds instead of compiling again, and each token calls it with no
Python in between. The weights are inputs, not part of the package, so one package serves every
checkpoint of the same shape. docs/generation.md measures what it saves and when it pays off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from machinery.files import atomic_file

if TYPE_CHECKING:
    from model import KVCache

# The files whose code a compiled decode step is made from: an edit to any of them compiles it anew.
COMPILED_SOURCES = ("model.py", "generate.py", "machinery/compiling.py")
# Where, inside the compile cache, the packages live: one STEP_KEY.pt2 per decode step built.
PACKAGES = "decode-steps"
# Packages kept: the most recently used (2.6 MB each for the modern preset). A new one is made for every model
# shape, precision, batch size, thread count, torch version and edit of the code that is compiled.
KEPT_PACKAGES = 20


class StepOnModel(torch.nn.Module):
    """step(model, token, cache) as a module holding the model, so torch.func.functional_call can run it
    with other weights in place of the model's."""

    def __init__(self, step: Callable, model: torch.nn.Module):
        super().__init__()
        self.step, self.model = step, model

    def forward(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self.step(self.model, token, cache)


class StepOfTensors(torch.nn.Module):
    """A decode step as a function of tensors only, which torch.export can trace: (token (B, 1), the cache's
    position, its keys and values per layer, the weights) -> logits (B, vocab). It runs `step` (generate's
    decode_step) on the model with the weights given, so the traced graph takes them as inputs."""

    def __init__(self, step: Callable, model: torch.nn.Module):
        super().__init__()
        self.on_model = StepOnModel(step, model)
        self.names = [f"model.{name}" for name, _ in model.named_parameters()]  # a tied matrix once

    def forward(self, token: torch.Tensor, pos: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor],
                weights: list[torch.Tensor]) -> torch.Tensor:
        from model import KVCache  # model.py is what is compiled, not a dependency of this module

        cache = KVCache(len(keys), keys[0].size(2), pos.device)
        cache.pos, cache.k, cache.v = pos, list(keys), list(values)
        return torch.func.functional_call(self.on_model, dict(zip(self.names, weights, strict=True)), (token, cache))


def build_package(step: Callable, model: torch.nn.Module, batch_size: int, path: Path) -> None:
    """Trace step(model, token, cache) (torch.export) for a batch of batch_size one-token rows over the model's
    KV cache, and build it with AOTInductor into the package at path, written atomically. step must not
    read the cache's position back into Python. Takes half a minute on a CPU; raises what torch raises
    where it cannot build (no C++ compiler, say)."""
    from torch._inductor import aoti_compile_and_package  # imported here: a run that only loads skips its 4 s

    device = next(model.parameters()).device
    token = torch.zeros((batch_size, 1), dtype=torch.long, device=device)
    weights = [parameter for _, parameter in model.named_parameters()]
    with torch.inference_mode(False), torch.no_grad():  # traced on ordinary tensors, whatever the caller's mode
        cache = model.new_kv_cache()
        model(token, kv_cache=cache)  # one token in: the cache allocates its storage, as generation's prompt does
        exported = torch.export.export(StepOfTensors(step, model), (token, cache.pos, cache.k, cache.v, weights))
    with atomic_file(path) as file:
        aoti_compile_and_package(exported, package_path=file)


def load_package(path: Path) -> Callable[[list[torch.Tensor]], torch.Tensor]:
    """The compiled step in the package at path, as a function of its flat inputs (StepOfTensors' order:
    token, position, keys, values, weights) -> logits. Loading takes milliseconds."""
    try:  # torch's loader itself: aoti_load_package would first import the compiler (4 s)
        runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1, False)
    except TypeError:  # another torch version, whose loader takes other arguments
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(str(path)).loader

    # boxed_run: the flat list of inputs (AOTICompiledModel's call re-parses its pytree specs every call)
    return lambda inputs: runner.boxed_run(inputs)[0]


def with_weights(run: Callable[[list[torch.Tensor]], torch.Tensor], model: torch.nn.Module) -> Callable:
    """A loaded package (run) as a decode step (model, token, cache) -> logits for this model, whose weights
    are listed once here rather than at every token (walking the model's parameters costs ~70 µs, several
    percent of a compiled token). The model it is called with must be this one."""
    weights = [parameter for _, parameter in model.named_parameters()]
    return lambda model, token, cache: run([token, cache.pos, *cache.k, *cache.v, *weights])


def can_write_in(folder: Path) -> bool:
    """Whether a file can be made in folder (made first, if need be): asked before half a minute of compiling."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


_loaded: dict[str, Callable] = {}  # step_key -> the package loaded in this process


def compiled_step(step: Callable, model: torch.nn.Module, batch_size: int = 1) -> Callable:
    """step (generate's decode_step) compiled for this model and batch size, as a step for this model
    (with_weights): loaded from the package an earlier run built (compiled_before), else built now
    (build_package) and kept for later runs. A package that cannot be loaded (damaged, say) is built again;
    where the cache folder cannot be written, the package is built in a temporary folder and a line says the
    next run will build it again."""
    key = step_key(model, batch_size)
    path = package_path(key)
    if key not in _loaded and path.exists():
        try:
            _loaded[key] = load_package(path)
            with contextlib.suppress(OSError):  # a read-only cache loses only the order of use
                os.utime(path)  # its time is when it was last used: prune_packages keeps the recent ones
        except RuntimeError as error:
            print(f"the compiled decode step in {path} cannot be loaded ({str(error).strip()}): compiling it again",
                  file=sys.stderr)
            path.unlink(missing_ok=True)
    if key not in _loaded and not can_write_in(path.parent):
        print(f"cannot keep the compiled decode step in {path.parent}: the next run will compile it again",
              file=sys.stderr)
        with tempfile.TemporaryDirectory() as folder:
            build_package(step, model, batch_size, Path(folder) / path.name)
            _loaded[key] = load_package(Path(folder) / path.name)  # the loader has read the file by now
    if key not in _loaded:
        build_package(step, model, batch_size, path)
        _loaded[key] = load_package(path)
        prune_packages(path.parent)
    return with_weights(_loaded[key], model)


def prune_packages(folder: Path, keep: int = KEPT_PACKAGES) -> None:
    """Delete all but the keep most recently used packages in folder (each one's time is its last use)."""
    packages = sorted(folder.glob("*.pt2"), key=lambda package: package.stat().st_mtime, reverse=True)
    for package in packages[keep:]:
        package.unlink(missing_ok=True)


def forget_loaded_steps() -> None:
    """Drop every package loaded in this process, so the next compiled_step loads or builds again (as a new
    process would)."""
    _loaded.clear()


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
    """Where generate.py keeps its compiled decode steps (and torch its compile cache), from one run to the
    next: torch's own $TORCHINDUCTOR_CACHE_DIR where it is set, else tinygpt/compiled under $XDG_CACHE_HOME
    (~/.cache), which outlives torch's default under /tmp (emptied at reboot on many systems)."""
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
    """A block in which torch's compiler keeps its own cache in compile_cache_dir(), beside the packages,
    rather than under /tmp."""
    return inductor_cache_at(compile_cache_dir())


def step_key(model: torch.nn.Module, batch_size: int = 1) -> str:
    """A name for one compiled decode step: a hash of what it is compiled for (torch and Python's versions,
    the device, and on a CPU the processor and its threads, which the generated code is made for; the
    weights' dtype, the model's config, the batch size) and of the code it is made from (COMPILED_SOURCES).
    Two runs with the same key compile the same graph; the weights' values are not part of it."""
    from machinery.device import cpu_name  # device.py imports this module

    weight = next(model.parameters())
    root = Path(__file__).resolve().parents[1]
    sources = [hashlib.sha256((root / name).read_bytes()).hexdigest() for name in COMPILED_SOURCES]
    machine = [cpu_name(), torch.get_num_threads()] if weight.device.type == "cpu" else []
    what = [torch.__version__, platform.python_version(), weight.device.type, machine, str(weight.dtype),
            dataclasses.asdict(model.config), batch_size, sources]
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def package_path(key: str) -> Path:
    """Where the package of the decode step named key is kept: compile_cache_dir()/decode-steps/KEY.pt2."""
    return compile_cache_dir() / PACKAGES / f"{key}.pt2"


def compiled_before(key: str) -> bool:
    """Whether an earlier run built the decode step named key into compile_cache_dir(), so that this run
    loads it instead of compiling."""
    return package_path(key).exists()
