"""
How fast does one GPU train the modern 10M model to a validation loss of 1.47?

    uv run python -m experiments.speed                              # on a GPU: train.py's GPU recipe
    uv run python -m experiments.speed --target-loss 1.50 --max-iters 3000

The run is plain `uv run train.py --preset modern` (with train.py's defaults for the device: on a GPU,
bfloat16 and torch.compile). Everything is read from its metrics.jsonl:

- time to target: elapsed_s at the first evaluation whose val loss is at or below the target. The clock
  is train.py's: it starts after the data and model are set up, and it includes the evaluations. The
  resolution is one eval interval.
- compile time (when compiling): torch.compile compiles on the first step, inside the first eval
  interval. That interval's time minus what its steps take at the pace of the later intervals
  estimates it.

Writes experiments/results/speed.json, then regenerates docs/results.md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from itertools import pairwise
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/speed.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common, report  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time to a target val loss with the modern preset on one GPU.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--target-loss", type=float, default=1.47, help="val loss to reach (default: 1.47)")
    parser.add_argument("--preset", default="modern", help="model preset (default: modern)")
    parser.add_argument("--max-iters", type=int, help="steps at most (default: train.py's for the device)")
    parser.add_argument("--seed", type=int, default=common.FIRST_SEED, help=f"(default: {common.FIRST_SEED})")
    common.add_run_args(parser)
    return parser.parse_args(argv)


def compile_estimate(records: list[dict]) -> dict | None:
    """Seconds of the first eval interval beyond what its steps cost at the median pace of the later
    intervals; None with fewer than two intervals to compare."""
    if len(records) < 3:
        return None
    intervals = [(b["step"] - a["step"], b["elapsed_s"] - a["elapsed_s"]) for a, b in pairwise(records)]
    first_steps, first_seconds = intervals[0]
    seconds_per_step = statistics.median(seconds / steps for steps, seconds in intervals[1:])
    return {"first_interval_s": first_seconds, "first_interval_steps": first_steps,
            "later_seconds_per_step": seconds_per_step, "compile_s": first_seconds - first_steps * seconds_per_step}


def speed_result(run: dict, target: float) -> dict:
    """What the run says about reaching the target: when, after how many tokens, and the compile time."""
    reached = next((r for r in run["metrics"] if r["val_loss"] <= target), None)
    schedule = run["schedule"]
    tokens_per_step = schedule["batch_size"] * schedule["grad_accum"] * run["config"]["block_size"]
    compiled = compile_estimate(run["metrics"]) if schedule["compile"] else None
    time_to_target = reached["elapsed_s"] if reached else None
    return {"target_loss": target, "reached": reached is not None,
            "step_at_target": reached["step"] if reached else None,
            "tokens_to_target": reached["step"] * tokens_per_step if reached else None,
            "time_to_target_s": time_to_target, "compile": compiled,
            "time_to_target_without_compile_s": (time_to_target - compiled["compile_s"]
                                                 if reached and compiled else None)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    flags = ["--preset", args.preset, *common.base_flags(args)]
    flags += ["--max-iters", str(args.max_iters)] if args.max_iters else []
    flags += [*shlex.split(args.train_args), "--seed", str(args.seed)]
    run = common.train_run(flags, args.runs_dir / "speed" / f"{args.preset}-seed{args.seed}", args.rerun)
    result = {"name": "speed", "kind": "speed", "title": f"time to val loss {args.target_loss}",
              "preset": args.preset, **speed_result(run, args.target_loss),
              "variants": [common.variant_result(args.preset, [run], flags=["--preset", args.preset])],
              "provenance": common.provenance("speed", argv, args)}
    common.write_result(result, args.results_dir)
    if result["reached"]:
        print(f"val loss {args.target_loss} reached at step {result['step_at_target']} after "
              f"{result['time_to_target_s']:.1f}s", flush=True)
    else:
        print(f"val loss {args.target_loss} not reached (best {run['best_val_loss']:.4f})", flush=True)
    report.build_report(args.results_dir, args.docs_dir)


if __name__ == "__main__":
    main()
