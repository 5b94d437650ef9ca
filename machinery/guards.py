"""
What stops a command cleanly instead of with a traceback or a silent wrong result: a bad flag (one
`error:` line, exit 2), stdout's reader going away (`| head`), a loss that turns NaN, a checkpoint that
cannot be written, a signal or a stop asked for. train.py calls each from its loop in one line;
generate.py and the other commands run their main through run_command.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import torch

from machinery.distributed import StopSignal

# train.py's --help is written in lines of up to this many characters; the other commands wrap to the same.
HELP_WIDTH = 104


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's help, wrapped at HELP_WIDTH like train.py's (argparse would take the terminal's width less 2,
    80 without a terminal)."""
    return argparse.HelpFormatter(prog, width=HELP_WIDTH, max_help_position=30)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that a bad flag is reported like every other error here (one `error:` line, exit 2),
    and the help wraps as train.py's does (help_formatter)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", help_formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def silence_closed_stdout() -> None:
    """After a BrokenPipeError (the reader went away: `| head`), send stdout nowhere, so the next print
    and the flush at exit cannot fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_command(run: Callable[[], object]) -> int:
    """Run a command's work; return its exit code: 0, 1 when stdout's reader went away, 2 with one `error:`
    line for anything the user can fix (ValueError, OSError), 130 on Ctrl-C."""
    try:
        run()
    except BrokenPipeError:  # stop quietly
        silence_closed_stdout()
        return 1
    except (ValueError, OSError) as error:
        print("error: " + " ".join(str(error).splitlines()), file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


class TrainingError(Exception):
    """The run cannot go on (its loss diverged, a checkpoint cannot be written); the message says what to do."""


class NothingToDo(Exception):
    """--resume of a run that has already reached its --max-iters."""


def check_not_finished(saved_step: int | None, max_iters: int | None, out_dir: Path, budget_spent: float = 0.0,
                       time_budget: float | None = None) -> None:
    """Raise NothingToDo if the resumed run (saved at saved_step; None: a new run) has no step left: its
    --max-iters taken, or its --time-budget spent."""
    if saved_step is None:
        return
    if max_iters is not None and saved_step >= max_iters:
        raise NothingToDo(f"the run in {out_dir}/ has taken {saved_step} of its {max_iters} steps; "
                          f"pass --max-iters N (more than {saved_step}) to train it further")
    if time_budget is not None and budget_spent >= time_budget:
        raise NothingToDo(f"the run in {out_dir}/ has spent its --time-budget of {time_budget:g} seconds; pass a "
                          f"longer --time-budget (more than {budget_spent:.0f}s) to train it further")


class Log:
    """Prints the run's lines from the main process only; once stdout's reader has gone away (`train.py |
    head`), it prints nothing more and says so through `closed`, which the loop treats as a request to stop."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.closed = False

    def __call__(self, message: str) -> None:
        if self.enabled and not self.closed:
            try:
                print(message, flush=True)
            except BrokenPipeError:  # stop quietly, saving as on Ctrl-C; later prints go nowhere
                silence_closed_stdout()
                self.closed = True


def check_finite_loss(loss: float, kind: str, step: int, lr: float, grad_clip: float, dtype: torch.dtype) -> None:
    """Stop a diverged run at once, before NaN weights reach a checkpoint."""
    if math.isfinite(loss):
        return
    fp16 = ", or --dtype bfloat16 instead of float16" if dtype == torch.float16 else ""
    raise TrainingError(f"the {kind} loss is {loss} at step {step}: training diverged, and nothing from this "
                        f"step on was saved; try a lower --lr (this run: {lr:g}), gradient clipping "
                        f"(--grad-clip 1.0; this run: {grad_clip:g}){fp16}")


FINISHED, EARLY_STOP = "finished", "early stop"  # the reasons to stop that are not interruptions


def stop_reason(last_step: bool, patience: int, evals_without_improvement: int, stop_signal: StopSignal,
                world: int, log: Log, steps_here: int, stop_after_iters: int | None) -> str | None:
    """Why the loop must stop before the next step, or None: its last step is taken (FINISHED), --patience
    evaluations passed without improvement (EARLY_STOP), or an interruption, after which last.pt is saved to
    resume from: a signal (on any rank), stdout closed, --stop-after-iters reached by this invocation. The
    first two are the same on every rank; the signal check is agreed between ranks (StopSignal.requested)."""
    if last_step:
        return FINISHED
    if patience and evals_without_improvement >= patience:
        return EARLY_STOP
    if stop_signal.requested(world, log.closed):
        return "output closed" if log.closed else signal.Signals(stop_signal.signum).name
    if stop_after_iters and steps_here >= stop_after_iters:
        return "stop-after-iters"
    return None


def exit_code_for(stopped_by: str | None) -> None:
    """A run stopped by SIGINT or SIGTERM exits as the shell expects (128 + the signal), so `&&` and
    schedulers see a stopped run."""
    if stopped_by in ("SIGINT", "SIGTERM"):
        raise SystemExit(128 + signal.Signals[stopped_by])


def write_error(error: BaseException, path: Path, step: int, out_dir: Path) -> TrainingError:
    """The one line for a checkpoint that could not be written (a full disk, a folder made read-only)."""
    cause = error if isinstance(error, OSError) or error.__context__ is None else error.__context__
    reason = getattr(cause, "strerror", None) or " ".join(str(cause).split())
    return TrainingError(f"could not write {path} at step {step} ({reason}); the previous checkpoint is kept: "
                         f"make room, then continue with uv run train.py --resume --out-dir {out_dir}")
