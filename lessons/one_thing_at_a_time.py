"""
Lesson: change one thing at a time. The modern preset changes four things at once (RMSNorm, SwiGLU, RoPE, no
biases); measured together they give one number, which says nothing about which change helped, which did
nothing, and whether they add up. The ladder measured each swap alone against the same vanilla stack, with
the same data, steps and seeds, so the single changes and the bundle can be set side by side.

    uv run python -m lessons.one_thing_at_a_time                       # from experiments/results/ladder.json
    uv run python -m lessons.one_thing_at_a_time --results experiments/results/ladder_full.json

Nothing is trained here: the numbers are the ladder's (uv run python -m experiments.ladder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run lessons/one_thing_at_a_time.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common, report  # noqa: E402


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description="Each modern swap alone and all of them together, from the ladder.")
    parser.add_argument("--results", type=Path, default=common.RESULTS_DIR / "ladder.json",
                        help="a results file of experiments.ladder (default: experiments/results/ladder.json)")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        raise SystemExit(f"error: no ladder results at {args.results}: first run: uv run python -m experiments.ladder")
    lines = report.one_thing_lines(json.loads(args.results.read_text()))
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
