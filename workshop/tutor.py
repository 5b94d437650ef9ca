"""
The tutor's vocabulary: what an exercise is, what a known mistake is, and the helpers every check uses
to run the learner's code and say, in the learner's terms, what is wrong with it.

A check is a function check(module) that receives the learner's imported exercise file and raises
Failure when something is wrong. It gets the learner's function or class with `require`, runs it with
`call` (so an exception, an argument changed in place, NaN or a wrong return type becomes one sentence
instead of a traceback), and judges the result against the project's own code with `diagnose` (a
function) or `diagnose_module` (a class): they name the known mistake the output matches, if any, and
otherwise say where the output first differs (`compare`). Checks run in float64, where the reference and
a right answer agree to about 1e-15, so the tolerance can be tight and a near miss is a real mistake.

One rule decides whether two outputs agree (`matches`): the same structure, shape and dtype, the same
non-finite positions, and torch.isclose everywhere else with atol/rtol from `tolerance`.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

# Tight for float64 (a right answer agrees to ~1e-15); float32 needs room for its ~1e-7 rounding.
TOLERANCES = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-5, 1e-4), torch.float16: (1e-3, 1e-3),
              torch.bfloat16: (1e-2, 1e-2)}


class Failure(Exception):
    """A check's verdict: what is wrong, in the learner's terms (shapes, positions, which formula)."""


@dataclass(frozen=True)
class Mistake:
    """A known way to get an exercise wrong, recognised by running a wrong variant on the same inputs."""

    name: str  # what the learner did, e.g. "scaled by the model width instead of the head size"
    hint: str  # what to look at to see it
    wrong: Callable[..., Any]  # the wrong variant, with the learner's signature (a function, or a class)
    source: str | None = None  # where the mistake is documented (a URL or citation), when there is one


@dataclass(frozen=True)
class Exercise:
    """One step of the workshop: a blank file the learner fills in, and the check that judges it."""

    number: int  # 1..13, the order of the learning path
    name: str  # short id, e.g. "attention"; the blank is workshop/exercises/{number:02d}_{name}.py
    title: str
    chapter: str  # its learning-path chapter, e.g. "docs/learn/03-attention.md"
    reference: tuple[str, ...]  # the project's code it mirrors, "model.py:attention", "model.py:KVCache.update"
    hints: tuple[str, ...]  # given one at a time by `uv run workshop.py hint N`
    check: Callable[[ModuleType], None]  # receives the learner's imported module; raises Failure
    mistakes: tuple[Mistake, ...] = ()

    @property
    def filename(self) -> str:
        """The exercise's file name, the same in workshop/exercises/ and in the learner's folder."""
        return f"{self.number:02d}_{self.name}.py"


def tolerance(dtype: torch.dtype, atol: float | None = None, rtol: float | None = None) -> tuple[float, float]:
    """(atol, rtol) for comparing values of this dtype: the given ones, or the defaults in TOLERANCES
    (integers and booleans are compared exactly)."""
    default_atol, default_rtol = TOLERANCES.get(dtype, (0.0, 0.0))
    return (default_atol if atol is None else atol), (default_rtol if rtol is None else rtol)


def _file_of(module: ModuleType) -> str:
    file = getattr(module, "__file__", None)
    return _short(file) if file else getattr(module, "__name__", "your file")


def _short(path: str) -> str:
    """path relative to the working directory when it is inside it: the form a learner types."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def require(module: ModuleType, name: str, kind: str = "function", signature: str = "") -> Any:
    """module.name, which must be a function (kind "function") or a class (kind "class"); otherwise
    Failure("write `name(signature)` in <file>: it is missing"). signature, e.g. "(q, k, v, mask)", only
    makes the message more helpful."""
    if kind not in ("function", "class"):
        raise ValueError(f"kind must be 'function' or 'class', not {kind!r}")
    where = _file_of(module)
    if not hasattr(module, name):
        raise Failure(f"write `{name}{signature}` in {where}: it is missing")
    value = getattr(module, name)
    if kind == "class" and not isinstance(value, type):
        raise Failure(f"`{name}` in {where} should be a class, but it is {_describe(value)}")
    if kind == "function" and (isinstance(value, type) or not callable(value)):
        raise Failure(f"`{name}` in {where} should be a function, but it is {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    kind = type(value).__name__
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _source_file(fn: Any) -> str | None:
    try:
        return os.path.realpath(inspect.getsourcefile(inspect.unwrap(fn)) or "")
    except (TypeError, OSError):
        return None


def _learner_line(tb, fn: Any) -> str | None:
    """file:line of the last traceback frame in the learner's file (the file fn was defined in), or else of
    the last frame outside the workshop package (tutor, checks), the standard library and the installed
    libraries: where the learner should look."""
    frames = traceback.extract_tb(tb)
    ours = os.path.dirname(os.path.realpath(__file__))
    learner_file = _source_file(fn)
    in_learner = [f for f in frames if learner_file and not learner_file.startswith(ours)
                  and os.path.realpath(f.filename) == learner_file]
    if not in_learner:
        libraries = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(torch.__file__))}
        in_learner = [f for f in frames
                      if not os.path.realpath(f.filename).startswith((ours, *libraries))
                      and not f.filename.startswith("<")]
    if not in_learner:
        return None
    frame = in_learner[-1]
    return f"{_short(frame.filename)}:{frame.lineno}"


