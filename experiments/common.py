"""
What every experiment shares: the recipe it trains with, running train.py and reading back what it
wrote, statistics over seeds, and the provenance stamped on every results file.

Each training run is `uv run train.py ...` in its own process, so runs cannot leak state into each
other and the exact command that made a result is recorded beside it and can be run again by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import data
from machinery import results, settings
from machinery.checkpoint import load_checkpoint
from machinery.device import describe_device, matmul_flops_per_s, pick_device, pick_dtype
from machinery.results import RESULTS_DIR, ROOT, display_path
from model import GPT, GPTConfig

DOCS_DIR = ROOT / "docs"
RUNS_DIR = ROOT / "out" / "experiments"  # checkpoints and logs of every run (git-ignored)
FIRST_SEED = settings.build_parser().get_default("seed")  # the first seed of every variant is train.py's own
# train.py settings copied from a run's checkpoint into the results, to describe the schedule.
SCHEDULE_FIELDS = ("batch_size", "grad_accum", "max_iters", "lr", "min_lr", "warmup_iters", "weight_decay",
                   "beta2", "grad_clip", "eval_interval", "eval_windows", "dtype", "compile")


def add_suite_args(parser: argparse.ArgumentParser, default_seeds: int, cpu_recipe: str = "swaps-cpu") -> None:
    """The flags of an experiment that compares variants: the model size and how many seeds."""
    parser.add_argument("--full", action="store_true",
                        help="the 10M presets as they are, with the gpu recipe (default: the CPU-sized\n"
                             f"{cpu_recipe} recipe; both in settings.py)")
    parser.add_argument("--seeds", type=int, default=default_seeds,
                        help=f"seeds per variant, {FIRST_SEED} upwards (default: {default_seeds})")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The flags every experiment takes: what train.py is given, and where everything is written."""
    parser.add_argument("--device", default="auto", help="passed to train.py: auto, cuda, mps or cpu")
    parser.add_argument("--data", help="passed to train.py: the text to train on (default: Tiny Shakespeare)")
    parser.add_argument("--train-args", default="",
                        help="more train.py flags for every run, placed after the experiment's own so they\n"
                             "win, e.g. --train-args='--max-iters 100 --dtype float32'")
    parser.add_argument("--rerun", action="store_true",
                        help="train again even where --runs-dir holds a finished run of the same command")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="where <experiment>.json goes (default: experiments/results)")
    parser.add_argument("--docs-dir", type=Path, default=DOCS_DIR,
                        help="where results.md and plots/ go (default: docs)")
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR,
                        help="where each run's checkpoints, metrics and log go (default: out/experiments)")


def check_seeds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, not {args.seeds}")


def setting_name(args: argparse.Namespace) -> str:
    return "full" if args.full else "cpu"


def recipe_name(args: argparse.Namespace, cpu_recipe: str = "swaps-cpu") -> str:
    """The recipe a suite trains with (settings.py): the gpu recipe with --full, else cpu_recipe."""
    return "gpu" if args.full else cpu_recipe


def base_flags(args: argparse.Namespace) -> list[str]:
    """The train.py flags that say where to run and on what text."""
    return ["--device", args.device] + (["--data", args.data] if args.data else [])


def setting_flags(args: argparse.Namespace, recipe: str) -> list[str]:
    """train.py flags shared by every run of a suite: device and data, the recipe, then --train-args."""
    return [*base_flags(args), "--recipe", recipe, *shlex.split(args.train_args)]


def to_flags(settings: dict) -> list[str]:
    """{"n_layer": 4} -> ["--n-layer", "4"]; {"bias": False} -> ["--no-bias"]."""
    flags = []
    for name, value in settings.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags += [f"--{flag}", str(value)]
    return flags


def seeds(args: argparse.Namespace) -> list[int]:
    return list(range(FIRST_SEED, FIRST_SEED + args.seeds))


