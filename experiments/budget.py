"""
What a time budget buys on this machine: `train.py --time-budget` for a few budgets and model sizes, one run
at a time with every core, each timed as a whole process from outside (start-up to exit).

    uv run python -m experiments.budget                      # the study on this CPU
    uv run python -m experiments.budget --budgets 1m,10m     # some of its budgets only
    uv run python -m experiments.budget --seeds 3 --budgets 10m --sizes cpu-10m   # one cell, three seeds

The sizes are the budget recipes of machinery/settings.py (cpu: 0.8M parameters, cpu-10m: 2.7M, cpu-1h:
4.7M); --time-budget then picks among them by the budget (settings.BUDGET_RECIPES), so this study is the
table that choice reads. The figure for each run is best.pt's val loss on the whole val split, which a
timed run measures inside its budget and writes as the last record of its metrics.jsonl. Writes
experiments/results/budget_<device>.json and regenerates docs/results.md (a table and
docs/plots/budget_<device>.png: best val against budget, one line per size).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/budget.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common, report  # noqa: E402
from machinery.budget import format_budget, parse_duration  # noqa: E402
from machinery.device import pick_device  # noqa: E402

# Which sizes each budget tries: the ones that could win there (a 4.7M model is far from trained in 3 minutes).
STUDY = {"1m": ("cpu", "cpu-10m"), "3m": ("cpu", "cpu-10m"), "10m": ("cpu", "cpu-10m", "cpu-1h"),
         "30m": ("cpu-10m", "cpu-1h"), "1h": ("cpu-1h",)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="What train.py --time-budget reaches for a few budgets and sizes.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    common.add_run_args(parser)
    parser.add_argument("--budgets", default=",".join(STUDY),
                        help=f"comma-separated budgets to run (default: {','.join(STUDY)})")
    parser.add_argument("--sizes", help="comma-separated recipes to run at each budget (default: STUDY's)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per run (default: %(default)s)")
    parser.add_argument("--name", help="results file name (default: budget_<device>)")
    args = parser.parse_args(argv)
    budgets = [item.strip() for item in args.budgets.split(",") if item.strip()]
    for budget in budgets:
        parse_duration(budget)  # refuse a bad one before anything runs
    device = pick_device(args.device)
    device_type = device.type
    name = args.name or f"budget_{device_type}"
    results_path = args.results_dir / f"{name}.json"
    previous = json.loads(results_path.read_text())["runs"] if results_path.exists() else []
    runs = {(run["budget"], run["recipe"], run["seed"]): run for run in previous}
    for budget in budgets:
        for recipe in args.sizes.split(",") if args.sizes else STUDY.get(budget, ("cpu-10m",)):
            for seed in common.seeds(args):
                out_dir = args.runs_dir / f"budget-{budget}-{recipe}-seed{seed}"
                flags = [*common.base_flags(args), "--recipe", recipe, "--time-budget", budget, "--seed", str(seed),
                         *shlex.split(args.train_args)]
                run = common.train_run(flags, out_dir, args.rerun, measure_speed_on=args.device)  # alone
                seconds = parse_duration(budget)
                runs[(budget, recipe, seed)] = {
                    "budget": budget, "budget_s": seconds, "recipe": recipe, "seed": seed, "out_dir": run["out_dir"],
                    "device": run["device"],  # the run's receipt's: a run reused from out/ may be from another machine
                    "load_average_at_start": run["load_average_at_start"],
                    "matmul_flops_per_s": run["matmul_flops_per_s"], "params": run["params"],
                    "best_val_loss_whole_split": run["best_val_loss_whole_split"],
                    "best_val_bpc_whole_split": run["best_val_bpc_whole_split"],
                    "best_val_loss_windows": run["best_val_loss"], "steps": run["final_step"],
                    "tokens_per_sec": run["tokens_per_sec"], "process_seconds": run["process_seconds"],
                    "over_budget": run["process_seconds"] / seconds - 1, "command": run["command"],
                    "git_commit": run["git_commit"], "schedule": run["schedule"], "config": run["config"],
                    "metrics": run["metrics"]}
    ordered = sorted(runs.values(), key=lambda r: (r["budget_s"], r["params"], r["seed"]))
    result = {"name": name, "kind": "budget", "device_type": device_type,
              "title": f"train.py --time-budget on {device_type}: best val loss against the budget",
              "runs": ordered, "provenance": common.provenance("budget", argv, args)}
    common.write_result(result, args.results_dir)
    report.build_report(args.results_dir, args.docs_dir)
    for run in ordered:
        print(f"{format_budget(run['budget_s']):>4} {run['recipe']:>8} seed {run['seed']}: best val (whole split) "
              f"{run['best_val_loss_whole_split']:.4f} in {run['process_seconds']:.0f}s")


if __name__ == "__main__":
    main()
