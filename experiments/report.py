"""
Build docs/results.md and docs/plots/<experiment>.png from every results file in experiments/results/.

    uv run python -m experiments.report
    uv run python -m experiments.report --results-dir DIR --docs-dir DIR

Every experiment calls this when it finishes, so the page always shows all the results there are.
Every number on it is read from a JSON file that an experiment wrote: the page is never edited by hand.
Plots need matplotlib (optional); without it they are skipped and the tables are still written.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):  # run as `uv run experiments/report.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import common, stats  # noqa: E402
from machinery.results import markdown_table, optional  # noqa: E402

ORDER = ("ladder", "ladder_full", "default_cpu", "default_cuda", "default_mps", "final_cuda", "final_mps", "final_cpu",
         "norm", "mlp", "pos", "modern", "pos_scale", "kvcache", "tokenizers", "speed")  # others follow, by name


def spread_text(stat: dict | None, spec: str = ".4f") -> str:
    """"mean ± std" over seeds, or just the value for a single seed."""
    if stat is None:
        return "—"
    mean = format(stat["mean"], spec)
    return mean if stat["n"] == 1 else f"{mean} ± {format(stat['std'], spec)}"


def setting_text(result: dict, seeds: list[int]) -> str:
    """The model, schedule and seeds of an experiment, from its first trained run's checkpoint."""
    run = next(variant for variant in result["variants"] if "skipped" not in variant)["runs"][0]
    config, schedule = run["config"], run["schedule"]
    size = (f"CPU-sized: the {result.get('recipe', 'swaps-cpu')} recipe; `--full` trains the 10M presets with the "
            "gpu recipe" if result.get("setting") == "cpu"
            else "the 10M presets with the gpu recipe" if result.get("setting") == "full"
            else "the 10M presets with the full-size-cpu recipe"
            if result.get("kind") == "final" and result["device_type"] == "cpu"
            else "the 10M presets with the gpu recipe" if result.get("kind") == "final"
            else f"preset {result.get('preset')} with train.py's defaults for the device")
    windows = schedule["eval_windows"] or "all"
    accumulation = f" × {schedule['grad_accum']} micro-batches" if schedule["grad_accum"] > 1 else ""
    spread = "; ± is the sample standard deviation over seeds" if len(seeds) > 1 else ""
    return (f"Model ({size}): depth {config['n_layer']}, width {config['n_embd']}, {config['n_head']} heads, "
            f"context {config['block_size']} tokens, dropout {config['dropout']}. Training: {run['final_step']} "
            f"steps of {schedule['batch_size']} × {config['block_size']} tokens{accumulation}, lr {schedule['lr']} "
            f"→ {schedule['min_lr']} (warmup {schedule['warmup_iters']}, cosine), AdamW β2 {schedule['beta2']}, "
            f"weight decay {schedule['weight_decay']}, compile {'on' if schedule['compile'] else 'off'}; val loss "
            f"on {windows} fixed val windows every {schedule['eval_interval']} steps. Seeds: "
            f"{', '.join(map(str, seeds))}{spread}. Train time is train.py's elapsed_s at the last evaluation "
            "(evaluations included); tokens/s is the median over eval intervals.")


def provenance_text(result: dict, runs: bool = True) -> str:
    """Where and how a results file was made; runs: it holds train.py runs, each with its command."""
    p = result["provenance"]
    dirty = " with uncommitted changes" if p["git_dirty"] else ""
    where = "; each run's own train.py command is in the JSON file" if runs else ""
    return (f"Device: {p['device']}; torch {p['torch']}; commit {p['git_commit'][:10]}{dirty}; {p['date']}. "
            f"Made by `{p['command']}`{where}.")


def plot_file(name: str, docs_dir: Path, title: str, draw: Callable[[ModuleType, Path], None]) -> list[str]:
    """Write docs/plots/<name>.png with draw(plots, path), plots being the plots module; the markdown that
    shows it, or [] where matplotlib (optional) is missing."""
    try:
        from machinery import plots
    except ImportError:
        print(f"({name}.png skipped: pip install matplotlib to get it)")
        return []
    path = docs_dir / "plots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(plots, path)
    return ["", f"![{title}](plots/{name}.png)"]


def plot(name: str, curves: dict, docs_dir: Path, title: str, ylabel: str,
         references: dict[str, float] | None = None) -> list[str]:
    """docs/plots/<name>.png of val curves: mean over seeds, ± std shaded, references as dashed lines."""
    return plot_file(name, docs_dir, title,
                     lambda plots, path: plots.plot_val_curves(curves, path, title, ylabel, references))


def curves_of(variants: list[dict], metric: str) -> dict:
    return {variant["name"]: (variant["summary"]["steps"], variant["summary"]["curves"][metric]["mean"],
                              variant["summary"]["curves"][metric]["std"]) for variant in variants}


def effect_text(effect: dict) -> str:
    """A paired effect: the mean difference over seeds and its 95% interval, in nats."""
    if effect["low"] is None:
        return f"{effect['mean']:+.4f} (one seed: no interval)"
    return f"{effect['mean']:+.4f} [{effect['low']:+.4f}, {effect['high']:+.4f}]"


def converged_text(variant: dict) -> str:
    checks = variant.get("convergence", [])
    return f"{sum(check['converged'] for check in checks)} of {len(checks)}"


def swap_section(result: dict, docs_dir: Path) -> list[str]:
    steps = list(result["variants"][0]["summary"]["val_loss_at"])
    converging = "effect" in result  # made by the converging suite (older files compared fixed schedules)
    speed = " (learning speed)" if converging else ""
    header = ["variant", "config change", "params", "FFN hidden", *[f"val loss @ {step}{speed}" for step in steps],
              "best val loss", *(["best at step", "converged"] if converging else []), "train time (s)", "tokens/s"]
    rows = []
    for variant in result["variants"]:
        summary = variant["summary"]
        change = ", ".join(f"{field}: {old} → {new}" for field, (old, new) in variant["config_diff"].items())
        rows.append([variant["name"], change or "baseline", f"{variant['params']:,}", str(variant["ffn_hidden"]),
                     *[spread_text(summary["val_loss_at"][step]) for step in steps],
                     spread_text(summary["best_val_loss"]),
                     *([spread_text(summary["best_step"], ".0f"), converged_text(variant)] if converging else []),
                     spread_text(summary["elapsed_s"], ".0f"), spread_text(summary["tokens_per_sec"], ",.0f")])
    title = f"{result['name']}: {result['title']}"
    return [f"## {title}", "", setting_text(result, result["seeds"]), "", *markdown_table(header, rows),
            *(["", *effect_paragraph(result)] if converging else []),
            *plot(result["name"], curves_of(result["variants"], "val_loss"), docs_dir, title,
                  "val loss (nats per token)"),
            "", provenance_text(result)]