def train_run(flags: list[str], out_dir: Path, rerun: bool = False, threads: int | None = None,
              measure_speed_on: str | None = None) -> dict:
    """Train one model with `uv run train.py FLAGS` into out_dir and return its record (see read_run).

    A finished run already in out_dir that was made by exactly the same command is read back instead
    of trained again (unless rerun), so experiments that share a baseline train it once. threads, if
    given, caps the CPU threads of the run (OMP_NUM_THREADS), so that several runs can share the cores.
    measure_speed_on, a device (for a run that has the machine to itself): its matrix products' FLOP/s in
    training's precision are measured just before the run and kept in the receipt with the device's name,
    so a run read back later names the machine it ran on, and machines whose names read the same differ
    by speed.
    """
    argv = ["train.py", *flags, "--out-dir", display_path(out_dir), "--sample-tokens", "0", "--overwrite"]
    command = shlex.join(["python", *argv])
    receipt = out_dir / "run.json"  # written only after a run finishes, so it marks a complete run
    if not rerun and receipt.exists() and json.loads(receipt.read_text())["command"] == command:
        print(f"  reusing {display_path(out_dir)} (made by the same command; --rerun trains it again)", flush=True)
        return read_run(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    receipt.unlink(missing_ok=True)
    print(f"  {command}", flush=True)
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # the run's own, kept on reuse
    matmul_rate = device_name = None
    if measure_speed_on is not None:
        measured_on = pick_device(measure_speed_on)
        matmul_rate = matmul_flops_per_s(measured_on, pick_dtype(measured_on))
        device_name = describe_device(measured_on)
    start = time.time()
    with open(out_dir / "train.log", "w") as log:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
        finished = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if finished.returncode:
        tail = "\n".join((out_dir / "train.log").read_text().splitlines()[-15:])
        raise SystemExit(f"error: this run failed with exit code {finished.returncode}:\n  {command}\n{tail}")
    receipt.write_text(json.dumps({"command": command, "process_seconds": time.time() - start,
                                   "git_commit": results.git_commit()[0], "load_average_at_start": load_average,
                                   "matmul_flops_per_s": matmul_rate, "device": device_name},
                                  indent=1) + "\n")
    record = read_run(out_dir)
    print(f"  best val loss {record['best_val_loss']:.4f} ({record['best_val_bpc']:.3f} bpc), "
          f"{record['process_seconds']:.0f}s", flush=True)
    return record


def train_runs(jobs: list[tuple[list[str], Path]], device: str, rerun: bool = False,
               workers: int | None = None) -> list[dict]:
    """Train (or reuse) every (flags, out_dir) job with train_run and return the records in the jobs' order.
    On a CPU two at a time with one thread each (at the experiments' CPU sizes a run uses one core better
    than two), on a GPU one at a time; workers overrides how many at once (one at a time: with every core)."""
    on_cpu = pick_device(device).type == "cpu"
    workers = workers or (2 if on_cpu else 1)
    threads = 1 if on_cpu and workers > 1 else None
    print(f"{len(jobs)} runs, {workers} at a time{', one thread each' if threads else ''}", flush=True)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: train_run(job[0], job[1], rerun, threads), jobs))