def _tensors_in(values: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensor arguments by name, including those one level inside a tuple or list (e.g. rope=(cos, sin))."""
    found = {}
    for name, value in values.items():
        if isinstance(value, torch.Tensor):
            found[name] = value
        elif isinstance(value, (tuple, list)):
            found.update({f"{name}[{i}]": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)})
    return found


def _argument_names(fn: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The arguments by the names fn gives them (positional ones as arg0, arg1 where that fails)."""
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs)
        return dict(bound.arguments)
    except (TypeError, ValueError):
        return {**{f"argument {i + 1}": a for i, a in enumerate(args)}, **kwargs}


def call(fn: Callable[..., Any], *args: Any, returns: type | tuple[type, ...] | None = None,
         allow_inf: bool = False, **kwargs: Any) -> Any:
    """fn(*args, **kwargs): the learner's function (or class, to construct it), run so that whatever goes
    wrong becomes one Failure naming the function and the learner's line, never a traceback:

    - an exception it raises (NotImplementedError: "<name> is not written yet: <its message>");
    - a tensor argument it changed in place (each is cloned before and compared after);
    - a return value that is not of type `returns`, when given (a type or a tuple of types);
    - NaN in a tensor it returns (or in a tuple of tensors), and +-inf unless allow_inf (e.g. masked logits).

    `returns` and `allow_inf` are the tutor's own keywords; every other keyword goes to fn.
    """
    return _run_learner(fn, args, kwargs, _name_of(fn), fn, returns, allow_inf)


def _run_learner(fn: Callable[..., Any], args: tuple, kwargs: dict, name: str, blame: Any,
                 returns: type | tuple[type, ...] | None = None, allow_inf: bool = False) -> Any:
    """call's work; messages say `name`, and an exception's line is looked for in blame's file."""
    named = _argument_names(fn, args, kwargs)
    before = {arg: t.detach().clone() for arg, t in _tensors_in(named).items()}
    try:
        result = fn(*args, **kwargs)
    except Failure:
        raise
    except NotImplementedError as error:
        raise Failure(f"{name} is not written yet: {error}".rstrip(": ")) from None
    except Exception as error:  # the learner's code may raise anything: each becomes one sentence
        where = _learner_line(error.__traceback__, blame)
        message = f"{name} raised {type(error).__name__}: {error}"
        raise Failure(message + (f" (at {where})" if where else "")) from None
    after = _tensors_in(named)
    for arg, old in before.items():
        new = after[arg].detach()
        if new.shape != old.shape or not torch.equal(new, old):
            raise Failure(f"{name} changed its argument `{arg}` in place: compute a new tensor instead "
                          f"(an in-place operation such as `+=`, `.mul_()` or `x[...] = ...` on an input "
                          f"changes the caller's tensor too)")
    if returns is not None and not isinstance(result, returns):
        expected = " or ".join(f"a {t.__name__}" for t in (returns if isinstance(returns, tuple) else (returns,)))
        raise Failure(f"{name} should return {expected}, but it returned {_describe(result)}")
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    for i, out in enumerate(outputs):
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            which = f"output {i + 1} of {name}" if len(outputs) > 1 else f"the output of {name}"
            if torch.isnan(out).any():
                raise Failure(f"{which} contains NaN at index {_index(torch.isnan(out))}: look for 0/0, "
                              f"inf - inf, or a row the mask hides completely")
            if not allow_inf and torch.isinf(out).any():
                raise Failure(f"{which} contains inf at index {_index(torch.isinf(out))}")
    return result