def effect_paragraph(result: dict) -> list[str]:
    """What the swap is worth, paired by seed, and how convergence was judged."""
    effect, (baseline, swapped) = result["effect"], (variant["name"] for variant in result["variants"])
    seed_project = result.get("seed_project_effect")
    reported = (f" The seed project reported {seed_project:+.3f} at its 10M size." if seed_project is not None
                else "")
    return [f"**Effect** on the best val loss ({swapped} − {baseline}, seed by seed, mean and 95% interval): "
            f"{effect_text(effect)}; {effect['converged']} runs converged. **Verdict: {effect['verdict']}.**"
            f"{reported}", "",
            f"Each run trained until its val loss had not improved for {result['patience']} evaluations (or to "
            f"the end of its schedule); it counts as converged when the last {result['converged_window']:.0%} of "
            f"its steps improved its best val loss by less than {result['converged_gain']} nats "
            "(experiments/stats.py). The val loss "
            "@ step columns show how fast each variant learns, not what it is worth."]


CPU_RUNS = ", two runs at a time, one thread each"  # how the suites share a CPU (common.train_runs)


def effect_rows(results: list[dict]) -> list[dict]:
    """Every converged-suite swap result, vanilla → modern last."""
    swaps = [result for result in results if result["kind"] == "swap" and "effect" in result]
    return sorted(swaps, key=lambda result: result["name"] == "modern")


def effects_lines(results: list[dict], docs_dir: Path) -> list[str]:
    """The key table: each swap's effect on the best val loss with its interval and verdict, beside the seed
    project's, and the plot of the intervals."""
    swaps = effect_rows(results)
    if not swaps:
        return []
    header = ["swap", "best val loss, baseline → swapped", "effect [95% interval]", "runs converged", "verdict",
              "seed project (10M)"]
    rows = []
    for result in swaps:
        baseline, swapped = (variant["summary"]["best_val_loss"] for variant in result["variants"])
        seed_project = result.get("seed_project_effect")
        rows.append([result["title"], f"{spread_text(baseline)} → {spread_text(swapped)}",
                     effect_text(result["effect"]), result["effect"]["converged"], result["effect"]["verdict"],
                     "—" if seed_project is None else f"{seed_project:+.3f}"])
    first = swaps[0]
    config = first["variants"][0]["config"]
    params = first["variants"][0]["params"]
    where = ("the 10M presets, gpu recipe" if first["setting"] == "full" else
             f"the converge-cpu size: {params:,} parameters, {config['n_layer']} blocks × {config['n_embd']} wide, "
             f"context {config['block_size']}")
    lines = ["## What each swap is worth", "",
             f"Each swap's effect on the best val loss, swapped minus baseline, paired by seed ({len(first['seeds'])} "
             f"seeds; negative is better), every run trained until it stopped improving. Measured at {where}, on "
             f"{first['provenance']['device']}{CPU_RUNS if first['setting'] == 'cpu' else ''}.",
             "", *markdown_table(header, rows)]
    return lines + effects_plot("effects", [(result["name"], result["effect"]) for result in swaps], docs_dir,
                                "each swap's effect (95% interval)")


def seed_project_note(results: list[dict]) -> list[str]:
    """Where the key table's seed-project column comes from, and why it can differ from a CPU-size measurement."""
    swaps = effect_rows(results)
    if not swaps or swaps[0]["setting"] != "cpu":
        return []
    return ["The seed project's column is its own measurement at 10M parameters, a 256-character context and its own "
            "schedule; ours are models about a hundredth of that size. Where the two disagree, size is the first "
            "suspect: a part can be worth more, less or nothing at a scale where other limits dominate. The RoPE row "
            "is also measured at three sizes (the pos_scale section of docs/results.md), and `uv run python -m "
            "experiments.swaps all --full` runs the 10M comparison on a GPU."]


def effects_plot(name: str, effects: list[tuple[str, dict]], docs_dir: Path, title: str) -> list[str]:
    """docs/plots/<name>.png of paired effects ((label, effect) each; those with an interval), or []."""
    drawn = [(label, effect["mean"], effect["low"], effect["high"]) for label, effect in effects
             if effect["low"] is not None]
    if not drawn:
        return []
    return plot_file(name, docs_dir, title, lambda plots, path: plots.plot_effects(drawn, path, title))


def readme_results(summary: list[str]) -> list[str]:
    """The README's results: the key table and its plot, and where everything else is."""
    return [*summary, "", "Every result, each with its device, commands and plots (the learning ladder, the default "
            "run, vanilla against modern at full size, each swap's curves, swap effects by model size, the KV "
            "cache, tokenizers, benchmarks): [docs/results.md](docs/results.md)."]


def scale_section(result: dict, docs_dir: Path) -> list[str]:
    """One swap at several model sizes: does its effect grow or shrink with size?"""
    header = ["size (blocks × width)", "params, learned / RoPE", "best val loss, learned", "best val loss, RoPE",
              "effect [95% interval]", "runs converged", "verdict"]
    rows = [[size["size"].replace("x", " × "), f"{size['params']['vanilla']:,} / {size['params']['rope']:,}",
             spread_text(size["best_val_loss"]["vanilla"]), spread_text(size["best_val_loss"]["rope"]),
             effect_text(size["effect"]), size["effect"]["converged"], size["effect"]["verdict"]]
            for size in result["sizes"]]
    title = f"{result['name']}: {result['title']}"
    return [f"## {title}", "",
            f"Learned absolute positions against RoPE on the converge-cpu recipe at {len(result['sizes'])} sizes "
            f"(the one with no changed fields is the recipe's own), {len(result['seeds'])} seeds each, every run "
            "trained until its val loss had not "
            f"improved for {result['patience']} evaluations. Effect: RoPE − learned best val loss, seed by seed.",
            "", *markdown_table(header, rows),
            *effects_plot(result["name"], [(size["size"], size["effect"]) for size in result["sizes"]], docs_dir,
                          "RoPE − learned positions, by model size"),
            "", provenance_text(result)]


def final_section(result: dict, docs_dir: Path) -> list[str]:
    """Vanilla against modern at full size: parameters, val loss, time, and the gap between them."""
    steps = list(result["variants"][0]["summary"]["val_loss_at"])
    header = ["preset", "params", *[f"val loss @ {step}" for step in steps], "best val loss", "best val bpc",
              "train time (s)", "whole process (s)", "tokens/s"]
    rows = []
    for variant in result["variants"]:
        summary = variant["summary"]
        rows.append([variant["name"], f"{variant['params']:,}",
                     *[spread_text(summary["val_loss_at"][step]) for step in steps],
                     spread_text(summary["best_val_loss"]), spread_text(summary["best_val_bpc"], ".3f"),
                     spread_text(summary["elapsed_s"], ".0f"), spread_text(summary["process_seconds"], ".0f"),
                     spread_text(summary["tokens_per_sec"], ",.0f")])
    vanilla, modern = (variant["summary"] for variant in result["variants"])
    gap = modern["best_val_loss"]["mean"] - vanilla["best_val_loss"]["mean"]
    time_ratio = modern["elapsed_s"]["mean"] / vanilla["elapsed_s"]["mean"]
    text = (f"Both presets as model.py defines them, trained by train.py with the same data, steps, schedule, "
            f"dropout and seeds. Modern minus vanilla, best val loss: {gap:+.4f}; modern's train time is "
            f"{time_ratio:.2f}× vanilla's. Whole process: train.py from start to exit, set-up included.")
    text += convergence_note(result["variants"], "the gap")
    title = f"{result['name']}: {result['title']}"
    return [f"## {title}", "", text, "", setting_text(result, result["seeds"]), "", *markdown_table(header, rows),
            *plot(result["name"], curves_of(result["variants"], "val_loss"), docs_dir, title,
                  "val loss (nats per token)"),
            "", provenance_text(result)]


