"""
Plots of training runs, written as PNG files. matplotlib is optional: import this module only where
a plot is wanted, and catch the ImportError to skip it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window: works on servers, in CI and in notebooks alike
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(figure: plt.Figure, axes: plt.Axes, path: Path, xlabel: str, ylabel: str) -> None:
    """Label the axes, add a grid and the legend, and write the figure to path as a PNG."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_training_curves(records: list[dict], path: Path) -> None:
    """Train and val loss against step for one run (records as in metrics.jsonl)."""
    figure, axes = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if train:
        axes.plot(*zip(*train, strict=True), label="train (mean over interval)")
    if val:
        axes.plot(*zip(*val, strict=True), label="val", marker="o", markersize=3)
    save_figure(figure, axes, path, "step", "loss (nats per token)")


def plot_against_budget(lines: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    """Best val loss against the time budget (minutes, log scale), one line per recipe: label -> [(minutes,
    loss)]; several seeds at one budget are drawn as separate points on the line's mean."""
    figure, axes = plt.subplots(figsize=(7, 4))
    for label, points in lines.items():
        budgets = sorted({minutes for minutes, _ in points})
        means = [sum(loss for m, loss in points if m == minutes) / sum(1 for m, _ in points if m == minutes)
                 for minutes in budgets]
        line, = axes.plot(budgets, means, label=label, marker="o", markersize=4)
        axes.scatter([m for m, _ in points], [loss for _, loss in points], color=line.get_color(), s=10, alpha=0.6)
    axes.set_xscale("log")
    axes.set_title(title)
    save_figure(figure, axes, path, "time budget (minutes, whole process)", "best val loss, whole val split")


def plot_val_curves(curves: dict[str, tuple[list[int], list[float], list[float]]], path: Path,
                    title: str, ylabel: str = "val loss (nats per token)",
                    references: dict[str, float] | None = None) -> None:
    """A val metric against step for several variants: label -> (steps, mean, spread), mean +- spread
    shaded. The default metric is loss; pass ylabel for another (bits per character, say). references:
    label -> value, drawn as dashed horizontal lines (a baseline that was not trained)."""
    figure, axes = plt.subplots(figsize=(7, 4))
    for label, (steps, mean, spread) in curves.items():
        line, = axes.plot(steps, mean, label=label, marker="o", markersize=3)
        low = [m - s for m, s in zip(mean, spread, strict=True)]
        high = [m + s for m, s in zip(mean, spread, strict=True)]
        axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    for label, value in (references or {}).items():
        axes.axhline(value, linestyle="--", linewidth=1, color="grey")
        axes.annotate(label, (0, value), xycoords=("axes fraction", "data"), xytext=(4, 3),
                      textcoords="offset points", fontsize=8, color="grey")
    axes.set_title(title)
    save_figure(figure, axes, path, "step", ylabel)


def plot_effects(effects: list[tuple[str, float, float, float]], path: Path, title: str,
                 xlabel: str = "change in best val loss (nats per token)") -> None:
    """Paired effects with their confidence intervals, one row each: (label, mean, low, high). A vertical
    line at 0: an interval that crosses it shows no measurable difference."""
    figure, axes = plt.subplots(figsize=(7, 0.6 * len(effects) + 1.4))
    rows = list(range(len(effects)))[::-1]  # the first effect on top
    for row, (_, mean, low, high) in zip(rows, effects, strict=True):
        axes.errorbar(mean, row, xerr=[[mean - low], [high - mean]], fmt="o", capsize=4, color="tab:blue")
    axes.axvline(0, color="grey", linewidth=1)
    axes.set_yticks(rows, [label for label, *_ in effects])
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
