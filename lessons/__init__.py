"""
Lessons: what goes wrong when building and training a GPT, each made reproducible by one script that
shows the symptom and the fix, and checked by tests/test_lessons.py. See lessons/README.md.

    uv run python -m lessons.rope_cache_offset    # RoPE positions wrong inside the KV cache
    uv run python -m lessons.overfitting          # a model too large for its data, and early stopping
    uv run python -m lessons.float16              # float16 without loss scaling: underflow and overflow
    uv run python -m lessons.lost_run             # kill -9 in the middle of training, then --resume
    uv run python -m lessons.one_thing_at_a_time  # bundled changes hide which one helped (the ladder's numbers)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from experiments import common


def write_result(result: dict, module: str, argv: list[str], device: str, data_path: str | None,
                 results_dir: Path) -> None:
    """Stamp a lesson's result with where and how it was made and write results_dir/<name>.json, from which
    uv run python -m experiments.report fills the lesson's block in docs/learn/12-what-goes-wrong.md."""
    made_with = argparse.Namespace(device=device, data=data_path)
    result["provenance"] = common.provenance(module, argv, made_with, package="lessons")
    common.write_result(result, results_dir)


def write_plot(name: str, docs_dir: Path, draw: Callable[[Path], None]) -> None:
    """docs_dir/plots/<name>.png, drawn by draw(path) with plots.py; skipped, saying so, without matplotlib."""
    path = docs_dir / "plots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        draw(path)
    except ImportError:
        print(f"({name}.png skipped: pip install matplotlib to get it)")
        return
    print(f"wrote {common.display_path(path)}")
