"""
What `uv run workshop.py` does: keep the learner's folder (the blanks copied on first use, and a state file
with what passed and how many hints were given), check exercises in a worker process with a time limit,
and show progress, hints, where the reference solution is, and reset a file to its blank.

Every command takes the exercise list (the catalogue, named "module:ATTRIBUTE" so the worker process can
import it too) and the folder of blanks, so the tests can run the same code on a small made-up workshop.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from machinery.guards import ArgumentParser
from workshop.tutor import Exercise

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = "workshop.catalogue:EXERCISES"
BLANKS = ROOT / "workshop" / "exercises"
DEFAULT_DIR = "mywork"
STATE_FILE = ".workshop-state.json"
TIME_LIMIT_S = 30.0
WORKER_START_S = 120  # importing torch on a busy laptop
WATCH_POLL_S = 0.5
BAR_WIDTH = 40


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2."""


def load_catalogue(catalogue: str) -> list[Exercise]:
    """The exercises of the catalogue "module:ATTRIBUTE", in order (imported only when a command needs them)."""
    module_name, _, attribute = catalogue.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise UsageError(f"the exercises are not installed: {module_name} is missing") from None
    return sorted(getattr(module, attribute or "EXERCISES"), key=lambda e: e.number)


# ----------------------------------------------------------------------------------------------------
# The learner's folder and its state