def convergence_note(variants: list[dict], what: str) -> str:
    """For a comparison on a fixed schedule: a sentence saying how many runs had not converged
    (stats.convergence), so that `what` reads as what the schedule buys; "" when all had."""
    unconverged = [check["why"] for variant in variants if "skipped" not in variant for run in variant["runs"]
                   if not (check := stats.convergence(run["metrics"]))["converged"]]
    if not unconverged:
        return ""
    return (f" {len(unconverged)} of the runs had not converged (the first: {unconverged[0]}), so {what} is what this "
            "schedule buys, not what the models can reach.")


def kvcache_section(result: dict, docs_dir: Path) -> list[str]:
    header = ["model", "weights", "params", "new tokens", "tokens/s without cache", "tokens/s with cache",
              "speedup", "identical tokens"]
    rows = [[model["name"], model["weights"], f"{model['params']:,}", str(model["new_tokens"]),
             f"{model['tokens_per_sec_without_cache']:,.0f}", f"{model['tokens_per_sec_with_cache']:,.0f}",
             f"{model['speedup']:.1f}x",
             "yes" if model["identical"] else f"NO (first difference at token {model['first_difference']})"]
            for model in result["models"]]
    text = (f"Greedy decoding (temperature 0) of one sequence from a one-token prompt, in {result['dtype']}, "
            f"with `generate.generate(model, ..., use_kv_cache=True/False)`; tokens/s is the median of "
            f"{result['repeats']} timed generations each way, after a short warm-up. Twice the context is "
            "generated by default, so the window slides and the cache is refilled. Identical tokens: the two "
            "token id sequences are equal.")
    return [f"## kvcache: {result['title']}", "", text, "", *markdown_table(header, rows), "", provenance_text(result)]


def tokenizers_section(result: dict, docs_dir: Path) -> list[str]:
    header = ["tokenizer", "vocab", "params", "chars/token", "context (chars)", "final val bpc", "best val bpc",
              "final val loss/token", "tokens/s", "chars/s", "train time (s)"]
    rows = []
    for variant in result["variants"]:
        if "skipped" in variant:
            rows.append([variant["name"], variant["skipped"], *["—"] * (len(header) - 2)])
            continue
        summary = variant["summary"]
        rows.append([variant["name"], f"{variant['vocab_size']:,}", f"{variant['params']:,}",
                     f"{variant['chars_per_token']:.2f}", f"{variant['context_chars']:.0f}",
                     spread_text(summary["final_val_bpc"]), spread_text(summary["best_val_bpc"]),
                     spread_text(summary["final_val_loss"]), spread_text(summary["tokens_per_sec"], ",.0f"),
                     spread_text(variant["chars_per_sec"], ",.0f"), spread_text(summary["elapsed_s"], ".0f")])
    trained = [variant for variant in result["variants"] if "skipped" not in variant]
    text = (f"Every tokenizer trains the same `{result['preset']}` model, with the same context in tokens (so "
            "a BPE model reads more characters of context and more text per step). Bits per character (val "
            "loss summed over the val text / its characters / ln 2) compare tokenizers fairly; loss per token "
            "does not. The embedding table, and so the parameter count, grows with the vocabulary.")
    text += convergence_note(trained, "the comparison")
    title = f"tokenizers: {result['title']}"
    return [f"## {title}", "", text, "", setting_text(result, result["seeds"]), "", *markdown_table(header, rows),
            *plot("tokenizers", curves_of(trained, "val_bpc"), docs_dir, title, "val bits per character"),
            "", provenance_text(result)]


def speed_section(result: dict, docs_dir: Path) -> list[str]:
    variant = result["variants"][0]
    compiled = result["compile"]
    header = ["device", "preset", "params", "target val loss", "reached at step", "time to target (s)",
              "compile (s, estimated)", "time to target without compile (s)", "tokens/s", "best val loss"]
    row = [result["provenance"]["device"], result["preset"], f"{variant['params']:,}", f"{result['target_loss']}",
           optional(result["step_at_target"], "d") if result["reached"] else "not reached",
           optional(result["time_to_target_s"], ".1f"), optional(compiled and compiled["compile_s"], ".1f"),
           optional(result["time_to_target_without_compile_s"], ".1f"),
           spread_text(variant["summary"]["tokens_per_sec"], ",.0f"), spread_text(variant["summary"]["best_val_loss"])]
    text = ("Time to target: train.py's elapsed_s at the first evaluation at or below the target (setup "
            "excluded, evaluations included; resolution one eval interval). Compile: the first eval interval's "
            "time minus what its steps take at the median pace of the later intervals.")
    return [f"## speed: {result['title']}", "", text, "", setting_text(result, [variant["runs"][0]["seed"]]), "",
            *markdown_table(header, [row]), "", provenance_text(result)]


def default_run_section(result: dict, docs_dir: Path) -> list[str]:
    """What `uv run train.py` with no flags reaches on one device, and how long the whole process took."""
    run = result["variants"][0]["runs"][0]
    header = ["device", "model", "params", "steps", "best val loss", "best val bpc", "whole process (s)",
              "train.py clock (s)", "tokens/s"]
    row = [result["provenance"]["device"], run["config"]["norm"] + "/" + run["config"]["mlp"] + "/"
           + run["config"]["pos"] + f", {run['config']['n_layer']}x{run['config']['n_embd']}",
           f"{run['params']:,}", str(run["final_step"]), f"{run['best_val_loss']:.4f}", f"{run['best_val_bpc']:.3f}",
           f"{run['process_seconds']:.0f}", f"{run['elapsed_s']:.0f}", optional(run["tokens_per_sec"], ",.0f")]
    text = ("The whole process: start-up, data, training, evaluations and checkpoints (the end-of-run sample is "
            "not included); train.py's clock starts after set-up.")
    return [f"## {result['name']}: {result['title']}", "", text, "", setting_text(result, [run["seed"]]), "",
            *markdown_table(header, [row]), "", provenance_text(result)]


