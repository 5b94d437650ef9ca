"""
Where a training run ends and when it evaluates: after --max-iters steps, or when its --time-budget is
spent. train.py asks a Horizon three things each step: is this the last step, is an evaluation due, and
how many steps the learning-rate schedule should plan for.

    uv run train.py --time-budget 10m      # also 30s, 1h or plain seconds

A time budget counts the whole process: start-up, loading the data, every evaluation and save, the
final evaluation of best.pt on the whole val split and the sample printed at the end. The schedule
follows it: each step the planned number of steps is re-estimated as the steps taken plus the seconds
left over this invocation's pace, so a slower machine (or a busier minute) still warms up, decays to
--min-lr and stops on time. The seconds the end of the run will take (the reserve) are measured as
the run goes: the evaluations' cost per window, a save, and a few decoding steps.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from machinery import distributed

LONGEST_BUDGET_S = 7 * 24 * 3600  # a week: anything longer is a typo (1e9h), not a plan
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
EVALUATIONS_PER_BUDGET = 10  # with a budget and no --eval-interval: evaluate at each tenth of it
IMPORTED_AT = time.monotonic()


def parse_duration(text: str) -> float:
    """argparse type for --time-budget: "30s", "10m", "1h" or plain seconds ("90"), more than 0 and at most a
    week. Returns seconds."""
    match = re.fullmatch(r"\s*([+-]?\d+(?:\.\d*)?|[+-]?\.\d+)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write it as 30s, 10m, 1h or plain seconds")
    seconds = float(match[1]) * UNITS[match[2]]
    if not 0 < seconds <= LONGEST_BUDGET_S:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds and at most a week (168h)")
    return seconds


def format_budget(seconds: float) -> str:
    """600 -> "10m", 3600 -> "1h", 90 -> "90s": the way --time-budget is written."""
    for unit in ("h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{seconds / UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def age_at_import() -> float:
    """Seconds from this process's start to the import of this module (Linux: from /proc, so Python's and
    PyTorch's start-up count); 0 elsewhere, where the import, early in train.py's start-up, is the start."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of proc(5), starttime: clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK")) - (time.monotonic() - IMPORTED_AT)
    except (OSError, ValueError, IndexError):
        return 0.0


AGE_AT_IMPORT = age_at_import()


def process_age() -> float:
    """Seconds since this process started: its start-up (read once, age_at_import), then the monotonic clock,
    which a change of the system's time does not move."""
    return AGE_AT_IMPORT + time.monotonic() - IMPORTED_AT


