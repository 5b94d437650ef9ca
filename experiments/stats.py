"""
The statistics an experiment's conclusion rests on: whether a run had stopped improving (converged), and
the paired difference between two variants over seeds, with its 95% confidence interval, put into words.

Paired: seed s of the baseline and seed s of the swapped variant read the same batches in the same order
(train.py draws them from --seed), so each seed gives one difference, and the spread of the differences,
not of the two variants' losses, sets the interval. With n seeds the interval is
    mean ± t(0.975, n - 1) · sd / √n
Student's t, because sd is estimated from the same few differences (t(0.975, 2) = 4.30 for three seeds,
not the 1.96 of a normal distribution).
"""

from __future__ import annotations

import math
import statistics

# A run has converged when the last tenth of its steps improved its best val loss by less than 0.02 nats
# (about 1% of the loss): its last evaluations agree. The window is the end of the run because with a cosine
# schedule the decaying learning rate alone still buys a few hundredths over a run's last quarter, at every
# size measured here; a run still far from its plateau keeps falling faster than this to the end.
CONVERGED_GAIN = 0.02  # nats
LAST_FRACTION = 0.1  # the part of a run, by step, that the convergence check looks at


def convergence(records: list[dict], gain_limit: float = CONVERGED_GAIN, last_fraction: float = LAST_FRACTION) -> dict:
    """Whether a run had stopped improving, from its metrics.jsonl records: the best val loss over the last
    tenth of its steps (last_fraction) is less than gain_limit below the best before them. A run stopped
    early by --patience passes (its last evaluations did not improve at all); one still falling does not."""
    last_step = records[-1]["step"]
    cut = last_step * (1 - last_fraction)
    before = [record["val_loss"] for record in records if record["step"] <= cut]
    after = [record["val_loss"] for record in records if record["step"] > cut]
    if len(before) < 2 or not after:
        return {"converged": False, "gain": None, "from_step": cut, "why": "too few evaluations to tell"}
    gain = min(before) - min(after)
    converged = gain < gain_limit
    why = (f"its steps after {cut:g} improved the best val loss by {gain:.4f}, "
           f"{'less' if converged else 'not less'} than {gain_limit}")
    return {"converged": converged, "gain": gain, "from_step": cut, "why": why}


def student_t_cdf(x: float, df: int) -> float:
    """P(T <= x) for Student's t with df degrees of freedom: 1/2 plus the integral of its density from 0 to
    |x| (Simpson's rule on 2,000 intervals; exact to about 1e-10 at the quantiles used here)."""
    scale = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def density(t: float) -> float:
        return scale * (1 + t * t / df) ** (-(df + 1) / 2)

    steps, width = 2000, abs(x) / 2000
    area = density(0) + density(abs(x)) + sum((4 if i % 2 else 2) * density(i * width) for i in range(1, steps))
    half = area * width / 3
    return 0.5 + half if x >= 0 else 0.5 - half


def t_quantile(p: float, df: int) -> float:
    """The x with P(T <= x) = p for Student's t with df degrees of freedom (p in (0.5, 1)), by bisection."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, not p={p}, df={df}")
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def paired_interval(baseline: list[float], other: list[float], level: float = 0.95) -> dict:
    """The per-seed differences other - baseline, their mean and sample sd, and the `level` confidence
    interval of the mean difference (None with a single seed: one difference has no spread)."""
    if len(baseline) != len(other) or not baseline:
        raise ValueError(f"paired values need the same seeds on both sides, not {len(baseline)} and {len(other)}")
    differences = [b - a for a, b in zip(baseline, other, strict=True)]
    n = len(differences)
    mean = statistics.fmean(differences)
    if n < 2:
        return {"n": n, "differences": differences, "mean": mean, "sd": None, "low": None, "high": None,
                "level": level}
    sd = statistics.stdev(differences)
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return {"n": n, "differences": differences, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half,
            "level": level}


def verdict(interval: dict, unconverged: int, what: str = "the best val loss") -> str:
    """The conclusion in words that the interval allows, or why there is none: any run that had not
    converged (the difference could be a matter of speed, not of worth) or a single seed."""
    if unconverged:
        return f"no verdict: {unconverged} run(s) had not converged"
    if interval["low"] is None:
        return "no verdict: one seed gives no interval"
    if interval["high"] < 0:
        return f"lowers {what}, by {-interval['high']:.3f} to {-interval['low']:.3f}"
    if interval["low"] > 0:
        return f"raises {what}, by {interval['low']:.3f} to {interval['high']:.3f}"
    return "no measurable difference at this scale (the interval spans 0)"