def budget_text(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def budget_section(result: dict, docs_dir: Path) -> list[str]:
    """experiments.budget: what train.py --time-budget reached for each budget and recipe, and how long the
    whole process took; a plot of best val (whole split) against the budget, one line per recipe."""
    header = ["budget", "recipe", "params", "seed", "steps", "tokens/s", "best val, whole split", "bpc",
              "best val, windows", "whole process (s)", "over budget", "load at start", "device", "commit",
              "weight decay", "matmul GFLOP/s"]
    rows = [[budget_text(run["budget_s"]), run["recipe"], f"{run['params']:,}", str(run["seed"]), str(run["steps"]),
             optional(run["tokens_per_sec"], ",.0f"), f"{run['best_val_loss_whole_split']:.4f}",
             f"{run['best_val_bpc_whole_split']:.3f}", f"{run['best_val_loss_windows']:.4f}",
             f"{run['process_seconds']:.0f}", f"{run['over_budget']:+.1%}",
             optional(run["load_average_at_start"], ".1f"), run_device(run), run["git_commit"][:10],
             f"{run['schedule']['weight_decay']:g}", matmul_rate(run)]
            for run in result["runs"]]
    text = ("Each run is `uv run train.py --recipe RECIPE --time-budget BUDGET` (no end-of-run sample), one at a "
            "time with every core. Best val, whole split: best.pt evaluated on every window of the val split at the "
            "end, inside the budget (the run's last metrics.jsonl record); windows: the best of the run's periodic "
            "evaluations on its fixed windows. Whole process: timed from outside, start-up to exit. Load at start: "
            "the 1-minute load average when the run began (the run before it in the study still counts in it). "
            "Device and commit: where and from which code each run came; a study adds to the runs of earlier ones, "
            "which may have run on another machine (runs from before the device was recorded say so), or with "
            "another version of the recipe (its weight decay is the setting that has changed). Matmul GFLOP/s: "
            "the run's machine's matrix products in training's precision (2048 x 2048), measured just before it, "
            "which tells two machines of the same name apart.")
    by_recipe: dict[str, list[tuple[float, float]]] = {}
    for run in result["runs"]:
        by_recipe.setdefault(f"{run['recipe']} ({run['params'] / 1e6:.1f}M)", []).append(
            (run["budget_s"] / 60, run["best_val_loss_whole_split"]))
    figure = plot_file(result["name"], docs_dir, result["title"],
                       lambda plots, path: plots.plot_against_budget(by_recipe, path, result["title"]))
    return [f"## {result['name']}: {result['title']}", "", text, "", *markdown_table(header, rows), *figure, "",
            provenance_text(result, runs=False)]


def matmul_rate(run: dict) -> str:
    """A budget run's machine speed as its row records it, in GFLOP/s (older rows did not record it)."""
    rate = run.get("matmul_flops_per_s")
    return "not recorded" if rate is None else f"{rate / 1e9:,.0f}"


def run_device(run: dict) -> str:
    """The device a budget run trained on, as its row records it (older rows did not record it)."""
    return run.get("device") or "device not recorded"


def budget_quickstart(results: list[dict]) -> list[str]:
    """The Quick start's line on what --time-budget buys on a CPU: at each budget measured, the recipe whose
    seeds reached the lowest mean best val loss (whole split), with the range over its seeds and their
    training speed. The study is budget_cpu; a budget_cpu_* file is the same runs on another machine."""
    studies = sorted((r for r in results if r["kind"] == "budget" and r["name"].startswith("budget_cpu")),
                     key=lambda r: r["name"] != "budget_cpu")  # the study first
    if not studies or studies[0]["name"] != "budget_cpu":
        return []
    line = ("`uv run train.py --time-budget 10m` (any time: `30s`, `1h`, ...) trains for that long, the whole "
            "process counted, with the recipe chosen for the time. Best val loss on the whole val split, on a "
            f"CPU: {'; '.join(best_per_budget(studies[0]))} (`budget_cpu` in docs/results.md, with every run's "
            "device).")
    for other in studies[1:]:
        ratio = speed_ratio(other, studies[0])
        speed = f", which trains the same recipe {ratio:.2f}x as fast" if ratio else ""
        line += f" On another machine{speed} (`{other['name']}`): {'; '.join(best_per_budget(other))}."
    return ["", line]


def speed_ratio(result: dict, study: dict) -> float | None:
    """How fast result's machine trains next to the study's: the median tokens/s of its runs over the median
    of the study's runs with the same budget and recipe (None when they share none)."""
    def cell(run: dict) -> tuple[float, str]:
        return run["budget_s"], run["recipe"]

    shared = {cell(run) for run in result["runs"]} & {cell(run) for run in study["runs"]}
    if not shared:
        return None
    ours, theirs = ([run["tokens_per_sec"] for run in r["runs"] if cell(run) in shared] for r in (result, study))
    return statistics.median(ours) / statistics.median(theirs)


def best_per_budget(result: dict) -> list[str]:
    """For each budget of a budget study, "10 min: 1.448 to 1.452 over 3 seeds (recipe, size, speed; device)":
    the recipe whose seeds reached the lowest mean best val loss (whole split) there."""
    cells: dict[tuple[float, str], list[dict]] = {}
    for run in result["runs"]:
        cells.setdefault((run["budget_s"], run["recipe"]), []).append(run)
    best: dict[float, list[dict]] = {}
    for (seconds, _), runs in cells.items():
        mean = statistics.fmean(run["best_val_loss_whole_split"] for run in runs)
        if seconds not in best or mean < statistics.fmean(r["best_val_loss_whole_split"] for r in best[seconds]):
            best[seconds] = runs
    parts = []
    for seconds, runs in sorted(best.items()):
        losses = sorted(run["best_val_loss_whole_split"] for run in runs)
        speeds = sorted(run["tokens_per_sec"] for run in runs)
        reached = (f"{losses[0]:.2f}" if len(losses) == 1
                   else f"{losses[0]:.3f} to {losses[-1]:.3f} over {len(losses)} seeds")
        speed = f"{speeds[0]:,.0f}" if len(speeds) == 1 else f"{speeds[0]:,.0f} to {speeds[-1]:,.0f}"
        devices = sorted({run_device(run) for run in runs})
        parts.append(f"{budget_text(seconds)}: {reached} ({runs[0]['recipe']}, {runs[0]['params'] / 1e6:.1f}M "
                     f"parameters, {speed} tokens/s; {', '.join(devices)})")
    return parts


def choice_section(result: dict, docs_dir: Path) -> list[str]:
    """experiments.choices: the variants of one training choice over seeds, and the paired effect of the first
    change on the best val loss."""
    converging, effect = result["converging"], result["effect"]
    header = ["variant", "train.py flags", "steps", "best val loss", "best at step",
              *(["converged"] if converging else []), "train time (s)", "tokens/s"]
    rows = []
    for variant in result["variants"]:
        summary = variant["summary"]
        rows.append([variant["name"], " ".join(variant["flags"]) or "(the recipe's own)",
                     spread_text(summary["final_step"], ".0f"), spread_text(summary["best_val_loss"]),
                     spread_text(summary["best_step"], ".0f"), *([converged_text(variant)] if converging else []),
                     spread_text(summary["elapsed_s"], ".0f"), spread_text(summary["tokens_per_sec"], ",.0f")])
    run = result["variants"][0]["runs"][0]
    config, schedule = run["config"], run["schedule"]
    if "step_seconds" in result:  # the optimizer comparison: a fixed time budget
        how = (f"`uv run train.py`'s own run on a CPU (the cpu recipe: {config['n_layer']} blocks × {config['n_embd']} "
               f"wide, context {config['block_size']}, batches of {schedule['batch_size']}), one run at a time with "
               f"every core. Equal time: one step took {result['step_seconds']['adamw'] * 1e3:.1f} ms with AdamW and "
               f"{result['step_seconds']['muon'] * 1e3:.1f} ms with Muon here, so AdamW trains "
               f"{result['steps']['adamw']} steps to Muon's {result['steps']['muon']}.")
    elif "chars" not in result:  # the weight decay comparison: a fixed number of steps on the whole text
        how = (f"cpu-10m's model ({config['n_layer']} blocks × {config['n_embd']} wide, context "
               f"{config['block_size']}, {run['params']:,} parameters) with its batch of {schedule['batch_size']} "
               f"and its schedule, for {schedule['max_iters']} steps, val loss on the whole val split every "
               f"{schedule['eval_interval']} steps; two runs at a time, one thread each: a fixed number of steps, "
               "so the machine's speed does not enter the comparison.")
    else:
        how = (f"Vanilla parts at {config['n_layer']} blocks × {config['n_embd']} wide, context "
               f"{config['block_size']}, {run['params']:,} parameters, on the first {result['chars']:,} characters of "
               "Tiny Shakespeare (the last tenth validates): a model too large for its data, where dropout matters. "
               f"Each run trained until its val loss had not improved for {result['patience']} evaluations; it "
               f"counts as converged when the last {result['converged_window']:.0%} of its steps improved its best "
               f"val loss by less than {result['converged_gain']} nats.")
    seeds = ", ".join(map(str, result["seeds"]))
    title = f"{result['name']}: {result['title']}"
    return [f"## {title}", "", how + f" Seeds {seeds}; ± is the standard deviation over seeds.", "",
            *markdown_table(header, rows), "",
            f"**Effect** on the best val loss ({effect['changed']} − {effect['baseline']}, seed by seed, mean and 95% "
            f"interval): {effect_text(effect)}. **Verdict: {effect['verdict']}.**",
            *plot(result["name"], curves_of(result["variants"], "val_loss"), docs_dir, title,
                  "val loss (nats per token)"),
            "", provenance_text(result)]


def bench_section(result: dict, docs_dir: Path) -> list[str]:
    """A bench.py results file: its own table, and how it was measured."""
    load = result.get("load_average_at_start")
    busy = f"; 1-minute load average at the start {load:.2f}" if load is not None else ""
    return [f"## {result['name']}: `uv run {result['command']}`", "",
            f"Written by bench.py to `experiments/results/{result['name']}.json`.", "",
            result["table"], "",
            f"Device: {result['device']}; torch {result['torch']}; commit {(result['git_commit'] or '?')[:10]}"
            f"{' with uncommitted changes' if result.get('git_dirty') else ''}; {result['date']}{busy}."]


def download_text(size: int) -> str:
    """A download size in GB (10^9 bytes), or in MB below one GB."""
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def download_size_section(result: dict, docs_dir: Path) -> list[str]:
    """What the first `uv run` downloads, added up from uv.lock by experiments/download_size.py."""
    rows = [["`uv run ...` (the project and the dev group)", download_text(result["uv_run_bytes"])],
            ["`uv run --no-dev ...` (torch and numpy alone)", download_text(result["no_dev_bytes"])],
            ["of that, used only on a GPU (PyTorch's CUDA libraries, Triton)", download_text(result["gpu_only_bytes"])]]
    text = (f"The wheels uv.lock pins for {result['platform']}, with the sizes uv.lock records (GB and MB: 10^9 "
            "and 10^6 bytes). "
            "The first `uv run` downloads them; later runs find them in uv's cache.")
    p = result["provenance"]
    return [f"## {result['name']}: {result['title']}", "", text, "", *markdown_table(["command", "download"], rows), "",
            f"uv.lock sha256 {p['uv_lock_sha256'][:12]}; commit {p['git_commit'][:10]}; {p['date']}. "
            f"Made by `{p['command'].strip()}`."]


def quickstart_lines(results: list[dict]) -> list[str]:
    """The README's Quick start figures: what the first `uv run` downloads (download_size.json) and what the
    CPU default trains and reaches (every default run on a CPU)."""
    lines = []
    for size in (result for result in results if result["kind"] == "download_size"):
        dev_tools = size["uv_run_bytes"] - size["no_dev_bytes"]
        lines += [f"The first `uv run` downloads {download_text(size['uv_run_bytes'])} on {size['platform']}: "
                  f"{download_text(size['gpu_only_bytes'])} of it is PyTorch's CUDA libraries, which only a GPU "
                  f"uses, and {download_text(dev_tools)} the dev tools, which `uv run --no-dev train.py` leaves out."]
    default_runs = [(result, result["variants"][0]["runs"][0]) for result in results
                    if result["kind"] == "default_run" and result["device_type"] == "cpu"]
    if default_runs:
        best = [run["best_val_loss"] for _, run in default_runs]
        sizes = ", ".join(sorted({f"the `{result['preset']}` preset ({run['params']:,} parameters) for "
                                  f"{run['final_step']} steps" for result, run in default_runs}))
        reached = (f"a best val loss from {min(best):.2f} to {max(best):.2f}" if len(best) > 1
                   else f"a best val loss of {best[0]:.2f}")
        lines += ["", f"On a CPU, `uv run train.py` trains {sizes}, not the 10M presets. Measured runs reached "
                      f"{reached}; it varies with the CPU and the precision (`--dtype auto` trains in bfloat16 on "
                      "CPUs with native bf16 units, else in float32):", ""]
        for result, run in sorted(default_runs, key=lambda pair: pair[1]["best_val_loss"]):
            precision = f", {result['precision']}" if "precision" in result else ""
            load = result.get("load_average_at_start")
            busy = f" (1-minute load average {load:.1f} at the start)" if load is not None else ""
            lines.append(f"- {run['best_val_loss']:.4f} in {run['process_seconds']:.0f} s{precision}, on "
                         f"{result['provenance']['device']}{busy}: `{result['name']}` in docs/results.md")
    return lines + budget_quickstart(results)


# ----------------------------------------------------------------------------------------------------
# The ladder (experiments/ladder.py): one table for results.md, and a measured block for each chapter of
# docs/learn/, between <!-- measured:NAME:start --> and <!-- measured:NAME:end -->.


def one_line(text: str, length: int = 60) -> str:
    """The start of a sample for a table cell: newlines shown as ↵, pipes escaped."""
    return "`" + text[:length].replace("\n", "↵").replace("`", "'").replace("|", "\\|") + "`"


def ladder_header() -> list[str]:
    return ["rung", "adds", "config change", "params", "val loss", "val bpc", "fall over last quarter", "sample"]


def counted_row(counted: dict) -> list[str]:
    return [f"{counted['name']} (counted)", "no training: frequencies in the training text",
            f"{counted['probabilities']:,} probabilities, {counted['smoothing']} smoothing", "—",
            f"{counted['val_loss']:.4f}", f"{counted['val_bpc']:.3f}", "—", one_line(counted["sample"])]


def rung_row(rung: dict) -> list[str]:
    summary = rung["summary"]
    change = ", ".join(f"{field}: {old} → {new}" for field, (old, new) in rung["config_diff"].items())
    return [rung["name"], rung["adds"], change or "—", f"{rung['params']:,}", spread_text(summary["best_val_loss"]),
            spread_text(summary["best_val_bpc"], ".3f"), f"{rung['plateau']['gain']:.4f}", one_line(rung["sample"])]


def ladder_setting_text(result: dict) -> str:
    """The size, schedule, seeds and the rules the numbers follow, from the deepest rung's first run."""
    rung = max(result["rungs"], key=lambda rung: rung["config"]["n_layer"])
    run, schedule = rung["runs"][0], result["schedule"]
    config = run["config"]
    size = "the ladder's CPU size" if result["setting"] == "cpu" else "its 10M size"
    other = ("`--full` trains the same rungs at the 10M size with train.py's GPU recipe" if result["setting"] == "cpu"
             else "the schedule is train.py's GPU recipe")
    windows = schedule["eval_windows"] or "the whole"
    cpu = result.get("train_cpu_seconds")
    cpu_text = f", and used {cpu / 60:.1f} CPU-minutes" if cpu is not None else ""
    return (f"Every rung is the vanilla preset at {size} ({blocks_text(result)}, width "
            f"{config['n_embd']}, {config['n_head']} heads, context {config['block_size']}, dropout "
            f"{config['dropout']}) with the head untied from the embedding and the parts the rung does not have "
            f"yet switched off; {other}. Training: {run['final_step']} steps of {schedule['batch_size']} × "
            f"{config['block_size']} tokens, lr {schedule['lr']} → {schedule['min_lr']} (warmup "
            f"{schedule['warmup_iters']}, cosine), AdamW β2 {schedule['beta2']}, weight decay "
            f"{schedule['weight_decay']}, {schedule['dtype']}; val loss on {windows} val split every "
            f"{schedule['eval_interval']} steps. Val loss and bpc: the best evaluation of each run, mean ± sample "
            f"standard deviation over seeds {', '.join(map(str, result['seeds']))}. Fall over the last quarter: "
            f"how much the mean val loss still fell over the last quarter of the steps; {plateau_text(result)} "
            "Samples: the first seed's best checkpoint, temperature 1, after a newline. The whole ladder took "
            f"{result['wall_seconds'] / 60:.1f} minutes{cpu_text}.")


def blocks_text(result: dict) -> str:
    """How many blocks the rungs have: "no blocks", "1 block" or "0 to 4 blocks" where they differ."""
    depths = sorted({rung["config"]["n_layer"] for rung in result["rungs"]})
    count = lambda n: "no blocks" if n == 0 else f"{n} block{'s' if n != 1 else ''}"
    return count(depths[0]) if len(depths) == 1 else f"{depths[0]} to {count(depths[-1])}"


def plateau_text(result: dict) -> str:
    """Which rungs had flattened by the end of their runs, and what that means for the others."""
    still_falling = [rung["name"] for rung in result["rungs"] if not rung["plateau"]["flat"]]
    if not still_falling:
        return f"every rung fell less than {result['plateau_gain']} by then: each had flattened."
    return (f"{len(result['rungs']) - len(still_falling)} of the {len(result['rungs'])} rungs fell less than "
            f"{result['plateau_gain']} by then and had flattened; {', '.join(still_falling)} were still improving, "
            "so their numbers are what this schedule buys, not the best those models reach.")


def ladder_section(result: dict, docs_dir: Path) -> list[str]:
    """The whole ladder: the counted floor, every trained rung, the bigram check, plots and generation."""
    rows = [counted_row(counted) for counted in result["counted"]] + [rung_row(rung) for rung in result["rungs"]]
    by_name = {rung["name"]: rung for rung in result["rungs"]}
    bigram = next(counted["val_loss"] for counted in result["counted"] if counted["name"] == "bigram")
    main_path = [by_name[name] for name in ("bigram", "one-head", "heads", "ffn", "residual", "norm", "stacked")
                 if name in by_name]
    branches = [rung for rung in result["rungs"] if rung["parent"] == "stacked" or rung["name"] == "stacked"]
    title = f"{result['name']}: {result['title']}"
    return [f"## {title}", "", ladder_setting_text(result), "", *markdown_table(ladder_header(), rows), "",
            bigram_check_text(result["bigram_check"]),
            *plot(result["name"], curves_of(main_path, "val_loss"), docs_dir, f"{title}, one part at a time",
                  "val loss (nats per token)", {"counted bigram": bigram}),
            *(plot(f"{result['name']}_swaps", curves_of(branches, "val_loss"), docs_dir,
                   f"{result['name']}: the stack without residuals, and the modern swaps",
                   "val loss (nats per token)")
              if len(branches) > 1 else []),
            "", *kvcache_lines(result["kvcache"]), "", *sampling_lines(result["sampling"]), "",
            provenance_text(result)]


def bigram_check_text(check: dict) -> str:
    verdict = "within" if check["within"] else "OUTSIDE"
    return (f"The bigram network's val loss, {check['network']:.4f}, is {check['difference']:+.4f} from the counted "
            f"bigram's {check['counted']:.4f}: {verdict} the tolerance of {check['tolerance']} nats.")


def kvcache_lines(kvcache: dict) -> list[str]:
    header = ["new tokens", "tokens/s without cache", "tokens/s with cache", "speedup", "identical text"]
    row = [str(kvcache["new_tokens"]), f"{kvcache['tokens_per_sec_without_cache']:,.0f}",
           f"{kvcache['tokens_per_sec_with_cache']:,.0f}", f"{kvcache['speedup']:.1f}x",
           "yes" if kvcache["identical"] else f"NO (first difference at token {kvcache['first_difference']})"]
    return [f"KV cache, on `{kvcache['checkpoint']}`: greedy decoding of twice the context (so the window "
            f"slides), in float32; tokens/s is the median of {kvcache['repeats']} timings each way.", "",
            *markdown_table(header, [row])]


def sampling_setting(sample: dict) -> str:
    parts = [f"temperature {sample['temperature']}"]
    parts += [f"top-k {sample['top_k']}"] if sample["top_k"] is not None else []
    parts += [f"top-p {sample['top_p']}"] if sample["top_p"] is not None else []
    return ", ".join(parts)


def sampling_lines(sampling: dict) -> list[str]:
    header = ["setting", "words", "words found in the training text", "distinct words", "text"]
    rows = [[sampling_setting(sample), str(sample["words"]), optional(sample["known"] and 100 * sample["known"], ".0f")
             + " %", optional(sample["distinct"] and 100 * sample["distinct"], ".0f") + " %",
             one_line(sample["text"], 80)] for sample in sampling["samples"]]
    return [f"Sampling, on `{sampling['checkpoint']}`: {sampling['new_tokens']} characters after the prompt "
            f"`{sampling['prompt'].strip()}`, seed {sampling['seed']} every time.", "", *markdown_table(header, rows)]


def text_block(text: str) -> list[str]:
    return ["```", text, "```"]


def ladder_blocks(result: dict) -> dict[str, list[str]]:
    """The measured block of every chapter in docs/learn/, by name."""
    by_name = {rung["name"]: rung for rung in result["rungs"]}
    blocks = {"table": ["", ladder_setting_text(result), "",
                        *markdown_table(ladder_header(), [counted_row(c) for c in result["counted"]]
                               + [rung_row(rung) for rung in result["rungs"]]),
                        "", f"![the ladder's val loss curves](plots/{result['name']}.png)",
                        "", provenance_text(result)]}
    counted_samples = [line for counted in result["counted"] for line in
                       ["", f"Sampled from the counted {counted['name']} model:", *text_block(counted["sample"])]]
    counted_rows = [counted_row(counted) for counted in result["counted"]]
    blocks["counting"] = [*markdown_table(ladder_header(), counted_rows), *counted_samples]
    for rung in result["rungs"]:
        before = ([rung_row(by_name[rung["parent"]])] if rung["parent"] in by_name
                  else [counted_row(next(c for c in result["counted"] if c["name"] == "bigram"))])
        checkpoint = f"{rung['runs'][0]['out_dir']}/best.pt"
        blocks[rung["name"]] = [*markdown_table(ladder_header(), [*before, rung_row(rung)]), "",
                                f"Sampled from `{checkpoint}` (temperature 1, after a newline):",
                                *text_block(rung["sample"]), "",
                                f"To train this rung alone, run the command its first seed ran (the whole process "
                                f"took {rung['runs'][0]['process_seconds']:.0f} s here, on "
                                f"{result['provenance']['device']}):", "",
                                *text_block(rung["runs"][0]["command"])]
    if "bigram" in by_name:
        blocks["bigram"] += ["", bigram_check_text(result["bigram_check"])]
    blocks["kvcache"] = kvcache_lines(result["kvcache"])
    blocks["sampling"] = [*sampling_lines(result["sampling"]), *[
        line for sample in result["sampling"]["samples"] for line in ["", f"{sampling_setting(sample)}:",
                                                                      *text_block(sample["text"])]]]
    blocks["one-thing"] = one_thing_lines(result)
    return blocks


def one_thing_lines(result: dict) -> list[str]:
    """Each modern swap alone against the stack, and all of them at once: the bundle hides which one helped."""
    by_name = {rung["name"]: rung for rung in result["rungs"]}
    if not all(name in by_name for name in ("stacked", "rmsnorm", "swiglu", "rope", "modern")):
        return ["Not measured yet: run the whole ladder."]
    base = by_name["stacked"]["summary"]["best_val_loss"]["mean"]
    header = ["change from the stacked vanilla GPT", "val loss", "change in val loss"]
    rows = []
    for name in ("rmsnorm", "swiglu", "rope", "modern"):
        summary = by_name[name]["summary"]["best_val_loss"]
        rows.append([f"{name}: {by_name[name]['adds']}", spread_text(summary), f"{summary['mean'] - base:+.4f}"])
    changes = {name: by_name[name]["summary"]["best_val_loss"]["mean"] - base for name in ("rmsnorm", "swiglu", "rope")}
    bundle = by_name["modern"]["summary"]["best_val_loss"]["mean"] - base
    rows.append(["the three single changes, added up", "—", f"{sum(changes.values()):+.4f}"])
    best = min(changes, key=changes.get)
    return [f"The stacked vanilla GPT: val loss {spread_text(by_name['stacked']['summary']['best_val_loss'])}.", "",
            *markdown_table(header, rows), "",
            f"Alone, {best} changed the val loss most ({changes[best]:+.4f}). All at once (with the biases removed "
            f"too) they changed it by {bundle:+.4f}, {bundle - sum(changes.values()):+.4f} away from the sum of the "
            "single changes: from the bundle alone there is no telling which part did what."]


def workshop_band_section(result: dict, docs_dir: Path) -> list[str]:
    """The best val losses the project's own parts reach on the workshop capstone's recipe (workshop.py band),
    and the band a learner's GPT is judged against (docs/workshop.md)."""
    header = ["seed", "best val loss", "steps", "train seconds"]
    rows = [[str(run["seed"]), f"{run['best_val_loss']:.4f}", str(run["steps"]), f"{run['train_seconds']:.0f}"]
            for run in result["runs"]]
    text = (f"`uv run workshop.py capstone` trains a GPT of the learner's parts with `train.py "
            f"{' '.join(result['train_flags'])}`; the project's own parts reach {result['mean']:.4f} (standard "
            f"deviation {result['std']:.4f}), so the band is {result['mean']:.4f} ± {result['half_width']:.4f}.")
    return [f"## {result['name']}: {result['title']}", "", text, "", *markdown_table(header, rows), "",
            provenance_text(result, runs=False)]


def lesson_lines(result: dict) -> list[str]:
    """A lesson's results file (lessons/): what the lesson wrote for its chapter (docs/learn/12-what-goes-wrong.md,
    the only page that shows it), and where it was measured."""
    return [*result["report"], "", provenance_text(result, runs=False)]


SECTIONS = {"swap": swap_section, "final": final_section, "kvcache": kvcache_section, "tokenizers": tokenizers_section,
            "speed": speed_section, "bench": bench_section, "default_run": default_run_section,
            "download_size": download_size_section, "ladder": ladder_section, "scale": scale_section,
            "choice": choice_section, "workshop_band": workshop_band_section, "budget": budget_section}


def load_results(results_dir: Path) -> list[dict]:
    """Every results file in results_dir, in the report's order."""
    results = []
    for path in sorted(Path(results_dir).glob("*.json")):
        result = json.loads(path.read_text())
        if "benchmark" in result:  # bench.py's files: named by their file, as one benchmark can have several
            result.update(name=path.stem, kind="bench")
        results.append(result)
    return sorted(results, key=lambda result: (ORDER.index(result["name"]) if result["name"] in ORDER else len(ORDER),
                                              result["name"]))


def build_report(results_dir: Path = common.RESULTS_DIR, docs_dir: Path = common.DOCS_DIR) -> Path:
    """Write docs_dir/results.md (and the plots) from every results_dir/*.json; returns its path."""
    results_dir, docs_dir = Path(results_dir), Path(docs_dir)
    results = load_results(results_dir)
    source = Path(os.path.relpath(results_dir.resolve(), docs_dir.resolve())).as_posix()
    lines = ["# Results", "",
             f"Generated by `uv run python -m experiments.report` from the files in [{source}]({source}), which the "
             "experiments write (see experiments/README.md). Do not edit: run the experiment again. The JSON "
             "files also hold every run's train.py command and metrics."]
    if not results:
        lines += ["", "No results yet: run an experiment."]
    summary = effects_lines(results, docs_dir)
    if summary:
        lines += ["", *summary]
        note = seed_project_note(results)
        lines += ["", *note] if note else []
    sections = {result["name"]: SECTIONS[result["kind"]](result, docs_dir) for result in results
                if result["kind"] != "lesson"}
    for section in sections.values():
        lines += ["", *section]
    path = docs_dir / "results.md"
    docs_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(as_taught("\n".join(lines)) + "\n")
    print(f"wrote {common.display_path(path)}", flush=True)
    if docs_dir.resolve() == (common.ROOT / "docs").resolve():  # the real docs, not a test's copy
        fill_marked_block(common.ROOT / "README.md", "results", readme_results(summary), "docs/")
        fill_marked_block(common.ROOT / "README.md", "quickstart", quickstart_lines(results), "docs/")
        for doc, names in MARKED_DOCS.items():
            chosen = [line for name in names if name in sections for line in ["", *sections[name]]]
            fill_marked_block(docs_dir / doc, "results", chosen or ["", "Not measured yet."], "")
    ladder = next((result for result in results if result["name"] == "ladder"), None)
    blocks = ladder_blocks(ladder) if ladder else {}
    blocks.update({result["name"]: lesson_lines(result) for result in results if result["kind"] == "lesson"})
    fill_learn_pages(docs_dir / "learn", blocks)
    return path


# The results files record each command as its process ran it: the interpreter, "python", then a script
# (train.py) or "-m" and a module (experiments.ladder). The pages show it as the README teaches it:
# "uv run train.py ...", "uv run python -m experiments.ladder". tests/test_one_voice.py holds every page,
# lesson and message to the same form.
BARE_PYTHON_COMMAND = re.compile(r"(?<!uv run )(?<![\w/!.-])python (-m (?=lessons|experiments)|(?=[\w/]*\w\.py\b))")


def as_taught(text: str) -> str:
    """text with every command that runs a script or a lessons/experiments module with python written with
    uv run (BARE_PYTHON_COMMAND)."""
    return BARE_PYTHON_COMMAND.sub(lambda match: "uv run python -m " if match.group(1) else "uv run ", text)


LEARN_MARKER = re.compile(r"<!-- measured:([\w-]+):start -->")
# A link to the code in a chapter: [`Block.forward`](../../model.py#L290-L298).
CODE_LINK = re.compile(r"\[`([\w.]+)`\]\(((?:\.\./)+)([\w/]+\.py)#L(\d+)(?:-L(\d+))?\)")


def fill_learn_pages(learn_dir: Path, blocks: dict[str, list[str]]) -> None:
    """Fill every <!-- measured:NAME:start --> block of the chapters in learn_dir with the measured block
    NAME, and point every code link at the lines that define what it names now."""
    for page in sorted(learn_dir.glob("*.md")):
        for name in LEARN_MARKER.findall(page.read_text()):
            lines = blocks.get(name, ["Not measured yet: run the command above, then "
                                      "`uv run python -m experiments.report`."])
            fill_marked_block(page, f"measured:{name}", lines, "../")
        page.write_text(CODE_LINK.sub(partial(code_link, page_dir=page.parent), page.read_text()))


def code_link(match: re.Match, page_dir: Path) -> str:
    """The link with its line anchors set to the span of the definition it names (unchanged if not found)."""
    name, up, file = match.group(1), match.group(2), match.group(3)
    span = definition_lines((page_dir / up / file).resolve(), name)
    if span is None:
        return match.group(0)
    return f"[`{name}`]({up}{file}#L{span[0]}-L{span[1]})"


def definition_lines(path: Path, dotted_name: str) -> tuple[int, int] | None:
    """First and last line of the class, function, method or assignment that dotted_name names in a Python file."""
    if not path.is_file():
        return None
    body = ast.parse(path.read_text()).body
    node = None
    for part in dotted_name.split("."):
        node = next((child for child in body if defined_name(child) == part), None)
        if node is None:
            return None
        body = getattr(node, "body", [])
    return node.lineno, node.end_lineno


def defined_name(node: ast.stmt) -> str | None:
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


# Other pages that show some results sections, between <!-- results:start --> and <!-- results:end -->.
MARKED_DOCS = {
    "model.md": ("final_cuda", "final_mps", "final_cpu", "norm", "mlp", "pos", "modern"),
    "training.md": ("default_cpu", "default_cpu_bf16", "default_cpu_float32", "default_cuda", "default_mps",
                    "budget_cpu", "budget_cpu_slower", "budget_cuda",
                    "bench_profile_cpu_bf16", "bench_peer", "bench_train_cpu_bf16",
                    "bench_train_cpu_bf16_attn_dropout0", "bench_train_cpu_bf16_fused",
                    "bench_train_cpu_bf16_compile", "bench_train", "bench_train_compile"),
    "generation.md": ("bench_generate_cpu_bf16", "bench_generate_cpu_bf16_manual", "bench_generate_cpu_bf16_float32",
                      "bench_generate_cpu_bf16_epyc", "bench_generate_cpu_bf16_epyc_float32", "bench_generate",
                      "bench_generate_bf16", "kvcache"),
    "tokenization.md": ("tokenizers",),
}


def fill_marked_block(page: Path, marker: str, lines: list[str], docs_prefix: str) -> None:
    """Replace what stands between a page's <!-- MARKER:start --> and <!-- MARKER:end --> with lines,
    headings one level down and links rewritten for a page at the repository root (docs_prefix "docs/")
    or inside docs/ (docs_prefix "")."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if not page.exists() or start not in (text := page.read_text()) or end not in text:
        return
    body = as_taught("\n".join(("#" + line if line.startswith("## ") else line) for line in lines))
    body = body.replace("](plots/", f"]({docs_prefix}plots/")
    if docs_prefix:
        body = body.replace("../experiments/", "experiments/")
    head, rest = text.split(start, 1)
    page.write_text(head + start + "\n" + body.strip() + "\n" + end + rest.split(end, 1)[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild docs/results.md and docs/plots from the results files.")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIR,
                        help="where the experiments' JSON files are (default: experiments/results)")
    parser.add_argument("--docs-dir", type=Path, default=common.DOCS_DIR,
                        help="where results.md and plots/ go (default: docs)")
    args = parser.parse_args(argv)
    build_report(args.results_dir, args.docs_dir)


if __name__ == "__main__":
    main()
