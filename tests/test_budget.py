"""What --time-budget must guarantee: a budget is read as written (30s, 10m, 1h, plain seconds) and a bad one
is refused in one line; the schedule, on a fake clock, warms up, decays to --min-lr and takes its last step
just before the budget runs out, even when the machine slows down half-way; the recipe is chosen by the
budget and any flag still wins; a real run with a 20-second budget ends within it and leaves a loadable
best.pt and, as the last metrics record, best.pt's loss on the whole val split; --resume spends only what
is left of the budget; two processes under torchrun stop at the same step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from machinery import settings
from machinery.budget import Horizon, format_budget, parse_duration
from machinery.checkpoint import load_checkpoint, load_model

ROOT = Path(__file__).resolve().parents[1]
# A model of 15 thousand parameters in float32 with AdamW: a step takes milliseconds on one core.
TINY = ["--device", "cpu", "--dtype", "float32", "--optimizer", "adamw", "--preset", "small", "--n-layer", "1",
        "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--batch-size", "8", "--eval-windows", "8",
        "--warmup-iters", "5", "--lr", "3e-3", "--min-lr", "3e-4", "--sample-tokens", "20"]


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("10m", 600), ("1h", 3600), ("90", 90), ("1.5m", 90),
                                               (" 2h ", 7200), (".5h", 1800)])
def test_a_budget_is_read_as_written(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5m", "abc", "1e9h", "10 minutes", "", "169h", "nan", "inf"])
def test_a_bad_budget_is_refused_in_one_line(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        settings.parse_args([f"--time-budget={text}"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--time-budget" in error and ("duration" in error or "more than 0" in error), error


def test_budgets_are_written_back_as_given():
    assert [format_budget(s) for s in (30, 600, 3600, 90, 5400)] == ["30s", "10m", "1h", "90s", "90m"]


class FakeClock:
    """The process's age, moved by hand."""

    def __init__(self, start: float):
        self.now = start

    def __call__(self) -> float:
        return self.now


def run_schedule(budget: float, step_seconds, startup: float = 5.0, spent_before: float = 0.0) -> dict:
    """Drive a Horizon as train.py does, on a fake clock where step n takes step_seconds(n): returns the lrs,
    the step it stopped at and the time spent then."""
    clock = FakeClock(startup)
    horizon = Horizon(None, None, budget, spent_before, age=clock)
    horizon.note_eval(0.02, 10)
    horizon.note_save(0.1)
    lr, min_lr, warmup = 1e-2, 1e-3, 20
    lrs, evaluations, step, started = [], [], 0, clock.now
    while True:
        horizon.update(step, (clock.now - started) / max(1, step))
        if horizon.is_last(step):
            break
        if horizon.eval_due(step):
            evaluations.append(horizon.spent)
            clock.now += 0.2
        lrs.append(train.get_lr(step, lr, min_lr, warmup, horizon.total_steps(step)))
        clock.now += step_seconds(step)
        step += 1
    return {"lrs": lrs, "steps": step, "spent": horizon.spent, "reserve": horizon.reserve,
            "evaluations": evaluations}


def test_the_schedule_ends_at_the_budget_on_a_fake_clock():
    run = run_schedule(600.0, lambda step: 0.5)
    assert run["lrs"][19] == pytest.approx(1e-2)  # warmed up in 20 steps
    assert run["lrs"][-1] == pytest.approx(1e-3, rel=0.02)  # decayed to min_lr by the last step
    assert 600.0 - run["reserve"] - 0.5 <= run["spent"] <= 600.0 - run["reserve"]  # stopped when no step fits
    assert run["steps"] == pytest.approx((600 - 5 - run["reserve"]) / 0.5, rel=0.02)
    assert len(run["evaluations"]) == 10  # the start, then each tenth of the budget
    assert all(later <= earlier * 1.001 for earlier, later in zip(run["lrs"][20:], run["lrs"][21:], strict=False))


