"""
Results files: every measurement bench.py and the experiments make is written as JSON under
experiments/results/, with where, when and how it was made (its provenance), so any number quoted in
the docs can be traced to a run. experiments/report.py turns the files into the docs' tables.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

from machinery.device import describe_device
from machinery.files import write_atomically

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "experiments" / "results"


def display_path(path: Path) -> str:
    """path relative to the repository root when it is inside it (commands run from the root)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# What the experiments and benchmarks write themselves: a change there is a result, not a change to the code.
GENERATED = (":(exclude)experiments/results", ":(exclude)docs", ":(exclude)README.md")


def git_commit() -> tuple[str, bool]:
    """(commit hash, whether tracked files other than the GENERATED results and docs differ from it), or
    ("unknown", False) outside a git checkout. An experiment that writes several results files stays clean."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *GENERATED],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(status.strip())


def provenance(device: torch.device, command: list[str]) -> dict:
    """Where, when and how a measurement was made: device, versions, commit, date, the command line, and
    how busy the machine was (on a shared machine other work slows every number)."""
    commit, dirty = git_commit()
    return {"device": describe_device(device), "torch": torch.__version__, "python": platform.python_version(),
            "git_commit": commit, "git_dirty": dirty, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(command),
            "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def optional(value: float | None, spec: str) -> str:
    """value formatted with spec, or a dash for None (a table cell that does not apply)."""
    return "—" if value is None else format(value, spec)


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """The lines of a markdown table, one per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def write_results(results: dict, path: Path) -> Path:
    """Write results as JSON to path atomically (a crash never leaves half a file for the report)."""
    write_atomically(Path(path), (json.dumps(results, indent=1) + "\n").encode("utf-8"))
    print(f"wrote {display_path(path)}", flush=True)
    return Path(path)
