"""The workshop's tutor and runner: the helpers every check uses say in one sentence what is wrong (and
which known mistake it is), and `uv run workshop.py` keeps the learner's folder, counts hints, hides the
solution until a pass, asks before a reset, and reports anything the learner's file does (a syntax error,
an endless loop, printing, raising) as one clean message. The runner is tried on a small made-up workshop
written into a temporary folder, so these tests do not depend on the real exercises."""

import re
import textwrap

import pytest
import torch

from workshop import runner, worker
from workshop.tutor import Failure, Mistake, call, compare, diagnose, diagnose_module, require

# ----------------------------------------------------------------------------------------------------
# The helpers


def test_compare_names_the_first_wrong_element_the_fraction_right_and_the_largest_difference():
    expected = torch.arange(12, dtype=torch.float64).view(3, 4)
    got = expected.clone()
    got[1, 2] += 0.5
    got[2, 3] -= 2.0
    with pytest.raises(Failure) as failure:
        compare(got, expected, "the scores")
    message = str(failure.value)
    assert "index (1, 2)" in message and "expected 6, got 6.5" in message
    assert "83.3% of the values are right" in message and "largest difference is 2" in message


def test_compare_reports_the_shape_before_the_values():
    expected = torch.zeros(2, 3, 7, 8, dtype=torch.float64)
    with pytest.raises(Failure, match=r"expected shape \(2, 3, 7, 8\), got \(2, 7, 3, 8\)"):
        compare(expected.transpose(1, 2), expected)


def test_compare_reports_a_dtype_and_a_nan_where_a_number_was_expected():
    expected = torch.ones(4, dtype=torch.float64)
    with pytest.raises(Failure, match="expected dtype torch.float64, got torch.float32"):
        compare(expected.float(), expected)
    got = expected.clone()
    got[3] = float("nan")
    with pytest.raises(Failure, match=r"NaN at index \(3,\)"):
        compare(got, expected)


def test_compare_accepts_float64_rounding_and_masked_infinities_in_the_same_places():
    expected = torch.tensor([1.0, float("-inf"), 3.0], dtype=torch.float64)
    compare(expected + torch.tensor([1e-14, 0.0, -1e-14], dtype=torch.float64), expected)
    with pytest.raises(Failure):
        compare(expected + 1e-6, expected)  # above the float64 tolerance: a real mistake


def double(x):
    return 2 * x


MISTAKES = (Mistake("added instead of multiplied", "look at the operator", lambda x: x + 2, source="chapter 1"),
            Mistake("multiplied by three", "look at the factor", lambda x: 3 * x),
            Mistake("raises on these inputs", "never matches", lambda x: 1 / 0))


def test_diagnose_names_the_mistake_the_output_matches_and_not_another():
    x = torch.tensor([1.0, 5.0], dtype=torch.float64)
    with pytest.raises(Failure) as failure:
        diagnose(3 * x, double(x), MISTAKES, x, what="double(x)")
    message = str(failure.value)
    assert "multiplied by three" in message and "look at the factor" in message
    assert "added instead" not in message
    with pytest.raises(Failure, match="added instead of multiplied.*\n.*operator\n.*see: chapter 1"):
        diagnose(x + 2, double(x), MISTAKES, x, what="double(x)")


def test_diagnose_says_where_an_unknown_mistake_differs_and_is_silent_on_a_right_answer():
    x = torch.tensor([1.0, 5.0], dtype=torch.float64)
    diagnose(double(x), double(x), MISTAKES, x)
    with pytest.raises(Failure, match=r"wrong at index \(0,\)") as failure:
        diagnose(x - 7, double(x), MISTAKES, x)
    assert "multiplied" not in str(failure.value)