def test_a_machine_that_slows_down_still_decays_fully_and_stops_on_time():
    run = run_schedule(300.0, lambda step: 0.2 if step < 400 else 0.6)  # three times slower after step 400
    assert run["lrs"][-1] == pytest.approx(1e-3, rel=0.05)
    assert run["spent"] <= 300.0 - run["reserve"]
    assert run["spent"] >= 300.0 - run["reserve"] - 0.6
    assert min(run["lrs"][20:]) == run["lrs"][-1]  # never below min_lr before the end


def test_a_resumed_schedule_spends_only_what_is_left():
    run = run_schedule(600.0, lambda step: 0.5, spent_before=400.0)
    assert run["spent"] <= 600.0 - run["reserve"]
    assert run["steps"] == pytest.approx((600 - 405 - run["reserve"]) / 0.5, rel=0.02)


def test_without_a_budget_the_horizon_is_the_step_count():
    horizon = Horizon(100, 25)
    horizon.update(0, 0.0)
    assert horizon.total_steps(0) == 100 and not horizon.is_last(99) and horizon.is_last(100)
    assert [step for step in range(101) if horizon.eval_due(step)] == [0, 25, 50, 75, 100]


def resolved(argv: list[str]) -> settings.Settings:
    args = settings.parse_args(argv)
    return settings.resolve(args, settings.given_flags(argv))[0]


def test_the_budget_picks_the_recipe_measured_for_it_and_any_flag_wins():
    assert resolved(["--device", "cpu", "--time-budget", "1m"]).recipe == "cpu"
    assert resolved(["--device", "cpu", "--time-budget", "10m"]).recipe == "cpu-10m"
    assert resolved(["--device", "cpu", "--time-budget", "1h"]).recipe == "cpu-1h"
    assert settings.budget_recipe(600, "cuda") == settings.budget_recipe(600, "mps") == "gpu"
    timed = resolved(["--device", "cpu", "--time-budget", "10m", "--n-embd", "96", "--batch-size", "8"])
    assert (timed.n_embd, timed.batch_size, timed.max_iters, timed.eval_interval) == (96, 8, None, None)
    assert resolved(["--device", "cpu", "--time-budget", "10m", "--max-iters", "50"]).max_iters == 50  # a cap
    assert resolved(["--device", "cpu", "--recipe", "cpu", "--time-budget", "1m"]).max_iters is None
    assert resolved(["--device", "cpu", "--recipe", "cpu-10m"]).time_budget == 600  # the recipe's own budget
    assert resolved(["--device", "cpu"]).time_budget is None  # no budget: steps, as before


def test_the_process_age_counts_the_start_up_and_ignores_a_change_of_the_system_time(monkeypatch):
    from machinery import budget

    assert budget.AGE_AT_IMPORT > 0  # the interpreter and torch were loaded before this module
    before = budget.process_age()
    monkeypatch.setattr(time, "time", lambda: 1e12)  # the system's time set a long way forward
    time.sleep(0.05)
    after = budget.process_age()
    assert 0.05 <= after - before < 5.0


def test_a_recipe_may_set_its_own_weight_decay_and_the_rest_share_one():
    for budget, recipe in (("10m", "cpu-10m"), ("1h", "cpu-1h")):
        own = settings.RECIPES[recipe]["weight_decay"]
        assert own != settings.SHARED_DEFAULTS["weight_decay"]
        assert resolved(["--device", "cpu", "--time-budget", budget]).weight_decay == own
        assert resolved(["--device", "cpu", "--time-budget", budget, "--weight-decay", "0.2"]).weight_decay == 0.2
    for argv in (["--device", "cpu"], ["--device", "cpu", "--time-budget", "3m"], ["--recipe", "gpu"]):
        assert resolved(argv).weight_decay == settings.SHARED_DEFAULTS["weight_decay"]
    assert resolved(["--device", "cpu", "--weight-decay", "0"]).weight_decay == 0  # 0 is a value, not "unset"


