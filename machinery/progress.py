"""
How a training run keeps time and shows it: the clock behind the logged timings and the time-left
estimate, a progress line redrawn in place between log lines, and durations in words.
"""

from __future__ import annotations

import sys
import time


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