class Scale(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.weight


class ScaleTwice(Scale):
    def forward(self, x):
        return x * self.weight * self.weight


def test_diagnose_module_loads_the_same_weights_and_names_a_wrong_class():
    def build(cls):
        module = cls(3).double()
        module.load_state_dict({"weight": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)})
        return module

    def run(module):
        return module(torch.ones(2, 3, dtype=torch.float64))

    expected = run(build(Scale))
    mistakes = (Mistake("used the weight twice", "one weight per channel", ScaleTwice),)
    assert torch.equal(diagnose_module(Scale, mistakes, build, run, expected), expected)
    with pytest.raises(Failure, match="used the weight twice"):
        diagnose_module(ScaleTwice, mistakes, build, run, expected)


def test_call_turns_a_blank_an_exception_an_in_place_change_and_a_wrong_type_into_failures():
    x = torch.ones(3, dtype=torch.float64)

    def blank(x):
        raise NotImplementedError("compute the softmax of each row")

    def broken(x):
        return x[7]

    def in_place(x):
        x += 1
        return x

    with pytest.raises(Failure, match="blank is not written yet: compute the softmax of each row"):
        call(blank, x)
    with pytest.raises(Failure, match=r"broken raised IndexError: .* \(at tests/test_workshop_runner.py:\d+\)"):
        call(broken, x)
    with pytest.raises(Failure, match="in_place changed its argument `x` in place"):
        call(in_place, x)
    with pytest.raises(Failure, match="should return a Tensor, but it returned a list"):
        call(lambda x: [1, 2], x, returns=torch.Tensor)
    with pytest.raises(Failure, match="contains NaN"):
        call(lambda x: x * float("nan"), x)
    assert torch.isinf(call(lambda x: x * float("inf"), x, allow_inf=True)).all()


def test_require_names_what_to_write_and_where():
    module = type(textwrap)("learner")
    module.__file__ = "mywork/03_attention.py"
    module.attention = 3
    with pytest.raises(Failure, match=r"write `softmax\(x\)` in mywork/03_attention.py: it is missing"):
        require(module, "softmax", signature="(x)")
    with pytest.raises(Failure, match="should be a function, but it is an int"):
        require(module, "attention")


# ----------------------------------------------------------------------------------------------------
# A made-up workshop of two exercises, written where a worker process can import it

CATALOGUE = '''
import torch
from workshop.tutor import Exercise, Mistake, call, diagnose, require

def reference(x):
    return 2 * x

MISTAKES = (Mistake("added two instead of doubling", "2 * x, not x + 2", lambda x: x + 2),)

def check_double(module):
    double = require(module, "double", signature="(x)")
    x = torch.tensor([1.0, 4.0, -3.0], dtype=torch.float64)
    got = call(double, x, returns=torch.Tensor)
    diagnose(got, reference(x), MISTAKES, x, what="double(x)")

def check_square(module):
    square = require(module, "square")
    x = torch.tensor([1.0, 3.0], dtype=torch.float64)
    diagnose(call(square, x, returns=torch.Tensor), x * x, (), x, what="square(x)")

EXERCISES = (
    Exercise(1, "double", "Double a tensor", "docs/learn/01-counting.md", ("model.py:attention",),
             ("multiply", "by two"), check_double, MISTAKES),
    Exercise(2, "square", "Square a tensor", "docs/learn/02-bigram.md", ("model.py:KVCache.update",),
             ("one hint",), check_square),
)
'''

BLANK_DOUBLE = 'def double(x):\n    raise NotImplementedError("return 2 * x")\n'
BLANK_SQUARE = 'def square(x):\n    raise NotImplementedError("return x * x")\n'
RIGHT_DOUBLE = "def double(x):\n    return 2 * x\n"


@pytest.fixture()
def workshop(tmp_path, monkeypatch):
    """(run, folder): run(*argv) is `workshop.py` on the made-up workshop, with mywork in tmp_path."""
    (tmp_path / "fake_catalogue.py").write_text(CATALOGUE)
    blanks = tmp_path / "blanks"
    blanks.mkdir()
    (blanks / "01_double.py").write_text(BLANK_DOUBLE)
    (blanks / "02_square.py").write_text(BLANK_SQUARE)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "mywork"

    def run(*argv):
        return runner.main(["--dir", str(folder), *argv], catalogue="fake_catalogue:EXERCISES", blanks=blanks)

    return run, folder