class Workbench:
    """The learner's folder: their copies of the exercises and the state file beside them."""

    def __init__(self, folder: Path, exercises: Sequence[Exercise], blanks: Path):
        self.folder, self.exercises, self.blanks = Path(folder), list(exercises), Path(blanks)
        self.state_path = self.folder / STATE_FILE
        self.state = {"results": {}, "hints": {}}
        if self.state_path.exists():
            try:
                self.state.update(json.loads(self.state_path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                pass  # a damaged state file only costs re-checking and the hint count

    @classmethod
    def open(cls, folder: Path, exercises: Sequence[Exercise], blanks: Path) -> Workbench:
        """The folder, created with a copy of every blank it does not hold yet (an existing file is never
        overwritten, so new exercises arrive and the learner's work stays)."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"{folder} is a file, not a folder for your exercises")
        if not folder.exists():
            if not folder.parent.is_dir():
                raise UsageError(f"cannot make {folder}: there is no folder {folder.parent}")
            folder.mkdir()
            print(f"Made {folder}/ with a blank copy of each exercise: your work goes there.")
        for exercise in exercises:
            target = folder / exercise.filename
            if not target.exists():
                shutil.copyfile(blanks / exercise.filename, target)
        return cls(folder, exercises, blanks)

    def path(self, exercise: Exercise) -> Path:
        return self.folder / exercise.filename

    def get(self, number: int) -> Exercise:
        """The exercise numbered `number`; UsageError for a number the workshop does not have."""
        for exercise in self.exercises:
            if exercise.number == number:
                return exercise
        numbers = [e.number for e in self.exercises]
        raise UsageError(f"there is no exercise {number}: the workshop has exercises {min(numbers)} to {max(numbers)}")

    def fingerprint(self, exercise: Exercise) -> str:
        """A hash of the learner's file: a recorded result holds only while the file is unchanged."""
        return hashlib.sha256(self.path(exercise).read_bytes()).hexdigest()

    def recorded(self, exercise: Exercise) -> bool | None:
        """Whether the exercise passed when it was last checked, or None if its file changed since."""
        result = self.state["results"].get(str(exercise.number))
        if result is None or result["fingerprint"] != self.fingerprint(exercise):
            return None
        return result["passed"]

    def record(self, exercise: Exercise, passed: bool) -> None:
        self.state["results"][str(exercise.number)] = {"passed": passed, "fingerprint": self.fingerprint(exercise)}
        self.save()

    def hints_given(self, exercise: Exercise) -> int:
        return self.state["hints"].get(str(exercise.number), 0)

    def give_hint(self, exercise: Exercise) -> None:
        self.state["hints"][str(exercise.number)] = self.hints_given(exercise) + 1
        self.save()

    def save(self) -> None:
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.state, indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, self.state_path)  # a Ctrl-C mid-write never leaves half a state file


# ----------------------------------------------------------------------------------------------------
# Checking, in a worker process with a time limit


class Checker:
    """Checks exercises in one worker process (torch imported once), restarted when a check overruns."""

    def __init__(self, catalogue: str, time_limit_s: float = TIME_LIMIT_S):
        self.catalogue, self.time_limit_s = catalogue, time_limit_s
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        # The worker must import what this process can (the catalogue may live anywhere on sys.path).
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *(p for p in sys.path if p)])}
        process = subprocess.Popen([sys.executable, "-m", "workshop.worker"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        ready, _, _ = select.select([process.stdout], [], [], WORKER_START_S)
        if not ready or not process.stdout.readline():
            process.kill()
            process.wait()
            raise UsageError(f"the checking process did not start within {WORKER_START_S} s")
        return process

    def check(self, exercise: Exercise, path: Path) -> dict:
        """{"passed", "message", "printed"} for the learner's file of this exercise."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        request = {"catalogue": self.catalogue, "number": exercise.number, "file": str(path)}
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self.stop()
            return self.check(exercise, path)
        ready, _, _ = select.select([self.process.stdout], [], [], self.time_limit_s)
        line = self.process.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        finished = self.process.poll() is not None
        self.stop()
        if ready and finished:
            return {"passed": False, "printed": "",
                    "message": f"{path} stopped Python itself (os._exit, or a crash): a check needs it to return"}
        return {"passed": False, "printed": "",
                "message": f"{path} did not finish in {self.time_limit_s:g} s: is there an endless loop?"}

    def stop(self) -> None:
        """End the worker (it is ours: started by _start)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None


def report(exercise: Exercise, path: Path, verdict: dict) -> str:
    """The lines shown for one check."""
    mark = "✓" if verdict["passed"] else "✗"
    lines = [f"{mark} {exercise.number:2d}. {exercise.title}  ({path})"]
    if not verdict["passed"]:
        lines += ["   " + line for line in verdict["message"].splitlines()]
    if verdict["printed"].strip():
        lines.append("   your code printed:")
        lines += ["   | " + line for line in verdict["printed"].rstrip().splitlines()]
    return "\n".join(lines)


def check_and_record(bench: Workbench, checker: Checker, exercise: Exercise, quiet: bool = False) -> bool:
    verdict = checker.check(exercise, bench.path(exercise))
    bench.record(exercise, verdict["passed"])
    if not quiet:
        print(report(exercise, bench.path(exercise), verdict), flush=True)
    return verdict["passed"]


def passed_now(bench: Workbench, checker: Checker, exercise: Exercise) -> bool:
    """Whether the exercise passes: the recorded result, or a fresh check when its file changed."""
    recorded = bench.recorded(exercise)
    return check_and_record(bench, checker, exercise, quiet=True) if recorded is None else recorded


# ----------------------------------------------------------------------------------------------------
# The commands


def show_progress(bench: Workbench, checker: Checker) -> int:
    """Progress bar, each exercise's state, and the next one to do."""
    passed = [passed_now(bench, checker, e) for e in bench.exercises]
    done, total = sum(passed), len(passed)
    filled = BAR_WIDTH * done // total
    bar = "#" * filled + (">" if filled < BAR_WIDTH else "") + "-" * max(0, BAR_WIDTH - filled - 1)
    print(f"Progress: [{bar}] {done}/{total} ({done / total:.0%})\n")
    for exercise, ok in zip(bench.exercises, passed, strict=True):
        print(f"  {'✓' if ok else ' '} {exercise.number:2d}. {exercise.title}")
    upcoming = next((e for e, ok in zip(bench.exercises, passed, strict=True) if not ok), None)
    if upcoming is None:
        print("\nEvery exercise passes. Train a GPT made of your parts: uv run workshop.py capstone")
        return 0
    print(f"\nNext: {upcoming.number}. {upcoming.title}\n  write it in {bench.path(upcoming)}"
          f"\n  read   {upcoming.chapter}\n  then   uv run workshop.py check {upcoming.number}")
    return 0


def check_command(bench: Workbench, checker: Checker, number: int | None) -> int:
    exercises = [bench.get(number)] if number is not None else bench.exercises
    results = [check_and_record(bench, checker, e) for e in exercises]
    if number is None:
        print(f"\n{sum(results)} of {len(results)} exercises pass.")
    elif results[0]:
        following = [e for e in bench.exercises if e.number > number]
        if following:
            print(f"\nNext: uv run workshop.py check {following[0].number}  ({following[0].title})")
    return 0 if all(results) else 1


def watch(bench: Workbench, checker: Checker) -> int:
    """Check the first failing exercise, then again each time any exercise file is saved; Ctrl-C leaves."""
    print("Watching your exercise files: save one to check it again. Ctrl-C to leave.\n")
    mtimes = {}
    try:
        while True:
            changed = False
            for exercise in bench.exercises:
                mtime = bench.path(exercise).stat().st_mtime_ns
                changed |= mtimes.get(exercise.number) != mtime
                mtimes[exercise.number] = mtime
            if changed:
                current = next((e for e in bench.exercises if not passed_now(bench, checker, e)), None)
                if current is None:
                    print("Every exercise passes. Next: uv run workshop.py capstone")
                    return 0
                check_and_record(bench, checker, current)
                print(f"\n(waiting for {bench.path(current)} to be saved)", flush=True)
            time.sleep(WATCH_POLL_S)
    except KeyboardInterrupt:
        print("\nStopped watching.")
        return 0


def hint(bench: Workbench, number: int) -> int:
    """The next hint of an exercise, counting how many were given."""
    exercise = bench.get(number)
    given, total = bench.hints_given(exercise), len(exercise.hints)
    if total == 0:
        print(f"Exercise {number} has no hints; read {exercise.chapter}.")
        return 0
    if given >= total:
        print(f"That was the last hint for exercise {number} ({total} of {total}):\n  {exercise.hints[-1]}\n"
              f"Once it passes, uv run workshop.py solution {number} points at the project's own code.")
        return 0
    bench.give_hint(exercise)
    print(f"Hint {given + 1} of {total} for exercise {number}:\n  {exercise.hints[given]}")
    return 0


def reference_lines(reference: str, root: Path = ROOT) -> str:
    """"model.py:attention" or "model.py:KVCache.update" as "model.py:243-262", found with ast in the
    project's file (so it follows the code as it changes)."""
    file, _, dotted = reference.partition(":")
    path = root / file
    source = path.read_text(encoding="utf-8")
    if not dotted:
        return f"{file}:1-{len(source.splitlines())}"
    scope = ast.parse(source)
    for part in dotted.split("."):
        found = [node for node in ast.iter_child_nodes(scope)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == part]
        if not found:
            raise ValueError(f"{reference}: {file} has no {dotted}")
        scope = found[0]
    start = min([scope.lineno, *(d.lineno for d in scope.decorator_list)])
    return f"{file}:{start}-{scope.end_lineno}"


def solution(bench: Workbench, checker: Checker, number: int, show_anyway: bool) -> int:
    """Where the project's own code for an exercise is, once the exercise passes (or with --show-anyway)."""
    exercise = bench.get(number)
    if not show_anyway and not passed_now(bench, checker, exercise):
        print(f"Exercise {number} does not pass yet, so its solution stays hidden: try "
              f"uv run workshop.py hint {number}, or add --show-anyway.")
        return 1
    print(f"The project's own code for exercise {number} ({exercise.title}):")
    for reference in exercise.reference:
        print(f"  {reference_lines(reference)}  ({reference.partition(':')[2] or 'the whole file'})")
    print(f"Compare it with yours in {bench.path(exercise)}; {exercise.chapter} explains each line.")
    return 0


def reset(bench: Workbench, number: int, yes: bool) -> int:
    """Put the blank exercise back, after asking."""
    exercise = bench.get(number)
    target = bench.path(exercise)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"reset replaces {target} and your work in it; it asks first, so run it in a "
                             f"terminal, or add --yes")
        answer = input(f"Replace {target} with the blank exercise? Your version is lost. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Left as it was.")
            return 1
    shutil.copyfile(bench.blanks / exercise.filename, target)
    bench.state["results"].pop(str(number), None)
    bench.save()
    print(f"{target} is blank again.")
    return 0


def shared_flags(default: object = argparse.SUPPRESS) -> argparse.ArgumentParser:
    """--dir and --time-limit, for the command line and for each command, so they may come before the command
    or after it; a command's own copy defaults to SUPPRESS, so it keeps a value given before the command."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--dir", default=DEFAULT_DIR if default is None else default,
                        help=f"your folder of exercises (default: {DEFAULT_DIR}/)")
    shared.add_argument("--time-limit", type=float, default=TIME_LIMIT_S if default is None else default,
                        help=f"seconds one check may run (default: {TIME_LIMIT_S:g})")
    return shared


def build_parser() -> argparse.ArgumentParser:
    """The command line: a command and its number, --dir and --time-limit before or after it."""
    parser = ArgumentParser(
        prog="workshop.py", parents=[shared_flags(default=None)],
        description="Write a GPT's parts yourself; the tutor checks each one against the project's own code "
                    "(docs/workshop.md).")
    shared = shared_flags()
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("progress", parents=[shared], help="which exercises pass, and the next one (the default)")
    check = commands.add_parser("check", parents=[shared], help="check one exercise, or all; exit 0 only if all pass")
    check.add_argument("number", type=int, nargs="?")
    commands.add_parser("watch", parents=[shared], help="check the current exercise each time you save it")
    for name, text in (("hint", "the next hint for an exercise"),
                       ("solution", "where the project's own code for a passed exercise is"),
                       ("reset", "put the blank exercise back (asks first)")):
        sub = commands.add_parser(name, parents=[shared], help=text)
        sub.add_argument("number", type=int)
        if name == "solution":
            sub.add_argument("--show-anyway", action="store_true", help="before the exercise passes")
        if name == "reset":
            sub.add_argument("--yes", action="store_true", help="do not ask")
    commands.add_parser("capstone", help="train a GPT made of your parts with the project's loop",
                                   add_help=False)
    commands.add_parser("band", help="measure the val loss the project's own parts reach (3 seeds)",
                               add_help=False)
    return parser


def main(argv: list[str] | None = None, catalogue: str = CATALOGUE, blanks: Path = BLANKS) -> int:
    """Run one workshop command; the exit code (2 for bad input, printed as one line)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # capstone and band pass the rest on to their own flags
    if extra and args.command not in ("capstone", "band"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command in ("capstone", "band"):
            from workshop import capstone

            run = capstone.main if args.command == "capstone" else capstone.band_main
            return run(extra, folder=Path(args.dir), catalogue=catalogue)
        if args.time_limit <= 0:
            raise UsageError(f"--time-limit must be more than 0 seconds, not {args.time_limit:g}")
        bench = Workbench.open(Path(args.dir), load_catalogue(catalogue), blanks)
        if args.command in ("hint", "reset"):
            return hint(bench, args.number) if args.command == "hint" else reset(bench, args.number, args.yes)
        checker = Checker(catalogue, args.time_limit)
        try:
            if args.command == "check":
                return check_command(bench, checker, args.number)
            if args.command == "watch":
                return watch(bench, checker)
            if args.command == "solution":
                return solution(bench, checker, args.number, args.show_anyway)
            return show_progress(bench, checker)
        finally:
            checker.stop()
    except UsageError as error:
        print(f"workshop.py: {error}", file=sys.stderr)
        return 2