def _index(where: torch.Tensor) -> tuple[int, ...] | str:
    """The index of the first True element of a boolean tensor, as a tuple (or "the value" for 0-d)."""
    if where.dim() == 0:
        return "the value"
    return tuple(int(i) for i in where.nonzero()[0])


def _mismatch(got: Any, expected: Any, what: str, atol: float | None, rtol: float | None) -> str | None:
    """Why got differs from expected, in one sentence, or None when they agree: the one matching rule."""
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{what}: expected a tuple of {len(expected)}, got {_describe(got)}"
        if len(got) != len(expected):
            return f"{what}: expected {len(expected)} values, got {len(got)}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            reason = _mismatch(g, e, f"{what}[{i}]", atol, rtol)
            if reason:
                return reason
        return None
    if not isinstance(expected, torch.Tensor):
        if isinstance(expected, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
            a, r = tolerance(torch.float64, atol, rtol)
            return None if math.isclose(got, expected, rel_tol=r, abs_tol=a) else \
                f"{what}: expected {expected!r}, got {got!r}"
        return None if got == expected else f"{what}: expected {expected!r}, got {got!r}"
    if not isinstance(got, torch.Tensor):
        return f"{what}: expected a tensor of shape {tuple(expected.shape)}, got {_describe(got)}"
    if got.shape != expected.shape:
        return f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
    if got.dtype != expected.dtype:
        return f"{what}: expected dtype {expected.dtype}, got {got.dtype}"
    got, expected = got.detach().cpu(), expected.detach().cpu()
    if not expected.is_floating_point():
        wrong = got != expected
        if not wrong.any():
            return None
        at = _index(wrong)
        right = 1 - wrong.double().mean().item()
        return (f"{what} is wrong at index {at}: expected {_value(expected, at)}, got {_value(got, at)} "
                f"({right:.0%} of the values are right)")
    for kind, test in (("NaN", torch.isnan), ("inf", torch.isposinf), ("-inf", torch.isneginf)):
        extra = test(got) & ~test(expected)
        if extra.any():
            at = _index(extra)
            return f"{what} has {kind} at index {at}, where {_value(expected, at)} was expected"
    a, r = tolerance(expected.dtype, atol, rtol)
    close = torch.isclose(got, expected, atol=a, rtol=r, equal_nan=True)
    if close.all():
        return None
    at = _index(~close)
    right = close.double().mean().item()
    finite = torch.isfinite(got) & torch.isfinite(expected)
    largest = (got - expected)[finite].abs().max().item() if finite.any() else float("inf")
    return (f"{what} is wrong at index {at}: expected {_value(expected, at)}, got {_value(got, at)}; "
            f"{right:.1%} of the values are right, the largest difference is {largest:.3g}")


def _value(t: torch.Tensor, at: tuple[int, ...] | str) -> str:
    value = t.item() if at == "the value" else t[at].item()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def matches(got: Any, expected: Any, atol: float | None = None, rtol: float | None = None) -> bool:
    """Whether got agrees with expected under the tutor's one rule (see `compare`)."""
    return _mismatch(got, expected, "", atol, rtol) is None


def compare(got: Any, expected: Any, what: str = "the output", atol: float | None = None,
            rtol: float | None = None) -> None:
    """Raise Failure unless got agrees with expected: tensors (or tuples/lists of them, or plain values).

    Checked in order, each with its own message: the shape ("expected shape (2, 3, 7, 8), got (2, 7, 3, 8)"),
    the dtype, NaN/inf where the expected value is finite, then the values: the index of the first wrong
    element with expected and got, the fraction of values that are right and the largest difference.
    Tolerances default to `tolerance(expected.dtype)`: atol 1e-10, rtol 1e-8 in float64.
    """
    reason = _mismatch(got, expected, what, atol, rtol)
    if reason:
        raise Failure(reason)


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(_clone(v) for v in value)
    return value


def _mistake_failure(mistake: Mistake, what: str) -> Failure:
    """The one way every exercise names a recognised mistake."""
    lines = [f"{what} is what you get if you {mistake.name}.", f"  hint: {mistake.hint}"]
    if mistake.source:
        lines.append(f"  see: {mistake.source}")
    return Failure("\n".join(lines))


def _mistake_output(produce: Callable[[Mistake], Any], mistake: Mistake) -> Any | None:
    """A wrong variant's output, or None when the variant itself fails on these inputs."""
    try:
        return produce(mistake)
    except Exception:  # a variant that cannot run on these inputs simply does not match
        return None


def _name_mistake(got: Any, expected: Any, mistakes: tuple[Mistake, ...] | list[Mistake],
                  produce: Callable[[Mistake], Any], what: str, atol: float | None, rtol: float | None) -> None:
    """Raise the Failure naming the first mistake whose output got matches (and expected does not)."""
    for mistake in mistakes:
        wrong = _mistake_output(produce, mistake)
        if wrong is not None and matches(got, wrong, atol, rtol) and not matches(expected, wrong, atol, rtol):
            raise _mistake_failure(mistake, what)


def diagnose(got: Any, expected: Any, mistakes: tuple[Mistake, ...] | list[Mistake], *args: Any,
             what: str = "the output", atol: float | None = None, rtol: float | None = None, **kwargs: Any) -> None:
    """Return if got agrees with expected; otherwise raise a Failure that names the known mistake got
    matches, with its hint and source, or else compare's Failure (where the output first differs).

    args and kwargs are the inputs got was computed from: each mistake's `wrong(*args, **kwargs)` runs on
    (clones of) them. A mistake whose variant raises, or agrees with expected on these inputs, is skipped.
    """
    if matches(got, expected, atol, rtol):
        return
    _name_mistake(got, expected, mistakes, lambda m: m.wrong(*_clone(args), **_clone(kwargs)), what, atol, rtol)
    compare(got, expected, what, atol, rtol)


def diagnose_module(learner_cls: type, mistakes: tuple[Mistake, ...] | list[Mistake],
                    build: Callable[[type], Any], run: Callable[[Any], Any], expected: Any,
                    what: str = "the output", atol: float | None = None, rtol: float | None = None) -> Any:
    """diagnose for a class exercise: judge learner_cls by what a module built from it computes.

    build(cls) constructs a module from a class with the learner's signature and gives it known weights
    (typically: build the reference, build cls the same way, load_state_dict the reference's weights,
    .double(), .eval()); run(module) returns its output on fixed inputs. expected is run(build(reference)).
    Building and running the learner's class go through `call`, so an exception or NaN is one Failure;
    each mistake (its `wrong` is a class) is built and run the same way. Returns the learner's output.
    """
    name = learner_cls.__name__
    module = _run_learner(build, (learner_cls,), {}, name, learner_cls)
    got = _run_learner(run, (module,), {}, name, learner_cls)
    if matches(got, expected, atol, rtol):
        return got
    _name_mistake(got, expected, mistakes, lambda m: run(build(m.wrong)), what, atol, rtol)
    compare(got, expected, what, atol, rtol)
    return got


def exercise_path(folder: Path | str, exercise: Exercise) -> Path:
    """Where an exercise's file is in a folder (the blanks' or the learner's)."""
    return Path(folder) / exercise.filename
