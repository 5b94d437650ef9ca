"""
Speed benchmarks for tinygpt, one subcommand each. Every run prints a markdown table and writes it,
with the raw numbers and how they were measured (results.provenance: device, torch version, command,
git commit), to a JSON file: out/bench/bench_NAME.json, which git ignores, so trying a benchmark changes
nothing in the repository. --update-results writes experiments/results/bench_NAME.json instead, the
committed file the docs are built from, so any number quoted in the docs can be traced to a run. They
measure the project's own code: train.py's train_step with a recipe's settings, and generate.py's
generate_tokens; `peer` sets it beside nanoGPT's model, read from a checkout the user gives.

    uv run bench.py train      # training tokens/s of the 10M presets, against the machine's matmul ceiling (and MFU)
    uv run bench.py generate   # tokens/s without the KV cache, with it and compiled, against the weight-read limit
    uv run bench.py generate --preset modern --new-tokens 200 --repeats 5 --device cpu --threads 1
    uv run bench.py profile --optimizer adamw         # where a vanilla training step's time goes
    uv run bench.py peer --nanogpt ../nanoGPT --optimizer adamw   # against nanoGPT's model, from a checkout of it

Each benchmark is one function bench_NAME(args) -> results dict (with a "table"), and one subparser in
build_parser() that takes the common flags and names the function.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import train
from generate import generate_tokens, warm_up_compiled_step
from machinery.compiling import forget_loaded_steps, inductor_cache_at
from machinery.device import (
    DEVICES,
    DTYPES,
    grad_scaler,
    matmul_flops_per_s,
    pick_device,
    pick_dtype,
    seconds_to_read_weights,
    synchronize,
    weight_matrices,
)
from machinery.guards import silence_closed_stdout
from machinery.optim import OPTIMIZERS
from machinery.results import RESULTS_DIR, ROOT, markdown_table, optional, provenance, write_results
from machinery.settings import RECIPES, Settings, given_flags, parse_args, resolve
from model import ATTENTIONS, GPT, PRESETS, GPTConfig

SCRATCH_DIR = ROOT / "out" / "bench"  # ignored by git; RESULTS_DIR holds the committed results
TEN_MILLION_PRESETS = ("vanilla", "modern")
# Dense bf16 tensor-core peak (FLOP/s) from each vendor's data sheet (fp16 for the T4, which has no bf16),
# for model FLOPs utilisation. Matched by substring of torch.cuda.get_device_name(); first match wins.
PEAK_BF16_FLOPS = (
    ("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12), ("A10", 125e12),
    ("L40S", 362e12), ("L4", 121e12), ("T4", 65e12), ("V100", 125e12), ("RTX 4090", 165e12),
)


def run_info(device: torch.device, dtype: torch.dtype, command: list[str]) -> dict:
    """Where, when and how a benchmark ran (results.provenance), and the precision it ran in."""
    return {**provenance(device, command), "dtype": str(dtype).removeprefix("torch.")}


def seconds_to_generate(model: GPT, new_tokens: int, use_kv_cache: bool, device: torch.device,
                        compile_step: bool = False) -> float:
    """Wall-clock seconds to sample new_tokens after a one-token prompt, batch 1, as generate.py does."""
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    synchronize(device)
    started = time.perf_counter()
    for _ in generate_tokens(model, prompt, new_tokens, temperature=1.0, use_kv_cache=use_kv_cache,
                             generator=generator, compile_step=compile_step):
        pass
    synchronize(device)  # GPU work is queued asynchronously: wait for it before reading the clock
    return time.perf_counter() - started


def compile_seconds(model: GPT, cache_dir: str) -> float:
    """Seconds to compile the decode step with nothing compiled in this process (forget_loaded_steps) and
    the compile cache at cache_dir: empty, it is a first run on a machine; holding what an earlier compile
    built, it is a later run (see compile_seconds_in_new_process)."""
    forget_loaded_steps()
    with inductor_cache_at(cache_dir):
        return warm_up_compiled_step(model)


def compile_seconds_in_new_process(preset: str, dtype: torch.dtype, device: torch.device, attention: str | None,
                                   cache_dir: str) -> float:
    """Seconds a run of generate.py spends compiling the decode step: a new Python process (so nothing of
    the compiler is loaded or compiled yet), the compile cache at cache_dir, and the threads of this
    one. With an empty cache_dir it is a first run on a machine; with the cache a first run left, a later
    one (as generate.py keeps it in ~/.cache/tinygpt/compiled). torch's import is not counted: a run pays
    it whether it compiles or not."""
    model = f"bench.random_model({preset!r}, torch.{dtype_name(dtype)}, {str(device)!r}, {attention!r})"
    code = (f"import torch, bench; torch.set_num_threads({torch.get_num_threads()}); "
            f"print(bench.compile_seconds({model}, {cache_dir!r}))")
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"compiling in a new process failed: {child.stderr.strip().splitlines()[-1:]}")
    return float(child.stdout.strip().splitlines()[-1])


def dtype_name(dtype: torch.dtype) -> str:
    """float32 for torch.float32."""
    return str(dtype).removeprefix("torch.")


def random_model(preset: str, dtype: torch.dtype, device: str | torch.device, attention: str | None = None) -> GPT:
    """The preset with seed-0 random weights (speed ignores them), in dtype on device, in eval mode, with
    the attention path given (default: the preset's own)."""
    torch.manual_seed(0)
    overrides = {} if attention is None else {"attention": attention}
    with torch.device(device):
        return GPT(GPTConfig.from_preset(preset, **overrides)).to(dtype).eval()


# The ways bench.py generate decodes: (name, KV cache, compiled decode step).
DECODING_PATHS = (("no cache", False, False), ("KV cache", True, False), ("KV cache, compiled", True, True))


def bench_generate(args: argparse.Namespace) -> dict:
    """Tokens/s at batch 1 per preset, the median of a few runs: without the KV cache, with it, and with the
    decode step compiled (its compile time measured apart, as a first run pays it and as a later run does
    with the cache the first one left, and the number of tokens after which compiling pays off in each case),
    each beside the limit its weight reads set (measured before each way of decoding; the median of those),
    in the precision generate.py stores weights in. The worst run's fraction of the limit is kept beside
    the median's. Both compile times are a new process's (compile_seconds_in_new_process)."""
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    info = run_info(device, dtype, args.command)
    paths = [path for path in DECODING_PATHS if args.compile or not path[2]]
    say(f"{info['device']}: {args.new_tokens} new tokens after a 1-token prompt, median of {args.repeats} runs "
        f"with the KV cache and {args.no_cache_repeats} without")
    rows, measurements = [], []
    for preset in args.preset:
        model = random_model(preset, dtype, device, args.attention)
        preset_results, weight_reads = [], []
        for name, use_kv_cache, compiled in paths:
            compile_s = compile_warm_s = None
            with torch.inference_mode():
                # the limit, measured near in time to the runs
                weight_reads.append(seconds_to_read_weights(weight_matrices(model), repeats=50))
                if compiled:
                    with tempfile.TemporaryDirectory() as cache_dir:
                        compile_s, compile_warm_s = (
                            compile_seconds_in_new_process(preset, dtype, device, args.attention, cache_dir)
                            for _ in range(2))  # the first into an empty cache, the second from what it left
                        compile_seconds(model, cache_dir)  # then here, for the runs below
                seconds_to_generate(model, args.warmup_tokens, use_kv_cache, device, compiled)  # first calls allocate
                runs = [args.new_tokens / seconds_to_generate(model, args.new_tokens, use_kv_cache, device, compiled)
                        for _ in range(args.repeats if use_kv_cache else args.no_cache_repeats)]
            preset_results.append({"preset": preset, "params": model.num_params(), "path": name,
                                   "dtype": info["dtype"], "tokens_per_s": round(statistics.median(runs), 1),
                                   "runs": [round(x, 1) for x in runs],
                                   "compile_s": None if compile_s is None else round(compile_s, 2),
                                   "compile_cached_s": None if compile_warm_s is None else round(compile_warm_s, 2)})
        weight_read_s = statistics.median(weight_reads)
        for result in preset_results:
            rate = result["tokens_per_s"]
            result.update({"weight_read_ms": round(weight_read_s * 1e3, 3),
                           "weight_read_ms_each": [round(x * 1e3, 3) for x in weight_reads],
                           "weight_read_limit_tokens_per_s": round(1 / weight_read_s, 1),
                           "fraction_of_limit": round(rate * weight_read_s, 3),
                           "fraction_of_limit_worst_run": round(min(result["runs"]) * weight_read_s, 3)})
            if result["compile_s"] is not None:  # compiling pays off once the time it saves adds up to its cost
                eager = next(r for r in preset_results if r["path"] == "KV cache")
                saved_per_token = 1 / eager["tokens_per_s"] - 1 / rate
                for key, seconds in (("break_even_tokens", result["compile_s"]),
                                     ("break_even_tokens_cached", result["compile_cached_s"])):
                    result[key] = round(seconds / saved_per_token) if saved_per_token > 0 else None
            measurements.append(result)
            rows.append([preset, result["path"], result["dtype"], f"{rate:,.0f}", f"{1 / weight_read_s:,.0f}",
                         f"{result['fraction_of_limit']:.0%}", f"{result['fraction_of_limit_worst_run']:.0%}",
                         optional(result["compile_s"], ".1f"), optional(result["compile_cached_s"], ".1f"),
                         optional(result.get("break_even_tokens"), ","),
                         optional(result.get("break_even_tokens_cached"), ",")])
            say(f"{preset}, {result['path']}, {result['dtype']}: {rate:,.0f} tokens/s, "
                f"{result['fraction_of_limit']:.0%} of the {1 / weight_read_s:,.0f} tokens/s its weight reads allow")
    table = "\n".join(markdown_table(["preset", "decoding", "weights", "tok/s", "weight-read limit tok/s",
                                      "of the limit", "worst run", "compile s, first run", "compile s, cached",
                                      "pays off after (tokens), first run", "pays off after, cached"], rows))
    settings = {"new_tokens": args.new_tokens, "prompt_tokens": 1, "batch_size": 1, "temperature": 1.0,
                "repeats": args.repeats, "no_cache_repeats": args.no_cache_repeats,
                "warmup_tokens": args.warmup_tokens, "compile": args.compile, "attention": args.attention}
    return {"benchmark": "generate", **info, "settings": settings, "results": measurements, "table": table}


def peak_flops(device_name: str) -> float | None:
    """The device's peak bf16 FLOP/s from PEAK_BF16_FLOPS, or None when it is not in the table."""
    return next((peak for name, peak in PEAK_BF16_FLOPS if name in device_name), None)


def flops_per_token(config: GPTConfig, params: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward 2, backward 4) plus attention's score and
    weighted-sum products, 12 * n_layer * n_embd * block_size (the PaLM paper's appendix B estimate)."""
    return 6 * params + 12 * config.n_layer * config.n_embd * config.block_size


def time_steps(step: Callable[[], object], warmup_steps: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(seconds of the first step, which includes torch.compile's work; seconds of `steps` timed steps, taken
    after warmup_steps untimed ones, the first included)."""
    first_step = seconds_of_steps(step, 1, device)
    for _ in range(warmup_steps - 1):
        step()
    return first_step, seconds_of_steps(step, steps, device)


def seconds_of_steps(step: Callable[[], object], steps: int, device: torch.device) -> float:
    """Seconds of `steps` calls of step, the device's queued work included."""
    synchronize(device)  # GPU work is queued asynchronously: wait for it before reading the clock
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return time.perf_counter() - started


def train_settings(device: torch.device, recipe: str | None = None, optimizer: str | None = None) -> Settings:
    """train.py's settings for this device with only --recipe and --optimizer given (each None: left out)."""
    flags = {"--recipe": recipe, "--optimizer": optimizer, "--device": device.type}
    argv = [part for flag, value in flags.items() if value for part in (flag, value)]
    return resolve(parse_args(argv), given_flags(argv))[0]


def training_step(config: GPTConfig, settings: Settings, batch_size: int, device: torch.device,
                  dtype: torch.dtype, compile_model: bool = False) -> tuple[GPT, Callable[[], torch.Tensor]]:
    """A model of config (seeded, so every benchmark starts from the same weights) and one of train.py's
    train_steps on it, as a function: the settings' optimizer, lr, accumulation and clipping, on one fixed
    batch of random tokens (batch_size x grad_accum sequences). Returns the uncompiled model and the step."""
    torch.manual_seed(0)
    with torch.device(device):
        raw_model = GPT(config)
    optimizer = train.make_optimizer(raw_model, settings.lr, settings.weight_decay, settings.beta2, device,
                                     settings.optimizer)
    model = torch.compile(raw_model) if compile_model else raw_model
    sequences = batch_size * settings.grad_accum
    x, y = (torch.randint(config.vocab_size, (sequences, config.block_size), device=device) for _ in range(2))
    step = functools.partial(train.train_step, model, optimizer, grad_scaler(device, dtype), x, y, settings.lr,
                             settings.grad_accum, settings.grad_clip, dtype)
    return raw_model, step


def bench_train(args: argparse.Namespace) -> dict:
    """Training tokens/s (forward, backward, optimizer step) per preset: train.py's train_step with the settings
    of a recipe (train.py's default for the device unless --recipe names one), on random tokens."""
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    settings = train_settings(device, args.recipe, args.optimizer)
    batch_size = args.batch_size or settings.batch_size
    compile_model = settings.compile if args.compile is None else args.compile
    info = run_info(device, dtype, args.command)
    peak = peak_flops(info["device"]) if device.type == "cuda" else None
    matmul_rate = matmul_flops_per_s(device, dtype)
    say(f"a 2048^3 matrix product in {info['dtype']}: {matmul_rate / 1e9:,.0f} GFLOP/s")
    say(f"{info['device']}, autocast {info['dtype']}, compile {'on' if compile_model else 'off'}, recipe "
        f"{settings.recipe}, {settings.optimizer}: batch {batch_size} x {settings.grad_accum} micro-batches, "
        f"{args.warmup_steps} untimed + {args.steps} timed steps")
    rows, measurements = [], []
    for preset in args.preset:
        overrides = {name: value for name in ("block_size", "dropout", "attn_dropout", "attention")
                     if (value := getattr(args, name)) is not None}
        config = GPTConfig.from_preset(preset, **overrides)
        raw_model, step = training_step(config, settings, batch_size, device, dtype, compile_model)
        first_step, seconds = time_steps(step, args.warmup_steps, args.steps, device)
        tokens_per_second = args.steps * batch_size * settings.grad_accum * config.block_size / seconds
        params = raw_model.num_params()
        mfu = tokens_per_second * flops_per_token(config, params) / peak if peak else None
        ceiling = matmul_rate / flops_per_token(config, params)  # tokens/s if every FLOP ran at the matmul rate
        measurements.append({"preset": preset, "params": params, "dropout": config.dropout,
                             "attn_dropout": config.attention_dropout, "attention": config.attention,
                             "tokens_per_s": round(tokens_per_second, 1),
                             "first_step_s": round(first_step, 2), "mfu": None if mfu is None else round(mfu, 4),
                             "flops_per_token": flops_per_token(config, params),
                             "matmul_ceiling_tokens_per_s": round(ceiling, 1),
                             "fraction_of_ceiling": round(tokens_per_second / ceiling, 3)})
        rows.append([preset, f"{params / 1e6:.2f}M", f"{config.dropout:g} / {config.attention_dropout:g}",
                     config.attention, info["dtype"], "on" if compile_model else "off", f"{tokens_per_second:,.0f}",
                     f"{ceiling:,.0f}", f"{tokens_per_second / ceiling:.0%}", f"{first_step:.1f}",
                     "unknown" if mfu is None else f"{mfu:.1%}"])
        say(f"{preset}: {tokens_per_second:,.0f} tokens/s, {tokens_per_second / ceiling:.0%} of the {ceiling:,.0f} "
            f"tokens/s the matmul rate allows")
    table = "\n".join(markdown_table(["preset", "params", "dropout / on attention", "attention", "autocast", "compile",
                                      "train tok/s", "matmul ceiling tok/s", "of the ceiling", "first step s",
                                      "MFU"], rows))
    measured_with = {"recipe": settings.recipe, "batch_size": batch_size, "grad_accum": settings.grad_accum,
                     "block_size": config.block_size, "steps": args.steps, "warmup_steps": args.warmup_steps,
                     "compile": compile_model, "peak_flops": peak, "matmul_flops_per_s": round(matmul_rate),
                     "optimizer": settings.optimizer}
    return {"benchmark": "train", **info, "settings": measured_with, "results": measurements, "table": table}


def load_nanogpt(checkout: Path):
    """nanoGPT's model.py from a checkout of github.com/karpathy/nanoGPT (not part of this project: the peer
    the speed goals are set against), imported as the module nanogpt_model; ValueError if it is not there."""
    import importlib.util

    path = checkout / "model.py"
    if not path.is_file():
        raise ValueError(f"no model.py in {checkout}: --nanogpt takes a checkout of github.com/karpathy/nanoGPT")
    spec = importlib.util.spec_from_file_location("nanogpt_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nanogpt_model"] = module  # as an import would (its dataclasses look themselves up there)
    spec.loader.exec_module(module)
    return module


def nanogpt_step(nanogpt, config: GPTConfig, settings: Settings, batch_size: int,
                 device: torch.device) -> tuple[torch.nn.Module, Callable[[], None]]:
    """nanoGPT's model at config's size and dropout, and its training step as its train.py takes it on a CPU:
    float32 (no autocast there), its own AdamW (configure_optimizers), the gradient clipped at 1.0, on one fixed
    batch of random tokens. Returns the model and the step."""
    import contextlib
    import io

    torch.manual_seed(0)
    model = nanogpt.GPT(nanogpt.GPTConfig(block_size=config.block_size, vocab_size=config.vocab_size,
                                          n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                                          dropout=config.dropout, bias=config.bias)).to(device)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter groups
        optimizer = model.configure_optimizers(settings.weight_decay, settings.lr, (0.9, settings.beta2), device.type)
    x, y = (torch.randint(config.vocab_size, (batch_size, config.block_size), device=device) for _ in range(2))

    def step() -> None:
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return model, step


def bench_peer(args: argparse.Namespace) -> dict:
    """Training tokens/s of one preset (train.py's train_step, the device's recipe and precision) against
    nanoGPT's model of the same size and dropout in float32, in interleaved rounds on the same batch size:
    the medians, their ratio, and each side's fraction of the matmul ceiling (the rate measured at the start of
    each round, its median: one measurement at the start moved 2x on a shared machine)."""
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    settings = train_settings(device, optimizer=args.optimizer)
    batch_size = args.batch_size or settings.batch_size
    info = run_info(device, dtype, args.command)
    nanogpt = load_nanogpt(args.nanogpt)
    config = GPTConfig.from_preset(args.preset)
    ours_model, ours = training_step(config, settings, batch_size, device, dtype)
    peer_model, peer = nanogpt_step(nanogpt, config, settings, batch_size, device)
    sides = {"tinygpt": (ours, ours_model.num_params(), info["dtype"]),
             "nanoGPT": (peer, sum(p.numel() for p in peer_model.parameters()), "float32")}
    say(f"{info['device']}: {args.preset} (dropout {config.dropout:g}) against nanoGPT's model of its size, batch "
        f"{batch_size} x {config.block_size}, {args.rounds} interleaved rounds of {args.steps} steps")
    speeds, rates = {name: [] for name in sides}, []
    for step, _, _ in sides.values():
        for _ in range(args.warmup_steps):
            step()
    tokens = args.steps * batch_size * config.block_size
    for round_number in range(args.rounds):
        rates.append(matmul_flops_per_s(device, dtype))  # the ceiling moves with the machine's state: each round's
        for name, (step, _, _) in sides.items():
            speeds[name].append(tokens / seconds_of_steps(step, args.steps, device))
        say(f"round {round_number + 1}: " + ", ".join(f"{name} {speeds[name][-1]:,.0f}" for name in sides)
            + f" tokens/s; a 2048^3 matrix product in {info['dtype']} {rates[-1] / 1e9:,.0f} GFLOP/s")
    matmul_rate = statistics.median(rates)
    rows, measurements = [], []
    for name, (_, params, precision) in sides.items():
        median = statistics.median(speeds[name])
        ceiling = matmul_rate / flops_per_token(config, params)
        measurements.append({"model": name, "params": params, "precision": precision,
                             "tokens_per_s": round(median, 1), "runs": [round(v, 1) for v in speeds[name]],
                             "matmul_ceiling_tokens_per_s": round(ceiling, 1),
                             "fraction_of_ceiling": round(median / ceiling, 3)})
        rows.append([name, f"{params / 1e6:.2f}M", precision, f"{median:,.0f}",
                     f"{min(speeds[name]):,.0f}-{max(speeds[name]):,.0f}", f"{median / ceiling:.0%}"])
    ratios = [ours_speed / peer_speed for ours_speed, peer_speed in zip(speeds["tinygpt"], speeds["nanoGPT"],
                                                                         strict=True)]
    ratio = statistics.median(ratios)
    say(f"tinygpt trains {ratio:.2f}x as fast as nanoGPT's model (median of the rounds' ratios; "
        f"{min(ratios):.2f}-{max(ratios):.2f})")
    table = "\n".join(markdown_table(["model", "params", "precision", "train tok/s (median)", "range",
                                      f"of the {info['dtype']} matmul ceiling"], rows))
    table += f"\n\ntinygpt / nanoGPT: {ratio:.2f}x (the median of {args.rounds} rounds' ratios)"
    measured_with = {"preset": args.preset, "recipe": settings.recipe, "optimizer": settings.optimizer,
                     "batch_size": batch_size, "block_size": config.block_size, "dropout": config.dropout,
                     "steps": args.steps, "rounds": args.rounds, "matmul_flops_per_s": round(matmul_rate),
                     "matmul_flops_per_s_each_round": [round(rate) for rate in rates]}
    return {"benchmark": "peer", **info, "settings": measured_with, "results": measurements,
            "ratio": round(ratio, 3), "ratios": [round(r, 3) for r in ratios], "table": table}


def bench_profile(args: argparse.Namespace) -> dict:
    """Where a training step's time goes: PyTorch's profiler over a few of train_step's steps (as bench_train
    runs them) for one preset, the operations that took the most time, as shares of the whole."""
    from torch.profiler import ProfilerActivity, profile

    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    settings = train_settings(device, optimizer=args.optimizer)
    info = run_info(device, dtype, args.command)
    config = GPTConfig.from_preset(args.preset)
    _, step = training_step(config, settings, settings.batch_size, device, dtype)
    time_steps(step, 3, 1, device)  # warm up
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device.type == "cuda" else [])]
    with profile(activities=activities) as profiler:
        for _ in range(args.steps):
            step()
        synchronize(device)
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    top = [{"op": event.key, "share": round(event.self_cpu_time_total / total, 4),
            "ms_per_step": round(event.self_cpu_time_total / 1e3 / args.steps, 2),
            "calls_per_step": event.count / args.steps} for event in events[:args.top]]
    rows = [[entry["op"], f"{entry['share']:.1%}", f"{entry['ms_per_step']:.1f}", f"{entry['calls_per_step']:g}"]
            for entry in top]
    say(f"{args.preset}, batch {settings.batch_size} x {config.block_size}, autocast {info['dtype']}, "
        f"{settings.optimizer}: {total / 1e3 / args.steps:.0f} ms of operations per step")
    table = "\n".join(markdown_table(["operation", "share of the step", "ms per step", "calls per step"], rows))
    measured_with = {"preset": args.preset, "batch_size": settings.batch_size, "block_size": config.block_size,
                     "dropout": config.dropout, "attn_dropout": config.attention_dropout,
                     "attention": config.attention, "optimizer": settings.optimizer, "steps": args.steps,
                     "ms_per_step": round(total / 1e3 / args.steps, 1)}
    return {"benchmark": "profile", **info, "settings": measured_with, "results": top, "table": table}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subcommand per benchmark; `uv run bench.py NAME --help` lists its flags."""
    common = argparse.ArgumentParser(add_help=False)  # flags every benchmark takes
    common.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run (default: auto, the best found)")
    common.add_argument("--dtype", choices=list(DTYPES), default="auto",
                        help="precision of the matrix products (default: auto, chosen per device in device.py)")
    common.add_argument("--threads", type=positive_int, metavar="N",
                        help="CPU threads for PyTorch (default: PyTorch's choice, usually one per core)")
    where = common.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, metavar="PATH",
                       help="results file to write (default: out/bench/bench_NAME.json, ignored by git)")
    where.add_argument("--update-results", action="store_true",
                       help="write experiments/results/bench_NAME.json, the committed results the docs are built "
                            "from (then run `uv run python -m experiments.report`)")
    parser = argparse.ArgumentParser(description="Measure tinygpt's speed; print a markdown table and save JSON.")
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    train = subparsers.add_parser(
        "train", parents=[common], help="training tokens/s, and model FLOPs utilisation on known GPUs",
        description="Training tokens/s (forward, backward, optimizer step) for the 10M presets with random data, "
                    "with the device's training precision. MFU uses PEAK_BF16_FLOPS; 'unknown' for other devices.")
    train.add_argument("--preset", nargs="+", choices=list(PRESETS), default=list(TEN_MILLION_PRESETS),
                       help="model preset(s) to measure (default: vanilla modern)")
    train.add_argument("--recipe", choices=list(RECIPES),
                       help="train.py's settings to use: batch size, gradient accumulation, optimizer, clipping "
                            "(default: train.py's for the device; see settings.py)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw or muon (default: the recipe's)")
    train.add_argument("--batch-size", type=positive_int, help="sequences per micro-batch (default: the recipe's)")
    train.add_argument("--block-size", type=positive_int, help="tokens per sequence (default: the preset's)")
    train.add_argument("--steps", type=positive_int, default=10, help="timed steps (default: 10)")
    train.add_argument("--warmup-steps", type=positive_int, default=3,
                       help="untimed steps first, compilation included (default: 3)")
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the model (default: as train.py: on for CUDA, off elsewhere)")
    train.add_argument("--dropout", type=float, default=None,
                       help="dropout on embeddings and residual branches for every preset (default: the preset's "
                            "own, as train.py --preset uses)")
    train.add_argument("--attention", choices=ATTENTIONS, default=None,
                       help="attention path for every preset (default: the preset's own, auto: fused on a GPU, "
                            "written out where a CPU trains)")
    train.add_argument("--attn-dropout", type=float, default=None,
                       help="dropout on the attention weights for every preset (default: the preset's own: the "
                            "same as --dropout)")
    train.set_defaults(run=bench_train)

    profile = subparsers.add_parser(
        "profile", parents=[common], help="where a training step's time goes, by operation",
        description="PyTorch's profiler over a few training steps of one preset (train.py's train_step, the "
                    "device's recipe and precision, random tokens): the operations that take the most time.")
    profile.add_argument("--preset", choices=list(PRESETS), default="vanilla", help="model preset (default: vanilla)")
    profile.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw or muon (default: the recipe's)")
    profile.add_argument("--steps", type=positive_int, default=5, help="profiled steps (default: 5)")
    profile.add_argument("--top", type=positive_int, default=12, help="operations listed (default: 12)")
    profile.set_defaults(run=bench_profile)

    peer = subparsers.add_parser(
        "peer", parents=[common], help="training tokens/s against nanoGPT's model, from a checkout of it",
        description="Training tokens/s of one preset (train.py's step, the device's recipe and precision) and of "
                    "nanoGPT's model of the same size and dropout in float32 (as its train.py runs on a CPU), "
                    "in interleaved rounds: the medians, their ratio and each one's fraction of the matmul ceiling.")
    peer.add_argument("--nanogpt", type=Path, required=True, metavar="DIR",
                      help="a checkout of github.com/karpathy/nanoGPT (its model.py is used)")
    peer.add_argument("--preset", choices=list(PRESETS), default="vanilla", help="model preset (default: vanilla)")
    peer.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw or muon (default: the recipe's)")
    peer.add_argument("--batch-size", type=positive_int, help="sequences per step (default: the recipe's)")
    peer.add_argument("--steps", type=positive_int, default=5, help="timed steps per round (default: 5)")
    peer.add_argument("--rounds", type=positive_int, default=5, help="interleaved rounds (default: 5)")
    peer.add_argument("--warmup-steps", type=positive_int, default=3, help="untimed steps first (default: 3)")
    peer.set_defaults(run=bench_peer)

    generate = subparsers.add_parser(
        "generate", parents=[common], help="tokens/s of generation: no cache, KV cache, compiled decode step",
        description="Tokens/s at batch 1 after a 1-token prompt, without the KV cache, with it, and with the decode "
                    "step compiled (its compile time apart), for the 10M presets with random weights (speed does not "
                    "depend on the weights), each as a fraction of the limit the bare weight reads set.")
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
    generate.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                          help="also measure the compiled decode step, and its compile time (default: on)")
    generate.add_argument("--attention", choices=ATTENTIONS, default=None,
                          help="attention path for every preset (default: the preset's own, auto: fused on a GPU; "
                               "on a CPU fused eagerly, written out compiled)")
    generate.set_defaults(run=bench_generate)
    return parser


def say(message: str) -> None:
    """Print a line now; if the reader has gone away (`| head`), go on measuring quietly: the results file
    is still written."""
    try:
        print(message, flush=True)
    except BrokenPipeError:
        silence_closed_stdout()


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmark, print its table and write its results file."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = ["bench.py", *argv]  # for the results file's provenance
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        results = args.run(args)
    except ValueError as error:  # e.g. --device cuda without a GPU
        print(f"error: {error}", file=sys.stderr)
        return 2
    say("\n" + results["table"])
    where = args.out or (RESULTS_DIR if args.update_results else SCRATCH_DIR) / f"bench_{args.benchmark}.json"
    write_results(results, where)
    return 0


if __name__ == "__main__":
    sys.exit(main())