def verdict(folder, source, number=1):
    """The worker's verdict on exercise `number` written as `source`, checked in this process."""
    name = {1: "01_double.py", 2: "02_square.py"}[number]
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return worker.check_file("fake_catalogue:EXERCISES", number, str(path))


def test_first_use_copies_the_blanks_and_never_overwrites_the_learners_work(workshop, capsys):
    run, folder = workshop
    assert run("hint", "1") == 0
    assert (folder / "01_double.py").read_text() == BLANK_DOUBLE
    (folder / "01_double.py").write_text(RIGHT_DOUBLE)
    (folder / "02_square.py").unlink()
    run("hint", "2")
    assert (folder / "01_double.py").read_text() == RIGHT_DOUBLE
    assert (folder / "02_square.py").read_text() == BLANK_SQUARE


def test_hints_come_one_at_a_time_and_the_count_is_remembered(workshop, capsys):
    run, _ = workshop
    run("hint", "1")
    assert "Hint 1 of 2" in capsys.readouterr().out
    run("hint", "1")
    assert "Hint 2 of 2 for exercise 1:\n  by two" in capsys.readouterr().out
    run("hint", "1")
    assert "That was the last hint" in capsys.readouterr().out


def test_bad_input_is_one_line_and_exit_2(workshop, tmp_path, capsys):
    run, _ = workshop
    assert run("hint", "14") == 2
    assert capsys.readouterr().err == "workshop.py: there is no exercise 14: the workshop has exercises 1 to 2\n"
    assert runner.main(["--dir", str(tmp_path / "no" / "such"), "hint", "1"],
                       catalogue="fake_catalogue:EXERCISES", blanks=tmp_path / "blanks") == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_reset_asks_first_and_refuses_without_a_terminal(workshop, monkeypatch, capsys):
    run, folder = workshop
    run("hint", "1")
    (folder / "01_double.py").write_text(RIGHT_DOUBLE)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert run("reset", "1") == 2
    assert "asks first" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert run("reset", "1") == 1
    assert (folder / "01_double.py").read_text() == RIGHT_DOUBLE
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert run("reset", "1") == 0
    assert (folder / "01_double.py").read_text() == BLANK_DOUBLE
    (folder / "01_double.py").write_text(RIGHT_DOUBLE)
    assert run("reset", "1", "--yes") == 0
    assert (folder / "01_double.py").read_text() == BLANK_DOUBLE


def test_solution_lines_are_found_in_the_projects_own_code():
    start, end = runner.reference_lines("model.py:attention").removeprefix("model.py:").split("-")
    lines = (runner.ROOT / "model.py").read_text().splitlines()
    assert lines[int(start) - 1].startswith("def attention(")
    assert lines[int(end) - 1].strip() == "return weights @ v  # (B, nh, T, hs)"
    assert runner.reference_lines("model.py:KVCache.update").startswith("model.py:")


def test_a_blank_a_right_answer_and_a_known_mistake_each_get_their_verdict(workshop, tmp_path):
    folder = tmp_path
    assert verdict(folder, BLANK_DOUBLE)["message"] == "double is not written yet: return 2 * x"
    assert verdict(folder, RIGHT_DOUBLE) == {"passed": True, "message": "", "printed": ""}
    mistaken = verdict(folder, "def double(x):\n    return x + 2\n")
    assert not mistaken["passed"] and "added two instead of doubling" in mistaken["message"]


