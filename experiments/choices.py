"""
Three training choices for a CPU, each measured for what it does to the val loss: over seeds,
as a paired difference with its 95% interval (experiments/stats.py).

    uv run python -m experiments.choices optimizer      # AdamW -> Muon on the default CPU run, at equal time
    uv run python -m experiments.choices attn-dropout   # attention weights dropped or not, where dropout matters
    uv run python -m experiments.choices weight-decay   # the cpu-10m recipe's weight decay against the shared one
    uv run python -m experiments.choices all

optimizer: `uv run train.py` as a learner runs it (the cpu recipe: the small preset, 600 steps of 16 x 256
tokens), with AdamW at its best learning rate (4e-3: 6e-3 did worse) against Muon at the recipe's (1e-2,
which AdamW cannot take). Equal time: Muon's step costs more (the orthogonalisation), so AdamW gets as many
steps as it takes in the time Muon takes for 600, from a timing of both optimizers' train_step here first.
The runs go one at a time with every core, as a learner's run does.

attn-dropout: dropout is for a model too large for its data, so it is measured where one is: the vanilla
parts at the small preset's size (4 blocks x 128 wide, context 128) on the first ATTN_DROPOUT_CHARS
characters of Tiny Shakespeare (train.py validates on their last tenth), with dropout 0.2 on the residual
branches and the attention weights dropped at 0.2 (GPT-2's layout, the presets' before attn_dropout) or
not (the presets' now). Every run trains until its val loss stops improving (--patience). A third
variant without any dropout shows that dropout matters there.

weight-decay: the cpu-10m recipe's model and batch for 800 steps (about what its 10 minutes hold on two
cores; a fixed step count, so a busy machine does not change the comparison), val loss on the whole val
split every 100 steps, with the weight decay every other recipe shares (0.1) against cpu-10m's own. The
model starts to memorise the text within those steps, which weight decay holds back.

Writes experiments/results/optimizer.json, attn_dropout.json and weight_decay.json, then regenerates
docs/results.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/choices.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import bench  # noqa: E402
import data  # noqa: E402
from experiments import common, report, stats  # noqa: E402
from lessons.overfitting import write_slice  # noqa: E402
from machinery import settings  # noqa: E402
from machinery.device import pick_device, pick_dtype  # noqa: E402
from model import GPTConfig  # noqa: E402

EXPERIMENTS = ("optimizer", "attn-dropout", "weight-decay")
ADAMW_AT_ITS_BEST = ["--optimizer", "adamw", "--lr", "4e-3", "--min-lr", "4e-4"]
ATTN_DROPOUT_CHARS = 30_000
PATIENCE = 5  # evaluations without a better val loss before a run stops
TOO_LARGE_FOR_ITS_DATA = ["--preset", "vanilla", "--n-layer", "4", "--n-head", "4", "--n-embd", "128",
                          "--block-size", "128", "--batch-size", "16", "--optimizer", "adamw", "--lr", "2e-3",
                          "--min-lr", "2e-4", "--warmup-iters", "50", "--max-iters", "3000", "--eval-interval", "50",
                          "--eval-windows", "0", "--patience", str(PATIENCE)]
DROPOUT_VARIANTS = {  # name -> flags on top of TOO_LARGE_FOR_ITS_DATA
    "attention dropped": ["--dropout", "0.2", "--attn-dropout", "0.2"],
    "attention kept": ["--dropout", "0.2", "--attn-dropout", "0"],
    "no dropout": ["--dropout", "0", "--attn-dropout", "0"],
}


# cpu-10m's model, batch and schedule for a fixed number of steps (the recipe itself ends on its time budget).
CPU_10M_SETTINGS = ("preset", "optimizer", "n_layer", "n_head", "n_embd", "dropout", "attn_dropout", "batch_size",
                    "lr", "min_lr", "warmup_iters", "beta2")
CPU_10M_FOR_STEPS = [*(part for name in CPU_10M_SETTINGS
                       for part in (f"--{name.replace('_', '-')}", str(settings.RECIPES["cpu-10m"][name]))),
                     "--max-iters", "800", "--eval-interval", "100", "--eval-windows", "0"]
WEIGHT_DECAYS = {  # name -> flags on top of CPU_10M_FOR_STEPS
    f"{owner} ({value:g})": ["--weight-decay", f"{value:g}"]
    for owner, value in (("shared", settings.SHARED_DEFAULTS["weight_decay"]),
                         ("cpu-10m's", settings.RECIPES["cpu-10m"]["weight_decay"]))
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure what three training choices do to the val loss.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("experiments", nargs="+", choices=(*EXPERIMENTS, "all"), metavar="EXPERIMENT",
                        help=f"one or more of: {', '.join(EXPERIMENTS)}, all")
    parser.add_argument("--seeds", type=int, default=3, help=f"seeds per variant, {common.FIRST_SEED} upwards "
                                                             "(default: 3)")
    common.add_run_args(parser)
    args = parser.parse_args(argv)
    common.check_seeds(parser, args)
    return args


def seconds_per_step(optimizer: str, device: torch.device) -> float:
    """Seconds one train_step of the cpu recipe takes with this optimizer (10 timed after 3 untimed)."""
    recipe = bench.train_settings(device, "cpu", optimizer)
    _, step = bench.training_step(GPTConfig.from_preset(recipe.preset), recipe, recipe.batch_size, device,
                                  pick_dtype(device))
    return bench.time_steps(step, 3, 10, device)[1] / 10


def compare(name: str, title: str, runs: dict[str, list[dict]], flags: dict[str, list[str]], args: argparse.Namespace,
            argv: list[str], converging: bool, **extra) -> dict:
    """The results file of one comparison: every variant, and the first two's paired effect on the best val loss
    (second minus first), with a verdict; converging: the runs trained until they stopped improving, so one
    that had not converged withholds the verdict (a fixed time budget asks no such thing)."""
    baseline, changed = list(runs)[:2]
    interval = stats.paired_interval([run["best_val_loss"] for run in runs[baseline]],
                                     [run["best_val_loss"] for run in runs[changed]])
    checks = {variant: [stats.convergence(run["metrics"]) for run in records] for variant, records in runs.items()}
    unconverged = sum(not check["converged"] for variant in (baseline, changed) for check in checks[variant])
    verdict = stats.verdict(interval, unconverged if converging else 0)
    print(f"{name}: {changed} - {baseline}, best val loss: {report.effect_text(interval)}; {verdict}", flush=True)
    return {"name": name, "kind": "choice", "title": title, "seeds": common.seeds(args), "converging": converging,
            "converged_gain": stats.CONVERGED_GAIN, "converged_window": stats.LAST_FRACTION,
            "effect": {**interval, "verdict": verdict, "baseline": baseline, "changed": changed,
                       "converged": f"{sum(c['converged'] for v in (baseline, changed) for c in checks[v])} of "
                                    f"{len(checks[baseline]) + len(checks[changed])}"},
            **extra,
            "variants": [common.variant_result(variant, records, flags=flags[variant], convergence=checks[variant])
                         for variant, records in runs.items()],
            "provenance": common.provenance("choices", argv, args)}


def optimizer_result(args: argparse.Namespace, argv: list[str]) -> dict:
    device = pick_device(args.device)
    timing = {optimizer: seconds_per_step(optimizer, device) for optimizer in ("adamw", "muon")}
    muon_steps = settings.RECIPES["cpu"]["max_iters"]
    adamw_steps = round(muon_steps * timing["muon"] / timing["adamw"])
    print(f"one step: AdamW {timing['adamw'] * 1e3:.1f} ms, Muon {timing['muon'] * 1e3:.1f} ms: AdamW gets "
          f"{adamw_steps} steps to Muon's {muon_steps}", flush=True)
    flags = {"adamw": [*ADAMW_AT_ITS_BEST, "--max-iters", str(adamw_steps)], "muon": []}
    jobs = [(variant, seed) for seed in common.seeds(args) for variant in flags]
    records = common.train_runs([([*common.setting_flags(args, "cpu"), *flags[variant], "--seed", str(seed)],
                                  args.runs_dir / "choices" / "optimizer" / variant / f"seed{seed}")
                                 for variant, seed in jobs], args.device, args.rerun, workers=1)
    runs = {variant: [record for (name, _), record in zip(jobs, records, strict=True) if name == variant]
            for variant in flags}
    return compare("optimizer", "AdamW → Muon on the default CPU run, at equal time", runs, flags, args, argv,
                   converging=False, step_seconds={name: round(value, 4) for name, value in timing.items()},
                   steps={"adamw": adamw_steps, "muon": muon_steps})


def attn_dropout_result(args: argparse.Namespace, argv: list[str]) -> dict:
    out_dir = args.runs_dir / "choices" / "attn-dropout"
    out_dir.mkdir(parents=True, exist_ok=True)
    text = write_slice(data.find_corpus(args.data), ATTN_DROPOUT_CHARS, out_dir)
    shared = [*common.base_flags(args), *TOO_LARGE_FOR_ITS_DATA, "--data", common.display_path(text),
              *shlex.split(args.train_args)]
    jobs = [(variant, seed) for variant in DROPOUT_VARIANTS for seed in common.seeds(args)]
    records = common.train_runs([([*shared, *DROPOUT_VARIANTS[variant], "--seed", str(seed)],
                                  out_dir / variant.replace(" ", "-") / f"seed{seed}") for variant, seed in jobs],
                                args.device, args.rerun)
    runs = {variant: [record for (name, _), record in zip(jobs, records, strict=True) if name == variant]
            for variant in DROPOUT_VARIANTS}
    return compare("attn_dropout", "attention dropout 0.2 → 0 (dropout 0.2 elsewhere), on a model too large for "
                   f"its data (the first {ATTN_DROPOUT_CHARS:,} characters)", runs, DROPOUT_VARIANTS, args, argv,
                   converging=True, chars=ATTN_DROPOUT_CHARS, patience=PATIENCE)


def weight_decay_result(args: argparse.Namespace, argv: list[str]) -> dict:
    shared = [*common.base_flags(args), *CPU_10M_FOR_STEPS, *shlex.split(args.train_args)]
    jobs = [(variant, seed) for seed in common.seeds(args) for variant in WEIGHT_DECAYS]
    out_dir = args.runs_dir / "choices" / "weight-decay"
    records = common.train_runs([([*shared, *WEIGHT_DECAYS[variant], "--seed", str(seed)],
                                  out_dir / WEIGHT_DECAYS[variant][-1] / f"seed{seed}") for variant, seed in jobs],
                                args.device, args.rerun)  # two at a time: a fixed step count is the same either way
    runs = {variant: [record for (name, _), record in zip(jobs, records, strict=True) if name == variant]
            for variant in WEIGHT_DECAYS}
    baseline, changed = WEIGHT_DECAYS
    return compare("weight_decay", f"weight decay {baseline} → {changed}, on cpu-10m's model for 800 steps", runs,
                   WEIGHT_DECAYS, args, argv, converging=False)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    names = EXPERIMENTS if "all" in args.experiments else tuple(dict.fromkeys(args.experiments))
    for name in names:
        result = {"optimizer": optimizer_result, "attn-dropout": attn_dropout_result,
                  "weight-decay": weight_decay_result}[name](args, argv)
        common.write_result(result, args.results_dir)
    report.build_report(args.results_dir, args.docs_dir)


if __name__ == "__main__":
    main()
