"""
What every experiment shares: the settings it trains with, running train.py and reading back what it
wrote, statistics over seeds, and the provenance stamped on every results file.

Each training run is `python train.py ...` in its own process, so runs cannot leak state into each
other and the exact command that made a result is recorded beside it and can be run again by hand.
"""

from __future__ import annotations

import argparse
import hashlib
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

import data
import train
from device import describe_device, pick_device
from model import GPT, GPTConfig, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "experiments" / "results"
DOCS_DIR = ROOT / "docs"
RUNS_DIR = ROOT / "out" / "experiments"  # checkpoints and logs of every run (git-ignored)
FIRST_SEED = 1337  # train.py's default seed: the first seed of every variant is the one train.py uses

# The CPU-sized default, sized for about 1.5 minutes a run on two cores, so the 15 runs of the swaps suite
# fit in well under an hour, yet long enough for the variants to separate. No dropout: 300 steps of 2,048 tokens
# (about 0.6 epochs) cannot overfit. 64 fixed val windows (8,192 tokens) keep each evaluation cheap.
CPU_MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, dropout=0.0)
CPU_SCHEDULE = dict(batch_size=16, max_iters=300, eval_interval=25, eval_windows=64, lr=3e-3, min_lr=3e-4,
                    warmup_iters=30, beta2=0.99)
# train.py settings copied from a run's checkpoint into the results, to describe the schedule.
SCHEDULE_FIELDS = ("batch_size", "grad_accum", "max_iters", "lr", "min_lr", "warmup_iters", "weight_decay",
                   "beta2", "grad_clip", "eval_interval", "eval_windows", "dtype", "compile")


def add_suite_args(parser: argparse.ArgumentParser, default_seeds: int) -> None:
    """The flags of an experiment that compares variants: the model size and how many seeds."""
    parser.add_argument("--full", action="store_true",
                        help="the 10M presets as they are, with train.py's GPU recipe (default: the CPU-sized\n"
                             "models and schedule in experiments/common.py)")
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


def base_flags(args: argparse.Namespace) -> list[str]:
    """The train.py flags that say where to run and on what text."""
    return ["--device", args.device] + (["--data", args.data] if args.data else [])


def setting_flags(args: argparse.Namespace) -> list[str]:
    """train.py flags shared by every run of a suite: device and data, the model size and schedule of the
    CPU default or of --full, then --train-args."""
    flags = base_flags(args)
    if args.full:
        recipe = {name: value for name, value in train.RECIPES["gpu"].items() if name not in ("preset", "compile")}
        recipe["eval_windows"] = recipe["eval_windows"] or 0  # None in the recipe means the whole val split
        flags += to_flags(recipe)
    else:
        flags += to_flags({**CPU_MODEL, **CPU_SCHEDULE})
    return flags + shlex.split(args.train_args)


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


def display_path(path: Path) -> str:
    """path relative to the repository root when it is inside it (commands run from the root)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def train_run(flags: list[str], out_dir: Path, rerun: bool = False, threads: int | None = None) -> dict:
    """Train one model with `python train.py FLAGS` into out_dir and return its record (see read_run).

    A finished run already in out_dir that was made by exactly the same command is read back instead
    of trained again (unless rerun), so experiments that share a baseline train it once. threads, if
    given, caps the CPU threads of the run (OMP_NUM_THREADS), so that several runs can share the cores.
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
    start = time.time()
    with open(out_dir / "train.log", "w") as log:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
        finished = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    if finished.returncode:
        tail = "\n".join((out_dir / "train.log").read_text().splitlines()[-15:])
        raise SystemExit(f"error: this run failed with exit code {finished.returncode}:\n  {command}\n{tail}")
    receipt.write_text(json.dumps({"command": command, "process_seconds": time.time() - start,
                                   "git_commit": git_commit()[0]}, indent=1) + "\n")
    record = read_run(out_dir)
    print(f"  best val loss {record['best_val_loss']:.4f} ({record['best_val_bpc']:.3f} bpc), "
          f"{record['process_seconds']:.0f}s", flush=True)
    return record


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
            "config": checkpoint["config"], "tokenizer": checkpoint["tokenizer"]["name"],
            "schedule": {name: checkpoint["args"][name] for name in SCHEDULE_FIELDS},
            "params": model.num_params(), "ffn_hidden": config.ffn_hidden,
            "ffn_params": sum(p.numel() for block in model.transformer.h if block.mlp for p in block.mlp.parameters()),
            **run_numbers(records), "metrics": records}


def run_numbers(records: list[dict]) -> dict:
    """The numbers a table shows for one run, all read from its metrics.jsonl records. Training
    throughput is the median over eval intervals (the step-0 record trained nothing), so one slow
    interval (compilation, a busy machine) does not set it."""
    trained = [r["tokens_per_sec"] for r in records if r["train_loss"] is not None]
    return {"final_step": records[-1]["step"],
            "final_val_loss": records[-1]["val_loss"], "best_val_loss": min(r["val_loss"] for r in records),
            "final_val_bpc": records[-1]["val_bpc"], "best_val_bpc": min(r["val_bpc"] for r in records),
            "elapsed_s": records[-1]["elapsed_s"],
            "tokens_per_sec": statistics.median(trained) if trained else None}


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
    loss at the report steps, and the per-run numbers."""
    steps = [r["step"] for r in runs[0]["metrics"]]
    if any([r["step"] for r in run["metrics"]] != steps for run in runs):
        raise ValueError("the seeds of one variant evaluated at different steps; they cannot be averaged")
    curves = {}
    for metric in ("val_loss", "val_bpc"):
        per_step = [spread([run["metrics"][i][metric] for run in runs]) for i in range(len(steps))]
        curves[metric] = {"mean": [s["mean"] for s in per_step], "std": [s["std"] for s in per_step]}
    summary = {"steps": steps, "curves": curves,
               "val_loss_at": {str(step): spread([run["metrics"][steps.index(step)]["val_loss"] for run in runs])
                               for step in report_steps(steps)}}
    for name in ("final_val_loss", "best_val_loss", "final_val_bpc", "best_val_bpc", "elapsed_s", "process_seconds"):
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


def git_commit() -> tuple[str, bool]:
    """(commit hash, whether the working tree had uncommitted changes), or ("unknown", False) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())


def provenance(module: str, argv: list[str], args: argparse.Namespace, package: str = "experiments") -> dict:
    """Where and how a results file was made: device, versions, commit, date, data, command line
    (`python -m package.module argv`)."""
    commit, dirty = git_commit()
    corpus = data.find_corpus(args.data)
    return {"device": describe_device(pick_device(args.device)), "torch": torch.__version__,
            "python": platform.python_version(), "git_commit": commit, "git_dirty": dirty,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": {"file": corpus.name, "sha256": hashlib.sha256(corpus.read_bytes()).hexdigest()},
            "command": shlex.join(["python", "-m", f"{package}.{module}", *argv])}


def write_result(result: dict, results_dir: Path) -> Path:
    """Write results_dir/<name>.json atomically (a crash never leaves half a file for the report)."""
    path = Path(results_dir) / f"{result['name']}.json"
    data.write_atomically(path, (json.dumps(result, indent=1) + "\n").encode("utf-8"))
    print(f"wrote {display_path(path)}", flush=True)
    return path
