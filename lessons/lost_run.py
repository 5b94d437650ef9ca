"""
Lesson: a lost run. The process is killed with SIGKILL (kill -9: no chance to save anything) in the middle
of training; `train.py --resume` continues from the last checkpoint, and the loss curve goes on as if
nothing had happened.

    uv run python -m lessons.lost_run                   # a small model, 400 steps, killed after step 200's evaluation
    uv run python -m lessons.lost_run --kill-after 300

Three runs of the same command: one left alone (the reference), one killed a moment after the evaluation
at --kill-after, and then that one resumed with --resume. train.py writes a checkpoint atomically at every
evaluation (a temporary file, then a rename), with the optimizer state and every random number generator,
so the resumed run redoes the steps since that checkpoint exactly. The lesson compares the val loss of the
resumed run with the reference's at every evaluation. Each run uses one thread, in float32, so the two are
equal to the last bit on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run lessons/lost_run.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common  # noqa: E402
from lessons import write_plot, write_result  # noqa: E402
from machinery.checkpoint import load_checkpoint  # noqa: E402

SMALL_RUN = ["--preset", "small", "--n-layer", "2", "--n-head", "4", "--n-embd", "64", "--block-size", "64",
             "--batch-size", "16", "--max-iters", "400", "--eval-interval", "25", "--eval-windows", "32",
             "--warmup-iters", "20", "--dtype", "float32", "--device", "cpu", "--sample-tokens", "0"]


def train_command(flags: list[str], out_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", *flags, "--out-dir", common.display_path(out_dir), *extra]


def one_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def val_losses(out_dir: Path) -> dict[int, float]:
    """Step -> val loss from metrics.jsonl; a step logged twice (killed between its record and its checkpoint,
    so evaluated again after the resume) counts by its last record."""
    return {record["step"]: record["val_loss"] for record in common.read_metrics(out_dir / "metrics.jsonl")}


def logged(out_dir: Path, step: int) -> bool:
    """Whether a running train.py has logged its evaluation at step (a line still being written is not yet)."""
    try:
        return step in val_losses(out_dir)
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def kill_after(command: list[str], out_dir: Path, step: int, delay: float) -> int:
    """Start the command, SIGKILL it `delay` seconds after its evaluation at `step` is logged; the step its
    last.pt holds then (what --resume will start from)."""
    process = subprocess.Popen(command, cwd=common.ROOT, env=one_thread_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    while process.poll() is None:
        if logged(out_dir, step):
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            return load_checkpoint(out_dir / "last.pt")["step"]
        time.sleep(0.01)
    raise SystemExit(f"error: the run ended (exit code {process.returncode}) before step {step} was evaluated; "
                     "pass a smaller --kill-after")


def report_lines(result: dict) -> list[str]:
    verdict = "the same" if result["identical"] else "NOT the same"
    return [f"Killed with SIGKILL {result['delay']} s after the evaluation at step {result['killed_after_step']}; "
            f"`--resume` started again from step {result['resumed_from_step']} and trained to step "
            f"{result['final_step']}. At all {result['evaluations']} evaluations its val loss is {verdict} as the "
            f"run that was never killed (largest difference {result['largest_difference']:.1e}).", "",
            f"![val loss of the killed and resumed run over the uninterrupted one](plots/{result['name']}.png)", "",
            f"The command, killed and then run again with `--resume`: `{result['command']}`"]


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Kill a training run with SIGKILL, resume it, compare.")
    parser.add_argument("--kill-after", type=int, default=200, help="the evaluation step to kill after (default: 200)")
    parser.add_argument("--delay", type=float, default=0.05,
                        help="seconds of training after that evaluation before the kill (default: 0.05,"
                             " a few steps at this size: the steps after the checkpoint are lost)")
    parser.add_argument("--train-args", default="", help="more train.py flags, after the lesson's own")
    parser.add_argument("--data", help="passed to train.py (default: Tiny Shakespeare)")
    parser.add_argument("--runs-dir", type=Path, default=common.ROOT / "out" / "lessons" / "lost_run",
                        help="where both runs go (default: out/lessons/lost_run)")
    parser.add_argument("--results-dir", type=Path, help="also write lesson_lost_run.json here")
    parser.add_argument("--docs-dir", type=Path, default=common.DOCS_DIR, help="where plots/ goes (default: docs)")
    args = parser.parse_args(argv)
    flags = [*SMALL_RUN, *(["--data", args.data] if args.data else []), *shlex.split(args.train_args)]
    reference_dir, lost_dir = args.runs_dir / "uninterrupted", args.runs_dir / "killed"
    print("the reference run, left alone", flush=True)
    subprocess.run(train_command(flags, reference_dir, "--overwrite"), cwd=common.ROOT, env=one_thread_env(),
                   check=True, stdout=subprocess.DEVNULL)
    print(f"the same run, killed with SIGKILL after step {args.kill_after}", flush=True)
    resumed_from = kill_after(train_command(flags, lost_dir, "--overwrite"), lost_dir, args.kill_after, args.delay)
    print(f"resumed with --resume from step {resumed_from}", flush=True)
    if resumed_from >= max(val_losses(reference_dir)):  # a fast machine can finish the run within --delay
        raise SystemExit(f"error: the killed run had saved its last step ({resumed_from}) already: nothing was "
                         "lost; pass a smaller --delay")
    subprocess.run(train_command(flags, lost_dir, "--resume"), cwd=common.ROOT, env=one_thread_env(), check=True,
                   stdout=subprocess.DEVNULL)
    reference, resumed = val_losses(reference_dir), val_losses(lost_dir)
    differences = [abs(resumed[step] - reference[step]) for step in reference if step in resumed]
    result = {"name": "lesson_lost_run", "kind": "lesson", "title": "a run killed with kill -9, then resumed",
              "killed_after_step": args.kill_after, "delay": args.delay, "resumed_from_step": resumed_from,
              "final_step": max(resumed), "evaluations": len(reference),
              "identical": set(resumed) == set(reference) and max(differences) == 0.0,
              "largest_difference": max(differences),
              "command": shlex.join(["python", *train_command(flags, lost_dir)[1:]]),
              "val_loss": {"uninterrupted": reference, "killed_and_resumed": resumed}}
    result["report"] = report_lines(result)
    print(result["report"][0])

    def draw(path: Path) -> None:
        from machinery.plots import plot_val_curves

        curves = {name: (list(losses), list(losses.values()), [0.0] * len(losses))
                  for name, losses in result["val_loss"].items()}
        plot_val_curves(curves, path, "a run killed with SIGKILL and resumed, over the one left alone")

    write_plot(result["name"], args.docs_dir, draw)
    if args.results_dir:
        write_result(result, "lost_run", argv, "cpu", args.data, args.results_dir)
    return result


if __name__ == "__main__":
    main()
