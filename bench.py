"""
Speed benchmarks for tinygpt, one subcommand each. Every run prints a markdown table and writes it,
with the raw numbers and how they were measured (device, torch version, command, git commit), to a
JSON file: out/bench/bench_NAME.json, which git ignores, so trying a benchmark changes nothing in the
repository. --update-results writes experiments/results/bench_NAME.json instead, the committed file
the docs are built from, so any number quoted in the docs can be traced to a run.

    python bench.py train                             # training tokens/s (and MFU on known GPUs), 10M presets
    python bench.py generate                          # tokens/s with and without the KV cache, both 10M presets
    python bench.py generate --preset modern --new-tokens 200 --repeats 5 --device cpu --threads 1

Each benchmark is one function bench_NAME(args) -> results dict (with a "table"), and one subparser in
build_parser() that takes the common flags and names the function.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from device import (
    DEVICES,
    DTYPES,
    autocast,
    describe_device,
    pick_device,
    pick_dtype,
    pick_generation_dtype,
    synchronize,
)
from model import GPT, PRESETS, GPTConfig

RESULTS_DIR = Path("experiments/results")  # committed: the docs' tables are built from these files
SCRATCH_DIR = Path("out/bench")  # ignored by git
TEN_MILLION_PRESETS = ("vanilla", "modern")
# Dense bf16 tensor-core peak (FLOP/s) from each vendor's data sheet (fp16 for the T4, which has no bf16),
# for model FLOPs utilisation. Matched by substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_FLOPS = (
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("A10", 125e12),
    ("L40S", 362e12), ("L4", 121e12), ("T4", 65e12), ("V100", 125e12), ("RTX 4090", 165e12),
)


def git_commit() -> str | None:
    """The checked-out commit, with "-dirty" if files differ from it; None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def run_info(device: torch.device, dtype: torch.dtype) -> dict:
    """Where, when and how a benchmark ran, to store beside its numbers."""
    return {
        "device": describe_device(device),
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "git_commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # On a shared machine other work slows every number; the 1-minute load average shows how busy it was.
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table with one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(path: Path, results: dict) -> None:
    """Write results as JSON to path (creating its directory) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def seconds_to_generate(model: GPT, new_tokens: int, use_kv_cache: bool, device: torch.device) -> float:
    """Wall-clock seconds to sample new_tokens after a one-token prompt, batch 1, as generate.py does."""
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    synchronize(device)
    started = time.perf_counter()
    for _ in model.generate_tokens(prompt, new_tokens, temperature=1.0, use_kv_cache=use_kv_cache,
                                   generator=generator):
        pass
    synchronize(device)  # GPU work is queued asynchronously: wait for it before reading the clock
    return time.perf_counter() - started


def bench_generate(args: argparse.Namespace) -> dict:
    """Tokens/s at batch 1 with and without the KV cache, the median of a few runs, per preset."""
    device = pick_device(args.device)
    dtype = pick_generation_dtype(device, args.dtype)  # as generate.py stores the weights
    info = run_info(device, dtype)
    print(f"{info['device']}, weights in {info['dtype']}: {args.new_tokens} new tokens after a 1-token prompt, "
          f"median of {args.repeats} runs with the KV cache and {args.no_cache_repeats} without", flush=True)
    rows, measurements = [], []
    for preset in args.preset:
        torch.manual_seed(0)
        model = GPT(GPTConfig.from_preset(preset)).to(device, dtype).eval()  # random weights: speed ignores them
        tokens_per_second = {True: [], False: []}
        with torch.inference_mode():
            for use_kv_cache in (True, False):  # warm-up: first calls allocate memory and pick kernels
                seconds_to_generate(model, args.warmup_tokens, use_kv_cache, device)
            runs = {True: args.repeats, False: args.no_cache_repeats}
            for i in range(max(runs.values())):
                for use_kv_cache in (True, False):  # interleaved, so a busy spell on the machine slows both alike
                    if i < runs[use_kv_cache]:
                        seconds = seconds_to_generate(model, args.new_tokens, use_kv_cache, device)
                        tokens_per_second[use_kv_cache].append(args.new_tokens / seconds)
        cache, no_cache = (statistics.median(tokens_per_second[flag]) for flag in (True, False))
        measurements.append({
            "preset": preset, "params": model.num_params(),
            "cache_tokens_per_s": round(cache, 1), "no_cache_tokens_per_s": round(no_cache, 1),
            "speedup": round(cache / no_cache, 1),
            "cache_runs": [round(x, 1) for x in tokens_per_second[True]],
            "no_cache_runs": [round(x, 1) for x in tokens_per_second[False]],
        })
        rows.append([preset, f"{model.num_params() / 1e6:.2f}M", info["device"], info["dtype"], f"{cache:.0f}",
                     f"{no_cache:.1f}", f"{cache / no_cache:.1f}x"])
        print(f"{preset}: {cache:.0f} tokens/s with the KV cache, {no_cache:.1f} without", flush=True)
    table = markdown_table(["preset", "params", "device", "dtype", "KV cache tok/s", "no cache tok/s", "speed-up"],
                           rows)
    settings = {"new_tokens": args.new_tokens, "prompt_tokens": 1, "batch_size": 1, "temperature": 1.0,
                "repeats": args.repeats, "no_cache_repeats": args.no_cache_repeats,
                "warmup_tokens": args.warmup_tokens}
    return {"benchmark": "generate", **info, "settings": settings, "results": measurements, "table": table}


def peak_flops(device_name: str) -> float | None:
    """The device's peak bf16 FLOP/s from PEAK_BF16_FLOPS, or None when it is not in the table."""
    return next((peak for name, peak in PEAK_BF16_FLOPS if name in device_name), None)


def flops_per_token(config: GPTConfig, params: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward 2, backward 4) plus attention's score and
    weighted-sum products, 12 * n_layer * n_embd * block_size (the PaLM paper's appendix B estimate)."""
    return 6 * params + 12 * config.n_layer * config.n_embd * config.block_size


def train_step(model, raw_model: GPT, optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device,
               dtype: torch.dtype) -> None:
    """One training step as train.py takes it: forward under autocast, backward, clip, AdamW step."""
    with autocast(device, dtype):
        _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def bench_train(args: argparse.Namespace) -> dict:
    """Training tokens/s (forward, backward, optimizer step) per preset, as train.py runs it on this device."""
    from train import make_optimizer  # the optimizer exactly as training builds it

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    compile_model = device.type == "cuda" if args.compile is None else args.compile
    info = run_info(device, dtype)
    peak = peak_flops(info["device"]) if device.type == "cuda" else None
    print(f"{info['device']}, autocast {info['dtype']}, compile {'on' if compile_model else 'off'}: batch "
          f"{args.batch_size} x {args.block_size} tokens, {args.warmup_steps} untimed + {args.steps} timed steps",
          flush=True)
    rows, measurements = [], []
    for preset in args.preset:
        torch.manual_seed(0)
        overrides = {} if args.dropout is None else {"dropout": args.dropout}
        config = GPTConfig.from_preset(preset, block_size=args.block_size, **overrides)
        raw_model = GPT(config).to(device)
        optimizer = make_optimizer(raw_model, argparse.Namespace(weight_decay=0.1, lr=1e-4, beta2=0.99), device)
        model = torch.compile(raw_model) if compile_model else raw_model
        x = torch.randint(config.vocab_size, (args.batch_size, args.block_size), device=device)
        y = torch.randint(config.vocab_size, (args.batch_size, args.block_size), device=device)

        batch = (model, raw_model, optimizer, x, y, device, dtype)
        synchronize(device)
        started = time.perf_counter()
        train_step(*batch)  # the first step includes torch.compile's work
        synchronize(device)
        first_step = time.perf_counter() - started
        for _ in range(args.warmup_steps - 1):
            train_step(*batch)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.steps):
            train_step(*batch)
        synchronize(device)
        seconds = time.perf_counter() - started
        tokens_per_second = args.steps * args.batch_size * args.block_size / seconds
        params = raw_model.num_params()
        mfu = tokens_per_second * flops_per_token(config, params) / peak if peak else None
        measurements.append({"preset": preset, "params": params, "dropout": config.dropout,
                             "tokens_per_s": round(tokens_per_second, 1),
                             "first_step_s": round(first_step, 2), "mfu": None if mfu is None else round(mfu, 4),
                             "flops_per_token": flops_per_token(config, params)})
        rows.append([preset, f"{params / 1e6:.2f}M", f"{config.dropout:g}", info["device"], info["dtype"],
                     "on" if compile_model else "off", f"{tokens_per_second:,.0f}", f"{first_step:.1f}",
                     "unknown" if mfu is None else f"{mfu:.1%}"])
        print(f"{preset}: {tokens_per_second:,.0f} tokens/s", flush=True)
    table = markdown_table(["preset", "params", "dropout", "device", "autocast", "compile", "train tok/s",
                            "first step s", "MFU"], rows)
    settings = {"batch_size": args.batch_size, "block_size": args.block_size, "steps": args.steps,
                "warmup_steps": args.warmup_steps, "compile": compile_model, "peak_flops": peak}
    return {"benchmark": "train", **info, "settings": settings, "results": measurements, "table": table}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per benchmark; `python bench.py NAME --help` lists its flags."""
    common = argparse.ArgumentParser(add_help=False)  # flags every benchmark takes
    common.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run (default: auto, the best found)")
    common.add_argument("--dtype", choices=list(DTYPES), default="auto",
                        help="precision of the matrix products (default: auto, chosen per device in device.py)")
    common.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads for PyTorch (default: PyTorch's choice, usually one per core)")
    where = common.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, metavar="PATH",
                       help=f"results file to write (default: {SCRATCH_DIR}/bench_NAME.json, ignored by git)")
    where.add_argument("--update-results", action="store_true",
                       help=f"write {RESULTS_DIR}/bench_NAME.json, the committed results the docs are built from "
                            "(then run python -m experiments.report)")
    parser = argparse.ArgumentParser(description="Measure tinygpt's speed; print a markdown table and save JSON.")
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    train = subparsers.add_parser(
        "train", parents=[common], help="training tokens/s, and model FLOPs utilisation on known GPUs",
        description="Training tokens/s (forward, backward, AdamW step) for the 10M presets with random data, "
                    "with the device's training precision. MFU uses PEAK_BF16_FLOPS; 'unknown' for other devices.")
    train.add_argument("--preset", nargs="+", choices=list(PRESETS), default=list(TEN_MILLION_PRESETS),
                       help="model preset(s) to measure (default: vanilla modern)")
    train.add_argument("--batch-size", type=positive_int, default=16, help="sequences per step (default: 16)")
    train.add_argument("--block-size", type=positive_int, default=256, help="tokens per sequence (default: 256)")
    train.add_argument("--steps", type=positive_int, default=10, help="timed steps (default: 10)")
    train.add_argument("--warmup-steps", type=positive_int, default=3,
                       help="untimed steps first, compilation included (default: 3)")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the model (default: on for CUDA, off elsewhere, as train.py)")
    train.add_argument("--dropout", type=float, default=None,
                       help="dropout for every preset (default: the preset's own, as train.py --preset uses; "
                            "on the CPU, attention dropout rules out the fused attention kernel)")
    train.set_defaults(run=bench_train)

    generate = subparsers.add_parser(
        "generate", parents=[common], help="tokens/s of generation with and without the KV cache",
        description="Tokens/s at batch 1 after a 1-token prompt, with and without the KV cache, for the 10M presets "
                    "with random weights (speed does not depend on the weights).")
    generate.add_argument("--preset", nargs="+", choices=list(PRESETS), default=list(TEN_MILLION_PRESETS),
                          help="model preset(s) to measure (default: vanilla modern)")
    generate.add_argument("--new-tokens", type=positive_int, default=500, metavar="N",
                          help="tokens generated per run (default: 500, past the 256-token context)")
    generate.add_argument("--repeats", type=positive_int, default=5, metavar="N",
                          help="timed runs with the KV cache; the median is reported (default: 5)")
    generate.add_argument("--no-cache-repeats", type=positive_int, default=1, metavar="N",
                          help="timed runs without the cache (default: 1: on a CPU one run takes tens of seconds, "
                               "and its hundreds of steps already average out short disturbances)")
    generate.add_argument("--warmup-tokens", type=positive_int, default=20, metavar="N",
                          help="tokens generated once, untimed, before measuring (default: 20)")
    generate.set_defaults(run=bench_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmark, print its table and write its results file."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        results = args.run(args)
    except ValueError as error:  # e.g. --device cuda without a GPU
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    print(results["table"])
    write_results(args.out or (RESULTS_DIR if args.update_results else SCRATCH_DIR) / f"bench_{args.benchmark}.json",
                  results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
