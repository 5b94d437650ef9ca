"""
The final comparison: the vanilla and modern presets at full size (about 10.7M parameters, context 256),
trained the same way on the device that runs this, side by side: best val loss, time and parameters.

    uv run python -m experiments.final              # on a GPU: the gpu recipe, 5000 steps of 64 × 256 tokens
    uv run python -m experiments.final --device cpu  # on a CPU: the shorter full-size-cpu recipe

The swap experiments (experiments/swaps.py) measure each change alone on a small model; this one answers
the question a reader asks last: at the size this project is about, how much better is the modern model,
and what does it cost? Both presets get the same data, steps, schedule, dropout and seeds; only the
architecture differs. Writes experiments/results/final_<device>.json, then regenerates docs/results.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/final.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common, report  # noqa: E402
from machinery.device import pick_device  # noqa: E402
from machinery.settings import RECIPES  # noqa: E402

PRESETS = ("vanilla", "modern")


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
    recipe = "full-size-cpu" if device_type == "cpu" else "gpu"  # the gpu recipe would take days on a CPU
    flags = common.setting_flags(args, recipe)
    if device_type == "cpu":
        print(f"CPU schedule: the full-size presets for {RECIPES[recipe]['max_iters']} steps of "
              f"{RECIPES[recipe]['batch_size']} sequences, far shorter than the gpu recipe (full-size-cpu in "
              "settings.py)", flush=True)
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