def train_process(args: list[str], corpus: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.time()
    result = subprocess.run([sys.executable, "train.py", *TINY, *args], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TINYGPT_DATA": str(corpus), "OMP_NUM_THREADS": "1"}, timeout=300)
    return result, time.time() - start


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_twenty_second_run_ends_within_its_budget_with_a_loadable_best_checkpoint(tmp_path, corpus_path):
    out = tmp_path / "run"
    result, seconds = train_process(["--time-budget", "20s", "--out-dir", str(out)], corpus_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert seconds <= 20 * 1.1, f"the 20 s run took {seconds:.1f} s"
    assert "time budget 20s" in "\n".join(result.stdout.splitlines()[:5])  # said in the run's first lines
    last = records(out)[-1]
    assert last["time_budget_s"] == 20 and last["budget_spent_s"] <= 20
    assert last["val_windows"] > 8  # the whole split, not the run's 8 windows
    model = load_model(out / "best.pt")
    assert model.num_params() > 0
    evaluations = [r for r in records(out) if "val_loss" in r]
    assert len(evaluations) >= 5 and evaluations[-1]["val_loss"] < evaluations[0]["val_loss"]
    assert last["best_val_loss_whole_split"] < 3.0  # it learned: a uniform guess is ln(65) = 4.17


@pytest.mark.slow
def test_a_slow_first_evaluation_does_not_end_a_timed_run_after_its_first_step(tmp_path, corpus_path, monkeypatch):
    """A process's first evaluation runs cold (its first calls, a cold disk: 30x the warm cost per window was
    measured). Planned from that, the whole-split evaluation at the end looked minutes long and the run stopped
    after one step; the plan must come from a warm timing."""
    started = time.monotonic()  # the run's own clock, not pytest's age
    monkeypatch.setattr(train, "Horizon", lambda *args: Horizon(*args, age=lambda: time.monotonic() - started))
    real_estimate, calls = train.estimate_loss, []

    def first_one_slow(*args, **kwargs):
        if not calls:
            time.sleep(0.5)  # 60 ms a window for the first evaluation's 8: 4 minutes for the whole split
        calls.append(1)
        return real_estimate(*args, **kwargs)

    monkeypatch.setattr(train, "estimate_loss", first_one_slow)
    monkeypatch.setenv("TINYGPT_DATA", str(corpus_path))
    summary = train.main([*TINY, "--time-budget", "15s", "--out-dir", str(tmp_path / "run")])
    assert summary["steps"] > 100, f"the run stopped after {summary['steps']} steps"
    assert summary["best_val_loss_whole_split"] is not None


@pytest.mark.slow
def test_resume_continues_with_the_rest_of_the_budget(tmp_path, corpus_path):
    out = tmp_path / "run"
    first, _ = train_process(["--time-budget", "25s", "--stop-after-iters", "30", "--out-dir", str(out)], corpus_path)
    assert first.returncode == 0, first.stdout + first.stderr
    spent_first = load_checkpoint(out / "last.pt")["budget_spent_s"]
    assert 0 < spent_first < 25
    second, seconds = train_process(["--resume", "--out-dir", str(out)], corpus_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "of it left" in second.stdout
    last = records(out)[-1]
    assert spent_first < last["budget_spent_s"] <= 25
    assert seconds <= (25 - spent_first) * 1.15 + 1
    again, _ = train_process(["--resume", "--out-dir", str(out)], corpus_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout and "--time-budget" in again.stdout


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step_within_the_budget(tmp_path, corpus_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *TINY,
               "--time-budget", "25s", "--out-dir", str(out)]
    start = time.time()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TINYGPT_DATA": str(corpus_path), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr  # a rank stopping alone would hang or fail
    # From outside, torchrun's own start (it imports torch: 3-5 s on 2 busy cores) and teardown add to the
    # ranks' 25 s, which their own clock holds to the budget (the record below).
    assert time.time() - start <= 25 + 10
    assert records(out)[-1]["budget_spent_s"] <= 25
    assert load_checkpoint(out / "last.pt")["step"] == records(out)[-1]["step"]