class Horizon:
    """The end of the run. With max_iters only: that many steps, evaluating every eval_interval. With a
    time budget (seconds, of which spent_before went to earlier invocations of a resumed run): the step
    after which no other step fits, evaluating at each tenth of the budget (or every eval_interval steps
    if that is set); max_iters, if set too, still caps the steps. Every process must call update() at
    every step: the processes agree on the time (its mean), so they stop and evaluate at the same step."""

    def __init__(self, max_iters: int | None, eval_interval: int | None, seconds: float | None = None,
                 spent_before: float = 0.0, world: int = 1, device: torch.device | None = None,
                 age: Callable[[], float] = process_age):
        self.max_iters, self.eval_interval, self.seconds = max_iters, eval_interval, seconds
        self.spent_before, self.world, self.device, self.age = spent_before, world, device, age
        self.spent = spent_before + (age() if seconds else 0.0)  # agreed between processes at each update
        self.pace = 0.0  # seconds per step of this invocation, evaluations included
        self.reserve = 0.0  # what the end of the run will take: see note_eval, note_save, note_decoding
        self.eval_s_per_window = self.save_s = self.decode_s_per_token = 0.0
        self.eval_windows = self.final_windows = self.sample_tokens = 0
        self.next_eval_at = spent_before  # in seconds of the budget
        self.eval_now = True
        self.out_of_time = False  # no other step fits: the run ends, and its checkpoints count the budget spent

    @property
    def timed(self) -> bool:
        return self.seconds is not None

    def update(self, step: int, seconds_per_step: float) -> None:
        """Read the clock (agreed between processes) before the step: the time spent, the pace, the reserve."""
        if not self.timed:
            return
        measured = torch.tensor([self.spent_before + self.age(), seconds_per_step, self.reserve_estimate()],
                                dtype=torch.float64, device=self.device)
        self.spent, self.pace, self.reserve = distributed.mean_across(measured, self.world).tolist()
        self.out_of_time = self.pace > 0 and self.left() < self.pace
        self.eval_now = self.eval_interval is None and self.spent >= self.next_eval_at
        if self.eval_now:
            tenth = self.seconds / EVALUATIONS_PER_BUDGET
            self.next_eval_at = (math.floor(self.spent / tenth) + 1) * tenth

    def left(self) -> float:
        """Seconds of the budget left for training steps (the reserve kept back)."""
        return self.seconds - self.spent - self.reserve

    def total_steps(self, step: int) -> int:
        """The steps the schedule plans for: max_iters, or with a budget the steps that fit in it at this pace."""
        if not self.timed:
            return self.max_iters
        planned = step + (max(0, math.floor(self.left() / self.pace)) if self.pace else 1_000_000)
        return min(planned, self.max_iters) if self.max_iters else planned

    def is_last(self, step: int) -> bool:
        """Whether the run has taken its last step: max_iters reached, or no other step fits in the budget."""
        if self.max_iters is not None and step >= self.max_iters:
            return True
        return self.out_of_time

    def eval_due(self, step: int) -> bool:
        if self.eval_interval is not None:
            return step % self.eval_interval == 0
        return self.eval_now

    def seconds_left(self, step: int, seconds_per_step: float) -> float:
        """Until the run ends: the budget's rest, or the steps left at this pace."""
        if self.timed:
            return max(0.0, self.seconds - self.spent)
        return seconds_per_step * max(0, self.max_iters - step)

    def spent_now(self) -> float:
        """This process's own reading of the budget's clock."""
        return self.spent_before + self.age()

    def spent_to_save(self) -> float:
        """What a checkpoint records as spent: the whole budget once the run is out of time (the rest of it
        goes to the end of the run), so resuming a finished run has nothing to do."""
        return self.seconds if self.out_of_time else self.spent_now()

    # What the end of a timed run costs, measured as it goes (each is a mean over processes in update()).

    def note_eval(self, seconds_per_window: float, windows: int) -> None:
        """An evaluation of windows (on this process) cost seconds_per_window: the latest one's cost counts."""
        self.eval_s_per_window, self.eval_windows = seconds_per_window, windows

    def note_save(self, seconds: float) -> None:
        self.save_s = max(self.save_s, seconds)

    def note_decoding(self, seconds_per_token: float, sample_tokens: int, final_windows: int) -> None:
        self.decode_s_per_token, self.sample_tokens = seconds_per_token, sample_tokens
        self.final_windows = final_windows

    def reserve_estimate(self) -> float:
        """The last evaluation with its two saves, best.pt loaded and evaluated on the whole val split, best.pt
        loaded again and the sample; a quarter more, and 2 s for the plot and the exit, for a shared machine's noise."""
        evaluations = self.eval_s_per_window * (self.eval_windows + self.final_windows)
        end = evaluations + 4 * self.save_s + self.decode_s_per_token * self.sample_tokens
        return 1.25 * end + 2.0


def seconds_once_warm(work: Callable[[], object]) -> float:
    """Seconds that work() takes the second time it runs: the first pays for its first calls, which a fresh
    process makes slowly (a first evaluation was measured at 30x the warm cost per window)."""
    work()
    started = time.time()
    work()
    return time.time() - started


def time_decoding(model: torch.nn.Module, device: torch.device, tokens: int = 8) -> float:
    """Seconds per token of sampling from model at batch 1 with the KV cache (a few tokens, timed): what
    the sample at the end of a run will cost."""
    from generate import generate_tokens

    was_training = model.training
    model.eval()
    idx = torch.zeros((1, 1), dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    seconds = seconds_once_warm(lambda: list(generate_tokens(model, idx, tokens, generator=generator))) / tokens
    model.train(was_training)
    return seconds