@pytest.mark.parametrize("source, message", [
    ("def double(x):\n    return 2 * x +\n", r"01_double.py:2: SyntaxError: invalid syntax: return 2 \* x \+"),
    ("import no_such_module\n", r"01_double.py could not be imported: ModuleNotFoundError: .*no_such_module.*"
                                r"\(at .*01_double.py:1\)"),
    ("def double(x):\n    return x.no_such_method()\n", r"double raised AttributeError: .*\(at .*01_double.py:2\)"),
    ("def double(x):\n    return (2 * x).tolist()\n", "double should return a Tensor, but it returned a list"),
    ("def double(x):\n    x *= 2\n    return x\n", "double changed its argument `x` in place"),
    ("import sys\nsys.exit(1)\n", "called exit()"),
    ("def triple(x):\n    return 3 * x\n", r"write `double\(x\)` in .*01_double.py: it is missing"),
])
def test_whatever_the_learners_file_does_wrong_is_one_message(workshop, tmp_path, source, message):
    result = verdict(tmp_path, source)
    assert not result["passed"]
    assert "\n" not in result["message"] and "Traceback" not in result["message"]
    assert re.search(message, result["message"]), result["message"]


def test_what_the_learners_code_prints_is_shown_apart_from_the_verdict(workshop, tmp_path):
    result = verdict(tmp_path, 'print("loaded")\ndef double(x):\n    print("shape", tuple(x.shape))\n'
                               '    return 2 * x\n')
    assert result["passed"] and result["printed"] == "loaded\nshape (3,)\n"
    flood = verdict(tmp_path, 'def double(x):\n    print("x" * 10000)\n    return x\n')
    assert not flood["passed"] and len(flood["printed"]) < 2 * worker.MAX_PRINTED_CHARS


# ----------------------------------------------------------------------------------------------------
# The runner end to end, with its worker process


@pytest.mark.slow
def test_check_exits_0_only_when_every_checked_exercise_passes_and_progress_follows(workshop, capsys):
    run, folder = workshop
    assert run("check") == 1
    out = capsys.readouterr().out
    assert "✗  1. Double a tensor" in out and "double is not written yet" in out and "0 of 2" in out
    (folder / "01_double.py").write_text(RIGHT_DOUBLE)
    assert run("check", "1") == 0
    assert run("check") == 1
    run()
    out = capsys.readouterr().out
    assert "1/2 (50%)" in out and "Next: 2. Square a tensor" in out and "02_square.py" in out
    (folder / "02_square.py").write_text("def square(x):\n    return x * x\n")
    assert run("check") == 0
    assert "2 of 2 exercises pass" in capsys.readouterr().out


@pytest.mark.slow
def test_solution_is_refused_before_a_pass_and_shown_after(workshop, capsys):
    run, folder = workshop
    assert run("solution", "1") == 1
    out = capsys.readouterr().out
    assert "does not pass yet" in out and "model.py:" not in out
    assert run("solution", "1", "--show-anyway") == 0
    assert "model.py:" in capsys.readouterr().out
    (folder / "01_double.py").write_text(RIGHT_DOUBLE)
    assert run("solution", "1") == 0
    assert runner.reference_lines("model.py:attention") in capsys.readouterr().out


@pytest.mark.slow
def test_an_endless_loop_is_stopped_at_the_time_limit_and_the_next_check_still_runs(workshop, capsys):
    run, folder = workshop
    run("hint", "1")
    (folder / "01_double.py").write_text("def double(x):\n    while True:\n        pass\n")
    assert run("--time-limit", "1", "check") == 1
    out = capsys.readouterr().out
    assert "did not finish in 1 s: is there an endless loop?" in out
    assert "square is not written yet" in out and "Traceback" not in out


def test_the_folder_and_the_time_limit_may_come_before_or_after_the_command():
    for argv in (["--dir", "elsewhere", "check", "3"], ["check", "3", "--dir", "elsewhere"]):
        args = runner.build_parser().parse_args(argv)
        assert (args.dir, args.command, args.number) == ("elsewhere", "check", 3), argv
    assert runner.build_parser().parse_args(["hint", "2"]).dir == runner.DEFAULT_DIR
    assert runner.build_parser().parse_args(["watch", "--time-limit", "5"]).time_limit == 5
