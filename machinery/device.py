"""
Where tinygpt runs and in what precision: the one device helper every script uses.

Device: CUDA if present, else Apple's MPS, else the CPU; an explicit choice wins.
Precision (what autocast computes matrix products in), chosen per device by measurement:
    cuda  bfloat16 where the GPU supports it (Ampere and newer), else float16 with a gradient scaler
    mps   float32 (bf16 autocast on MPS is not measured safe and fast here, so the safe choice stays)
    cpu   bfloat16 where the processor has native bf16 matrix units (Intel AMX, AVX-512 BF16), which
          run bf16 matrix products several times faster than float32; otherwise float32, because
          without them bf16 is emulated and much slower
Weights and optimizer state always stay in float32; only the forward/backward math is lowered.

Generation stores the weights themselves in one precision (pick_decode_dtype): decoding one token
multiplies every weight matrix by a single vector, so bf16 halves the bytes read per token. That made
generation faster on one CPU with native bf16 units (an AMD EPYC) and slower on another (an Intel Xeon,
whose bf16 matrix-vector products run below float32's: bench_generate_cpu_bf16 against
bench_generate_cpu_bf16_float32 in docs/generation.md). So on such a CPU "auto" measures which of the two
reads the model's weights faster, once, and remembers it beside the compiled decode steps.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from machinery.compiling import compile_cache_dir
from machinery.files import write_atomically

DEVICES = ("auto", "cuda", "mps", "cpu")
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# pick_decode_dtype takes float32 over bf16 only when it reads the weights at least this much faster, so a
# CPU where the two are about equal keeps bf16 (half the memory) rather than flipping with the noise.
FLOAT32_MARGIN = 1.10
# The measurements pick_decode_dtype remembers, in the folder of the compiled decode steps.
DECODE_DTYPES_LIST = "tinygpt-decode-dtypes.json"


def cpu_has_fast_bf16() -> bool:
    """True when the CPU multiplies bf16 matrices natively (AMX tiles or AVX-512 BF16)."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_device(requested: str = "auto") -> torch.device:
    """The device to run on: the requested one (checked to exist), or the best one available."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device auto")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps was asked for, but MPS is not available here; use --device auto")
    return torch.device(requested)


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """The precision for this device (see the module docstring), or the requested one: what autocast
    computes in during training."""
    if requested not in DTYPES:
        raise ValueError(f"unknown dtype {requested!r}; choose one of {', '.join(DTYPES)}")
    if requested != "auto":
        if device.type == "cpu" and DTYPES[requested] == torch.float16:
            raise ValueError("float16 autocast is for GPUs; on the CPU use bfloat16 or float32")
        return DTYPES[requested]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def median_seconds(run: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """The median wall-clock seconds of `repeats` calls of run, after `warmup` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        synchronize(device)  # GPU work is queued asynchronously: wait for it before reading the clock
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """What this machine's matrix products reach in dtype: FLOP/s of one size x size by size x size product
    (2 * size^3 FLOPs), the median of `repeats` after a warm-up. Training is mostly such products, so
    this rate over the FLOPs per token is the ceiling on training tokens/s."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return 2 * size ** 3 / median_seconds(lambda: a @ b, device, repeats)


def seconds_to_read_weights(matrices: list[torch.Tensor], repeats: int = 20) -> float:
    """The floor under one decode step at batch 1: seconds to multiply each of matrices (a model's weight
    matrices, in the dtype and on the device to measure) by one vector, and nothing else, so that every
    weight is read from memory once. The median of `repeats`, after 5 untimed reads."""
    vectors = {width: torch.randn(1, width, dtype=matrices[0].dtype, device=matrices[0].device)
               for width in {matrix.size(1) for matrix in matrices}}
    return median_seconds(lambda: [torch.nn.functional.linear(vectors[m.size(1)], m) for m in matrices],
                          matrices[0].device, repeats, warmup=5)


def weight_matrices(model: torch.nn.Module) -> list[torch.Tensor]:
    """The weight matrices a token passes through: every nn.Linear's (each block's layers and the head)."""
    return [module.weight for module in model.modules() if isinstance(module, torch.nn.Linear)]


def decode_key(matrices: list[torch.Tensor]) -> str:
    """What a decode-precision measurement holds for: this processor, its threads, torch's version and the
    shapes of the weight matrices (not their values)."""
    what = [cpu_name(), torch.get_num_threads(), torch.__version__, [list(matrix.shape) for matrix in matrices]]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def measure_decode_dtypes(matrices: list[torch.Tensor], rounds: int = 3) -> dict[str, float]:
    """Seconds to read copies of matrices once in bfloat16 and once in float32 (seconds_to_read_weights),
    alternating the two for `rounds` rounds; the median round of each, {"bfloat16": s, "float32": s}."""
    copies = {name: [matrix.detach().to(DTYPES[name]) for matrix in matrices] for name in ("bfloat16", "float32")}
    seconds = {name: [] for name in copies}
    for _ in range(rounds):
        for name, weights in copies.items():
            seconds[name].append(seconds_to_read_weights(weights))
    return {name: statistics.median(times) for name, times in seconds.items()}


def remembered_decode_dtypes() -> dict[str, dict]:
    """The measurements pick_decode_dtype made on this machine: decode_key -> {"bfloat16": s, "float32": s}
    ({} where there are none, or the list cannot be read)."""
    try:
        listed = json.loads((compile_cache_dir() / DECODE_DTYPES_LIST).read_text())
    except (OSError, ValueError):
        return {}
    return listed if isinstance(listed, dict) else {}


def pick_decode_dtype(model: torch.nn.Module, device: torch.device, requested: str = "auto") -> torch.dtype:
    """The precision generation stores model's weights in: the requested one; for "auto", pick_dtype's,
    except on a CPU with native bf16 units, where it is float32 if float32 read these weights
    FLOAT32_MARGIN times faster than bf16 (measure_decode_dtypes, a fraction of a second), else bf16. The
    measurement is made once per processor, torch version and model shape, and remembered in
    compile_cache_dir(); where it cannot be written, a line says so and the next run measures again."""
    dtype = pick_dtype(device, requested)
    if requested != "auto" or device.type != "cpu" or dtype != torch.bfloat16:
        return dtype
    matrices = weight_matrices(model)
    key = decode_key(matrices)
    listed = remembered_decode_dtypes()
    entry = listed.get(key)
    if not (isinstance(entry, dict) and all(isinstance(entry.get(name), float) for name in ("bfloat16", "float32"))):
        listed[key] = {name: round(seconds, 7) for name, seconds in measure_decode_dtypes(matrices).items()}
        try:
            write_atomically(compile_cache_dir() / DECODE_DTYPES_LIST, json.dumps(listed, indent=1).encode())
        except OSError as error:
            print(f"cannot remember which precision decodes faster in {compile_cache_dir()} ({error.strerror}): "
                  "the next run will measure it again", file=sys.stderr)
    seconds = listed[key]
    return torch.float32 if seconds["float32"] * FLOAT32_MARGIN <= seconds["bfloat16"] else torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """A context in which matrix products run in `dtype` (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """The gradient scaler training needs in float16, whose narrow range would flush small gradients to
    zero unless the loss is scaled up first; a no-op in every other precision."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def describe_device(device: torch.device) -> str:
    """A human-readable name for the device, for banners and results files."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    bf16 = "native bf16" if cpu_has_fast_bf16() else "no native bf16"
    threads = torch.get_num_threads()
    return f"CPU ({cpu_name()}, {threads} thread{'s' if threads != 1 else ''}, {bf16})"


def cpu_name() -> str:
    """The processor's model name where the OS tells it (Linux), else its architecture."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_bytes(device: torch.device) -> int | None:
    """How much memory the device has in all (a GPU's own; the machine's for the CPU), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    if device.type == "cpu" and hasattr(os, "sysconf"):
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return None  # MPS shares the machine's memory in ways torch does not report


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures work done rather than work queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def training_memory_bytes(config, batch_size: int, dtype: torch.dtype, params: int) -> int:
    """A rough lower estimate of the memory one training step of a model.GPTConfig with params parameters
    needs: the weights with their gradients and AdamW's two moments (16 bytes a parameter), the activations
    backward keeps (about 17 values per token and width in each layer, after Korthikanti et al. 2022, plus
    the T x T attention weights when they are written out), and the float32 logits with their softmax and
    gradient."""
    value_bytes = 2 if dtype in (torch.bfloat16, torch.float16) else 4
    tokens = batch_size * config.block_size
    per_layer = tokens * config.n_embd * 17 * value_bytes
    if config.attention == "manual":
        per_layer += batch_size * config.n_head * config.block_size ** 2 * 3 * value_bytes
    return 16 * params + config.n_layer * per_layer + tokens * config.vocab_size * 4 * 3


def check_fits_in_memory(config, batch_size: int, device: torch.device, dtype: torch.dtype, params: int) -> None:
    """Refuse, before any work, a model whose weights alone cannot fit in the device's memory, or a --block-size
    and batch whose training step cannot (config: a model.GPTConfig with params parameters), with ValueError."""
    available = memory_bytes(device)
    needed = training_memory_bytes(config, batch_size, dtype, params)
    if available is not None and 16 * params > available:  # the weights alone: no smaller context or batch helps
        raise ValueError(f"the model itself is too large for this {device.type}: its {params:,} parameters need "
                         f"{16 * params / 2**30:,.1f} GiB with their gradients and AdamW's moments, more than its "
                         f"{available / 2**30:,.1f} GiB; make it smaller with --n-embd, --n-layer or --preset")
    if available is not None and needed > available:
        raise ValueError(f"--block-size {config.block_size} with --batch-size {batch_size} needs at least "
                         f"{needed / 2**30:,.1f} GiB to train, more than the {available / 2**30:,.1f} GiB of this "
                         f"{device.type}; lower --block-size or --batch-size (use --grad-accum for a larger batch)")
