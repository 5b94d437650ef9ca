"""
The run a newcomer gets: `uv run train.py` with no flags, on this machine's device.

    uv run python -m experiments.default_run

train.py picks the preset and recipe for the device (the `small` model on a CPU, the 10M `modern` one
on a GPU). This records what that run reaches and how long it takes, from the whole process (start-up,
data, training, evaluations, checkpoints) and from train.py's own clock, so docs/training.md and the
README can say what to expect per device from measured runs only. Writes
experiments/results/default_<device>.json (or --name), then regenerates docs/results.md.

    uv run python -m experiments.default_run --name default_cpu_float32 --train-args="--dtype float32"
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/default_run.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common, report  # noqa: E402
from machinery.checkpoint import load_checkpoint  # noqa: E402
from machinery.device import pick_device, pick_dtype  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Measure train.py's default run on this device.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    common.add_run_args(parser)
    parser.add_argument("--name", help="results file name, for a second run on the same kind of device\n"
                                       "(default: default_<device>, e.g. default_cpu)")
    args = parser.parse_args(argv)
    device_type = pick_device(args.device).type
    name = args.name or f"default_{device_type}"
    out_dir = args.runs_dir / name.replace("_", "-")
    # On a shared machine other work slows the run; the 1-minute load average shows how busy it was.
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    run = common.train_run([*common.base_flags(args), *shlex.split(args.train_args)], out_dir, args.rerun)
    settings = load_checkpoint(out_dir / "last.pt")["args"]
    result = {"name": name, "kind": "default_run", "preset": settings["preset"],
              "title": f"uv run train.py with its defaults{', and ' + args.train_args if args.train_args else ''}, "
                       f"on {device_type}", "device_type": device_type,
              "precision": str(pick_dtype(pick_device(args.device), settings["dtype"])).removeprefix("torch."),
              "load_average_at_start": load_average,
              "variants": [common.variant_result("default", [run])],
              "provenance": common.provenance("default_run", argv, args)}
    common.write_result(result, args.results_dir)
    report.build_report(args.results_dir, args.docs_dir)


if __name__ == "__main__":
    main()
