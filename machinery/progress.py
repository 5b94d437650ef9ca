"""
How a training run keeps time and shows it: the clock behind the logged timings and the time-left
estimate, a progress line redrawn in place between log lines, durations in words, and the metrics file
(metrics.jsonl, one record per evaluation) with its plot.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from machinery.device import synchronize


def format_seconds(seconds: float) -> str:
    """1h02m, 3m05s or 12s."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Clock:
    """The run's times: elapsed (wall time since the run began, across resumes), the current interval's
    training time (evaluations excluded), and this invocation's pace, which predicts the time left."""

    def __init__(self, start_step: int, elapsed_before: float):
        self.started = self.interval_start = time.time()
        self.start_step, self.elapsed_before = start_step, elapsed_before
        self.first_step_s: float | None = None  # this invocation's first step, torch.compile's work included

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def step_taken(self, device: torch.device) -> None:
        """Note a step; the first one's time is kept (it includes torch.compile's work)."""
        if self.first_step_s is None:
            synchronize(device)
            self.first_step_s = time.time() - self.interval_start

    def end_interval(self, device: torch.device) -> float:
        """The seconds since the interval started, once the device has finished its queued work."""
        synchronize(device)
        return time.time() - self.interval_start

    def start_interval(self) -> None:
        self.interval_start = time.time()

    def seconds_per_step(self, step: int) -> float:
        return (time.time() - self.started) / max(1, step - self.start_step)


class Progress:
    """A one-line progress display, redrawn in place, in a terminal or a notebook (not in plain logs)."""

    def __init__(self, total: int, enabled: bool):
        in_notebook = "ipykernel" in sys.modules
        self.enabled = enabled and (sys.stdout.isatty() or in_notebook)
        self.total = total
        self.last_draw = 0.0

    def update(self, step: int, tokens_per_sec: float, eta: float) -> None:
        if not self.enabled or time.time() - self.last_draw < 0.5:
            return
        self.last_draw = time.time()
        done = int(30 * step / self.total)
        print(f"\r[{'=' * done}{' ' * (30 - done)}] step {step}/{self.total} "
              f"{tokens_per_sec:,.0f} tok/s, {format_seconds(eta)} left ", end="", flush=True)

    def clear(self) -> None:
        if self.enabled:
            print("\r" + " " * 100 + "\r", end="", flush=True)


class MetricsFile:
    """metrics.jsonl: one JSON record per evaluation, written by the main process only."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def start(self, resumed_at: int | None) -> None:
        """A new run starts an empty record; a run resumed at a step keeps the evaluations up to it."""
        if not self.enabled:
            return
        lines = self.path.read_text().splitlines() if resumed_at is not None and self.path.exists() else []
        kept = [line for line in lines if resumed_at is not None and json.loads(line)["step"] <= resumed_at]
        self.path.write_text("".join(line + "\n" for line in kept))

    @contextmanager
    def appended(self, record: dict) -> Iterator[None]:
        """Append record; if the block raises (its checkpoint could not be saved), take the record back, so
        the file holds saved steps only and a resume logs each step once."""
        if not self.enabled:
            yield
            return
        size = self.path.stat().st_size
        with open(self.path, "a") as file:
            file.write(json.dumps(record) + "\n")
        try:
            yield
        except BaseException:
            os.truncate(self.path, size)
            raise


def import_plotting() -> None:
    """Import matplotlib now, if it is installed: 1-3 s measured, which a timed run pays at its start rather
    than at its end, where it keeps back only 2 s for the plot and the process's exit."""
    try:
        import machinery.plots  # noqa: F401
    except ImportError:
        pass


def write_loss_plot(out_dir: Path) -> bool:
    """loss.png from metrics.jsonl, when matplotlib is installed (it is optional); whether it was written."""
    try:
        from machinery.plots import plot_training_curves
    except ImportError:
        print("(loss.png skipped: pip install matplotlib to get it)")
        return False
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    plot_training_curves(records, out_dir / "loss.png")
    return True
