"""
The final comparison: the vanilla and modern presets at full size (about 10.7M parameters, context 256),
trained the same way on the device that runs this, side by side: best val loss, time and parameters.

    python -m experiments.final              # on a GPU: train.py's GPU recipe, 5000 steps of 64 × 256 tokens
    python -m experiments.final --device cpu  # on a CPU: the shorter FULL_SIZE_CPU schedule below

The swap experiments (experiments/swaps.py) measure each change alone on a small model; this one answers
the question a reader asks last: at the size this project is about, how much better is the modern model,
and what does it cost? Both presets get the same data, steps, schedule, dropout and seeds; only the
architecture differs. Writes experiments/results/final_<device>.json, then regenerates docs/results.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python experiments/final.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device import pick_device  # noqa: E402
from experiments import common, report  # noqa: E402

PRESETS = ("vanilla", "modern")
# Full size on a 2-core CPU trains about 1,400 tokens/s, so the GPU recipe (20M tokens) would take days.
# This schedule is 800 steps of 16 × 256 tokens: 3.3M tokens, about 3 epochs of the train split. So few
# epochs cannot overfit 10M parameters, so dropout is off; a higher peak lr than the GPU recipe's suits the
# short run. 100 fixed val windows (25,600 tokens) keep each evaluation short.
FULL_SIZE_CPU = dict(batch_size=16, max_iters=800, eval_interval=100, eval_windows=100, lr=2e-3, min_lr=2e-4,
                     warmup_iters=50, beta2=0.99, dropout=0.0)


def schedule_flags(args: argparse.Namespace, device_type: str) -> list[str]:
    """train.py flags for both presets: the GPU recipe as it is on CUDA and MPS, FULL_SIZE_CPU on a CPU."""
    if device_type != "cpu":
        args.full = True  # common.setting_flags: the 10M presets with train.py's GPU recipe
        return common.setting_flags(args)
    return [*common.base_flags(args), *common.to_flags(FULL_SIZE_CPU), *shlex.split(args.train_args)]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Train the vanilla and modern presets at full size and compare.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1,
                        help=f"seeds per preset, {common.FIRST_SEED} upwards (default: 1)")
    common.add_run_args(parser)
    args = parser.parse_args(argv)
    common.check_seeds(parser, args)
    device_type = pick_device(args.device).type
    flags = schedule_flags(args, device_type)
    if device_type == "cpu":
        print(f"CPU schedule: the full-size presets for {FULL_SIZE_CPU['max_iters']} steps of "
              f"{FULL_SIZE_CPU['batch_size']} sequences, far shorter than the GPU recipe (FULL_SIZE_CPU in "
              "experiments/final.py)", flush=True)
    runs = {}
    for preset in PRESETS:
        runs[preset] = []
        for seed in common.seeds(args):
            print(f"{preset}, seed {seed}", flush=True)
            out_dir = args.runs_dir / f"final-{device_type}" / preset / f"seed{seed}"
            runs[preset].append(common.train_run(["--preset", preset, *flags, "--seed", str(seed)], out_dir,
                                                 args.rerun))
    if runs["vanilla"][0]["schedule"] != runs["modern"][0]["schedule"]:
        raise SystemExit("error: the two presets were trained with different schedules")
    result = {"name": f"final_{device_type}", "kind": "final", "device_type": device_type,
              "title": f"vanilla vs modern at full size, on {device_type}", "seeds": common.seeds(args),
              "schedule": runs["vanilla"][0]["schedule"],
              "variants": [common.variant_result(preset, runs[preset], flags=["--preset", preset],
                                                 config_diff=common.config_diff(runs["vanilla"][0]["config"],
                                                                                runs[preset][0]["config"]))
                           for preset in PRESETS],
              "provenance": common.provenance("final", argv, args)}
    common.write_result(result, args.results_dir)
    report.build_report(args.results_dir, args.docs_dir)


if __name__ == "__main__":
    main()
