"""
The process that runs the learner's code for workshop.py: it imports torch once, then answers one request
per line on stdin ({"catalogue": "module:NAME", "number": N, "file": path}) with one JSON line
({"passed": bool, "message": str, "printed": str}) on its own channel, after a first line {"ready": true}
once torch is imported.

It is a separate process so that nothing the learner's file does (a syntax error, an endless loop, a
crash, exit()) can reach the runner: the runner gives each check a time limit and starts a new worker when
one has to be stopped. What the learner's code prints is collected and sent back, never mixed into the
answers (the answers go to a copy of the original stdout; the learner's stdout and stderr are captured).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from workshop.tutor import Exercise, Failure

# What a printing learner sends back: enough to see what was printed, never a flood.
MAX_PRINTED_CHARS = 2000


def find_exercise(catalogue: str, number: int) -> Exercise:
    """The exercise numbered `number` in the catalogue named "module:ATTRIBUTE"."""
    module_name, _, attribute = catalogue.partition(":")
    exercises = getattr(importlib.import_module(module_name), attribute or "EXERCISES")
    return next(e for e in exercises if e.number == number)


def _where_in(error: BaseException, path: Path) -> str | None:
    """file:line of the last traceback frame in the learner's file, if any."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.realpath(f.filename) == str(path)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None


def import_learner_file(path: Path, exercise: Exercise) -> ModuleType:
    """Import the learner's file afresh (it may have changed since the last check); Failure if it cannot be."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise Failure(f"cannot read {path}: {error}") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        line = (error.text or "").strip()
        shown = f": {line}" if line else ""
        raise Failure(f"{path}:{error.lineno}: {type(error).__name__}: {error.msg}{shown}") from None
    module = ModuleType(f"mywork_{exercise.number:02d}_{exercise.name}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # dataclasses and pickling look a class's module up here
    try:
        exec(code, module.__dict__)
    except Exception as error:  # anything the file does at import is the learner's to fix
        where = _where_in(error, path.resolve())
        raise Failure(f"{path} could not be imported: {type(error).__name__}: {error}"
                      + (f" (at {where})" if where else "")) from None
    return module


def check_file(catalogue: str, number: int, file: str) -> dict:
    """Run exercise `number`'s check on the learner's file; the verdict as a JSON-ready dict."""
    exercise = find_exercise(catalogue, number)
    path = Path(file)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            exercise.check(import_learner_file(path, exercise))
        passed, message = True, ""
    except Failure as failure:
        passed, message = False, str(failure)
    except SystemExit:
        passed, message = False, f"{path} called exit(): a check needs the function to return"
    except Exception as error:  # the check met something it did not expect, usually from the learner's code
        where = _where_in(error, path.resolve())
        message = (f"your code raised {type(error).__name__}: {error} (at {where})" if where else
                   f"the check of exercise {number} could not finish: {type(error).__name__}: {error}")
        passed = False
    text = printed.getvalue()
    if len(text) > MAX_PRINTED_CHARS:
        text = text[:MAX_PRINTED_CHARS] + f"\n... ({len(text) - MAX_PRINTED_CHARS} more characters)"
    return {"passed": passed, "message": message, "printed": text}


def main() -> None:
    """Answer check requests until stdin closes."""
    channel = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)  # output written below Python's print (C extensions, os.write) cannot reach the channel
    import torch  # noqa: F401  imported once here, before the first request, so each check is quick

    channel.write(json.dumps({"ready": True}) + "\n")  # the runner's time limit starts with the first request
    for line in sys.stdin:
        request = json.loads(line)
        answer = check_file(request["catalogue"], request["number"], request["file"])
        channel.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
