"""The statistics behind the experiments' conclusions, on synthetic numbers with known answers: Student's t
quantiles against published tables, paired intervals worked out by hand, the convergence check on curves
that are and are not flat, and verdicts that are withheld for unconverged runs (in the results page too)."""

import math

import pytest

from experiments import report, stats, swaps


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_match_the_published_table(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_tends_to_the_normal_one_and_the_cdf_is_symmetric():
    assert stats.t_quantile(0.975, 100_000) == pytest.approx(1.95996, abs=1e-4)
    assert stats.student_t_cdf(-1.3, 5) == pytest.approx(1 - stats.student_t_cdf(1.3, 5), abs=1e-12)
    assert stats.student_t_cdf(0.0, 3) == 0.5


def test_paired_interval_by_hand():
    # Differences -0.1, -0.2, 0.0: mean -0.1, sd 0.1, half width t(0.975, 2) * 0.1 / sqrt(3) = 0.24841.
    interval = stats.paired_interval([2.0, 2.0, 2.0], [1.9, 1.8, 2.0])
    assert interval["differences"] == pytest.approx([-0.1, -0.2, 0.0])
    assert (interval["mean"], interval["sd"]) == pytest.approx((-0.1, 0.1))
    assert (interval["low"], interval["high"]) == pytest.approx((-0.1 - 0.24841, -0.1 + 0.24841), abs=1e-5)


def test_pairing_removes_what_the_seeds_share():
    # The seeds differ by 0.5 between each other, but the swap lowers each by exactly 0.03 +- 0.001:
    # unpaired, the spread would swamp it; paired, the interval is tight and excludes 0.
    baseline = [1.50, 2.00, 2.50]
    swapped = [1.469, 1.971, 2.470]
    interval = stats.paired_interval(baseline, swapped)
    assert interval["high"] < 0 and interval["high"] - interval["low"] < 0.01
    assert stats.verdict(interval, unconverged=0) == (f"lowers the best val loss, by {-interval['high']:.3f} to "
                                                      f"{-interval['low']:.3f}")


def test_a_single_seed_or_unequal_seeds_give_no_interval():
    assert stats.paired_interval([2.0], [1.9])["low"] is None
    assert stats.verdict(stats.paired_interval([2.0], [1.9]), 0) == "no verdict: one seed gives no interval"
    with pytest.raises(ValueError, match="same seeds"):
        stats.paired_interval([2.0, 2.1], [1.9])


def test_verdicts_follow_the_interval():
    spans_zero = {"low": -0.02, "high": 0.01}
    worse = {"low": 0.02, "high": 0.05}
    assert stats.verdict(spans_zero, 0) == "no measurable difference at this scale (the interval spans 0)"
    assert stats.verdict(worse, 0) == "raises the best val loss, by 0.020 to 0.050"
    assert stats.verdict(worse, 2) == "no verdict: 2 run(s) had not converged"


def records(losses: list[float], interval: int = 100) -> list[dict]:
    return [{"step": i * interval, "val_loss": loss} for i, loss in enumerate(losses)]


def test_a_curve_still_falling_has_not_converged():
    falling = records([3.0 - 0.02 * i for i in range(21)])  # 0.02 per evaluation, to the end
    check = stats.convergence(falling)
    assert not check["converged"] and check["gain"] == pytest.approx(0.04)  # 2 evaluations after step 1800
    annealed = records([2.0 + math.exp(-i / 10) for i in range(21)])  # flattening, but 0.03 in the last tenth
    assert not stats.convergence(annealed)["converged"]


def test_a_flat_curve_and_an_early_stop_have_converged():
    flat = records([2.0 + math.exp(-i) for i in range(21)])  # the last tenth gains under 1e-7
    assert stats.convergence(flat)["converged"]
    stopped = records([3.0, 2.5, 2.2, 2.0, 1.9, 1.85, 1.86, 1.87, 1.86, 1.88, 1.9])  # best at 500, then 5 worse
    check = stats.convergence(stopped)
    assert check["converged"] and check["gain"] < 0


def test_too_few_evaluations_cannot_show_convergence():
    assert not stats.convergence(records([3.0, 2.0]))["converged"]


def run(seed: int, best: float, converged: bool) -> dict:
    """A run record as the suite keeps it: its seed, best val loss and curve (flat, or still falling)."""
    curve = [best + 0.5 * math.exp(-i) for i in range(21)] if converged else [best + 0.03 * (20 - i) for i in range(21)]
    return {"seed": seed, "best_val_loss": min(curve), "metrics": records(curve)}


def test_a_swap_with_an_unconverged_run_gets_no_verdict_even_with_a_clear_difference():
    baseline = [run(seed, 2.0 + 0.01 * seed, True) for seed in range(3)]
    swapped = [run(seed, 1.8 + 0.01 * seed, seed != 1) for seed in range(3)]
    effect = swaps.effect(baseline, swapped)
    assert effect["high"] < 0  # the interval alone would say "lowers"
    assert effect["converged"] == "5 of 6" and effect["verdict"] == "no verdict: 1 run(s) had not converged"
    converged = swaps.effect(baseline, [run(seed, 1.8 + 0.01 * seed, True) for seed in range(3)])
    assert converged["verdict"].startswith("lowers the best val loss")


def test_the_results_page_prints_the_verdict_it_was_given(tmp_path):
    baseline = [run(seed, 2.0, True) for seed in range(3)]
    swapped = [run(seed, 1.8, seed != 1) for seed in range(3)]
    variant = {"summary": {"best_val_loss": {"mean": 2.0, "std": 0.0, "n": 3}}}
    result = {"kind": "swap", "name": "pos", "title": "learned positions → RoPE", "seeds": [0, 1, 2],
              "setting": "full", "effect": swaps.effect(baseline, swapped), "seed_project_effect": -0.31,
              "variants": [{**variant, "config": {"n_layer": 4, "n_embd": 64, "block_size": 128}, "params": 1},
                           variant],
              "provenance": {"device": "a test"}}
    lines = "\n".join(report.effects_lines([result], tmp_path))
    assert "no verdict: 1 run(s) had not converged" in lines and "lowers" not in lines
    assert "-0.310" in lines  # the seed project's figure beside ours