def children_cpu_seconds() -> float | None:
    """CPU time (user + system) used so far by finished child processes: the train.py runs. On a shared
    machine their wall time grows with the load; the CPU time they needed does not (much). None where the
    operating system does not say (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl file, one per evaluation."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_run(out_dir: Path) -> dict:
    """A finished run as the results files record it: its command, its model (config and parameter count,
    from the checkpoint), its schedule, every metrics.jsonl record, and the numbers taken from them."""
    receipt = json.loads((out_dir / "run.json").read_text())
    checkpoint = load_checkpoint(out_dir / "last.pt")
    config = GPTConfig(**checkpoint["config"])
    model = GPT(config)
    records = read_metrics(out_dir / "metrics.jsonl")
    return {"seed": checkpoint["args"]["seed"], "command": receipt["command"], "out_dir": display_path(out_dir),
            "git_commit": receipt["git_commit"], "process_seconds": receipt["process_seconds"],
            "load_average_at_start": receipt.get("load_average_at_start"),  # older receipts did not record it
            "matmul_flops_per_s": receipt.get("matmul_flops_per_s"),  # measured for runs given the machine alone
            "device": receipt.get("device"),  # named with the speed
            "config": checkpoint["config"], "tokenizer": checkpoint["tokenizer"]["name"],
            "schedule": {name: checkpoint["args"][name] for name in SCHEDULE_FIELDS},
            "params": model.num_params(), "ffn_hidden": config.ffn_hidden,
            "ffn_params": sum(p.numel() for block in model.transformer.h if block.mlp for p in block.mlp.parameters()),
            **run_numbers(records), "metrics": records}


def run_numbers(records: list[dict]) -> dict:
    """The numbers a table shows for one run, all read from its metrics.jsonl records. Training
    throughput is the median over eval intervals (the step-0 record trained nothing), so one slow
    interval (compilation, a busy machine) does not set it."""
    whole_split = [r for r in records if "best_val_loss_whole_split" in r]  # a --time-budget run's last record
    records = [r for r in records if "val_loss" in r]
    trained = [r["tokens_per_sec"] for r in records if r["train_loss"] is not None]
    best = min(records, key=lambda r: r["val_loss"])
    return {"final_step": records[-1]["step"], "best_step": best["step"],
            "final_val_loss": records[-1]["val_loss"], "best_val_loss": best["val_loss"],
            "final_val_bpc": records[-1]["val_bpc"], "best_val_bpc": min(r["val_bpc"] for r in records),
            "elapsed_s": records[-1]["elapsed_s"],
            "tokens_per_sec": statistics.median(trained) if trained else None,
            **({"best_val_loss_whole_split": whole_split[-1]["best_val_loss_whole_split"],
                "best_val_bpc_whole_split": whole_split[-1]["val_bpc_whole_split"],
                "budget_spent_s": whole_split[-1]["budget_spent_s"]} if whole_split else {})}


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (n-1; 0 for a single value), min and max over seeds."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def report_steps(steps: list[int]) -> list[int]:
    """The eval steps a table shows: the ones nearest a quarter and half of the run, and the last."""
    last = steps[-1]
    picked = [min(steps, key=lambda step: abs(step - last * fraction)) for fraction in (0.25, 0.5)]
    return sorted(set(picked + [last]))


def summarise(runs: list[dict]) -> dict:
    """Statistics over the seeds of one variant: the mean curves (with their std) for plots, the val
    loss at the report steps, and the per-run numbers. Runs stopped early (--patience) end at different
    steps: the curves and report steps cover the steps that every seed reached."""
    shortest = min(len(run["metrics"]) for run in runs)
    steps = [r["step"] for r in runs[0]["metrics"][:shortest]]
    if any([r["step"] for r in run["metrics"][:shortest]] != steps for run in runs):
        raise ValueError("the seeds of one variant evaluated at different steps; they cannot be averaged")
    curves = {}
    for metric in ("val_loss", "val_bpc"):
        per_step = [spread([run["metrics"][i][metric] for run in runs]) for i in range(len(steps))]
        curves[metric] = {"mean": [s["mean"] for s in per_step], "std": [s["std"] for s in per_step]}
    summary = {"steps": steps, "curves": curves,
               "val_loss_at": {str(step): spread([run["metrics"][steps.index(step)]["val_loss"] for run in runs])
                               for step in report_steps(steps)}}
    for name in ("final_val_loss", "best_val_loss", "final_val_bpc", "best_val_bpc", "best_step", "final_step",
                 "elapsed_s", "process_seconds"):
        summary[name] = spread([run[name] for run in runs])
    throughputs = [run["tokens_per_sec"] for run in runs if run["tokens_per_sec"] is not None]
    summary["tokens_per_sec"] = spread(throughputs) if throughputs else None
    return summary


def variant_result(name: str, runs: list[dict], **extra) -> dict:
    """One variant of an experiment: its model (the same for every seed) and its runs, with their summary."""
    first = runs[0]
    if any(run["config"] != first["config"] for run in runs):
        raise ValueError(f"the seeds of {name} trained different models")
    return {"name": name, **extra, "config": first["config"], "tokenizer": first["tokenizer"],
            "params": first["params"], "ffn_hidden": first["ffn_hidden"], "ffn_params": first["ffn_params"],
            "summary": summarise(runs), "runs": runs}


def config_diff(base: dict, other: dict) -> dict:
    """The config fields that differ: {field: [base value, other value]}."""
    return {name: [base[name], other[name]] for name in base if base[name] != other[name]}


def provenance(module: str, argv: list[str], args: argparse.Namespace, package: str = "experiments") -> dict:
    """Where and how a results file was made (results.provenance; the command is `python -m package.module
    argv`), and the text it trained on."""
    corpus = data.find_corpus(args.data)
    return {**results.provenance(pick_device(args.device), ["python", "-m", f"{package}.{module}", *argv]),
            "data": {"file": corpus.name, "sha256": hashlib.sha256(corpus.read_bytes()).hexdigest()}}


def write_result(result: dict, results_dir: Path) -> Path:
    """Write results_dir/<name>.json."""
    return results.write_results(result, Path(results_dir) / f"{result['name']}.json")
