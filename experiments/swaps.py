"""
Swap one part of the GPT at a time and measure what it is worth, then all of them together, then the KV
cache. Every run trains until its val loss stops improving, and each effect is a paired difference over
seeds with a 95% interval.

    uv run python -m experiments.swaps norm           # LayerNorm -> RMSNorm
    uv run python -m experiments.swaps mlp            # ReLU FFN -> SwiGLU, at a matched parameter count
    uv run python -m experiments.swaps pos            # learned absolute positions -> RoPE
    uv run python -m experiments.swaps modern         # the vanilla preset against the modern one
    uv run python -m experiments.swaps pos-scale      # learned -> RoPE at three model sizes (CPU only)
    uv run python -m experiments.swaps kvcache        # generation speed with and without the KV cache
    uv run python -m experiments.swaps all            # all of the above
    uv run python -m experiments.swaps all --full     # the same with the 10M presets and the GPU recipe

Each of norm, mlp and pos changes exactly one field of the vanilla config (checked on the trained
checkpoints); data, steps, schedule, dropout and seeds stay the same. Every variant is trained by
train.py once per seed, and the runs are shared between swaps: the vanilla baseline is trained once.
The CPU size is the converge-cpu recipe, the GPU size the gpu recipe (settings.py); on both, --patience
stops a run once its val loss has not improved for PATIENCE evaluations. A swap's effect is the best
val loss of the swapped variant minus the baseline's, seed by seed (the same seed reads the same
batches), with its 95% interval (experiments/stats.py); a verdict is given only when every run of both
variants converged (stats.convergence). The seed project's reported effects at 10M stand beside ours.
kvcache greedily generates from the first seed's vanilla and modern checkpoints (random weights of the
same size where a checkpoint is missing), with and without the cache, and checks the tokens agree.

Writes experiments/results/<swap>.json, then regenerates docs/results.md and docs/plots/.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/swaps.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from experiments import common, report, stats  # noqa: E402
from generate import generate  # noqa: E402
from machinery import settings  # noqa: E402
from machinery.checkpoint import load_checkpoint, load_model  # noqa: E402
from machinery.device import pick_device, synchronize  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import tokenizer_from_state  # noqa: E402

VARIANTS = {  # name -> the train.py flags that choose its architecture
    "vanilla": ["--preset", "vanilla"],
    "rmsnorm": ["--preset", "vanilla", "--norm", "rmsnorm"],
    "swiglu": ["--preset", "vanilla", "--mlp", "swiglu"],
    "rope": ["--preset", "vanilla", "--pos", "rope"],
    "modern": ["--preset", "modern"],
}
SWAPS = {  # name -> (title, baseline variant, swapped variant)
    "norm": ("LayerNorm → RMSNorm", "vanilla", "rmsnorm"),
    "mlp": ("ReLU FFN → SwiGLU at a matched parameter count", "vanilla", "swiglu"),
    "pos": ("learned positions → RoPE", "vanilla", "rope"),
    "modern": ("vanilla → modern (RMSNorm, SwiGLU, RoPE and no biases together)", "vanilla", "modern"),
}
ONE_FIELD_SWAPS = ("norm", "mlp", "pos")
EXPERIMENTS = (*SWAPS, "pos-scale", "kvcache")
CPU_RECIPE = "converge-cpu"
PATIENCE = 5  # evaluations without a better val loss before a run stops: it has converged
# pos-scale: model sizes on top of the CPU recipe (whose own is 2 blocks, 64 wide: {}), smallest first.
SCALE_SIZES = {"2x16": dict(n_head=2, n_embd=16), "2x32": dict(n_embd=32), "2x64": {}}
# What the seed project reported for each swap at its 10M size (best val loss, swapped minus baseline),
# for comparison; the modern entry is its vanilla 1.4804 against modern 1.4754. norm: not reported.
SEED_PROJECT = {"mlp": -0.11, "pos": -0.31, "modern": 1.4754 - 1.4804}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Swap parts of the GPT one at a time and measure the effect.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("experiments", nargs="+", choices=(*EXPERIMENTS, "all"), metavar="EXPERIMENT",
                        help=f"one or more of: {', '.join(EXPERIMENTS)}, all")
    common.add_suite_args(parser, default_seeds=3, cpu_recipe=CPU_RECIPE)
    parser.add_argument("--new-tokens", type=int,
                        help="kvcache: tokens to generate (default: twice the context, so the window slides)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="kvcache: timed generations each way; the median is reported (default: 3)")
    common.add_run_args(parser)
    args = parser.parse_args(argv)
    common.check_seeds(parser, args)
    if args.repeats < 1 or (args.new_tokens is not None and args.new_tokens < 1):
        parser.error("--repeats and --new-tokens must be at least 1")
    if args.full and "pos-scale" in args.experiments:
        parser.error("pos-scale compares CPU sizes; run it without --full")
    return args


def run_dir(args: argparse.Namespace, variant: str, seed: int, size: str | None = None) -> Path:
    """Where one run goes; a pos-scale size other than the recipe's own gets its own folder."""
    setting = common.setting_name(args) if not SCALE_SIZES.get(size) else f"{common.setting_name(args)}-{size}"
    return args.runs_dir / "swaps" / setting / variant / f"seed{seed}"


def train_variants(pairs: list[tuple[str, str | None]], args: argparse.Namespace) -> dict[tuple, list[dict]]:
    """Train (or reuse) every seed of every (variant, pos-scale size or None) pair, all in one pool, each
    until its val loss stops improving; returns (variant, size) -> run records by seed."""
    shared = [*common.base_flags(args), "--recipe", common.recipe_name(args, CPU_RECIPE), "--patience", str(PATIENCE)]
    if not args.full:
        shared += ["--dtype", "float32"]  # the CPU comparisons in full precision, on every CPU alike
    jobs = [(pair, seed) for pair in pairs for seed in common.seeds(args)]
    # The smallest sizes first: they finish soonest, and say early whether a size converges.
    jobs.sort(key=lambda job: SCALE_SIZES.get(job[0][1] or "", {}).get("n_embd", 64))
    flags = [[*VARIANTS[name], *shared, *common.to_flags(SCALE_SIZES.get(size) or {}),
              *shlex.split(args.train_args), "--seed", str(seed)] for (name, size), seed in jobs]  # --train-args wins
    records = common.train_runs([(job_flags, run_dir(args, name, seed, size))
                                 for job_flags, ((name, size), seed) in zip(flags, jobs, strict=True)],
                                args.device, args.rerun)
    runs: dict[tuple, list[dict]] = {pair: [] for pair in pairs}
    for (pair, _), record in sorted(zip(jobs, records, strict=True), key=lambda item: item[0][1]):
        runs[pair].append(record)
    return runs


def effect(baseline: list[dict], swapped: list[dict]) -> dict:
    """The swap's paired effect on the best val loss over seeds, whether each run converged, and the verdict."""
    if [run["seed"] for run in baseline] != [run["seed"] for run in swapped]:
        raise ValueError("a paired comparison needs the same seeds on both sides")
    converged = [stats.convergence(run["metrics"]) for run in baseline + swapped]
    unconverged = sum(not check["converged"] for check in converged)
    interval = stats.paired_interval([run["best_val_loss"] for run in baseline],
                                     [run["best_val_loss"] for run in swapped])
    return {**interval, "converged": f"{len(converged) - unconverged} of {len(converged)}",
            "unconverged": unconverged, "verdict": stats.verdict(interval, unconverged)}


def swap_result(name: str, runs: dict[str, list[dict]], args: argparse.Namespace, argv: list[str]) -> dict:
    """The results file of one swap: both variants, their config difference, the paired effect, and provenance."""
    title, baseline, swapped = SWAPS[name]
    diff = common.config_diff(runs[baseline][0]["config"], runs[swapped][0]["config"])
    if name in ONE_FIELD_SWAPS and len(diff) != 1:
        raise SystemExit(f"error: the {name} swap must change exactly one config field, but changes {sorted(diff)}")
    if runs[baseline][0]["schedule"] != runs[swapped][0]["schedule"]:
        raise SystemExit(f"error: the {name} swap trained its two variants with different schedules")
    return {"name": name, "kind": "swap", "title": title, "setting": common.setting_name(args),
            "recipe": common.recipe_name(args, CPU_RECIPE), "seeds": common.seeds(args),
            "schedule": runs[baseline][0]["schedule"], "patience": PATIENCE,
            "converged_gain": stats.CONVERGED_GAIN, "converged_window": stats.LAST_FRACTION,
            "effect": effect(runs[baseline], runs[swapped]), "seed_project_effect": SEED_PROJECT.get(name),
            "variants": [common.variant_result(variant, runs[variant], flags=VARIANTS[variant], config_diff=change,
                                               convergence=[stats.convergence(run["metrics"]) for run in runs[variant]])
                         for variant, change in ((baseline, {}), (swapped, diff))],
            "provenance": common.provenance("swaps", argv, args)}


def scale_result(args: argparse.Namespace, argv: list[str], runs: dict[tuple, list[dict]]) -> dict:
    """Learned positions against RoPE at each of SCALE_SIZES: the paired effect at each size."""
    sizes = []
    for size, fields in SCALE_SIZES.items():
        pair = {name: runs[(name, size if fields else None)] for name in ("vanilla", "rope")}
        sizes.append({"size": size, "fields": fields, "params": {name: pair[name][0]["params"] for name in pair},
                      "best_val_loss": {name: common.spread([r["best_val_loss"] for r in pair[name]]) for name in pair},
                      "best_step": {name: common.spread([r["best_step"] for r in pair[name]]) for name in pair},
                      "effect": effect(pair["vanilla"], pair["rope"]),
                      "commands": {name: [r["command"] for r in pair[name]] for name in pair}})
    return {"name": "pos_scale", "kind": "scale", "title": "learned positions → RoPE at three model sizes",
            "setting": common.setting_name(args), "seeds": common.seeds(args), "patience": PATIENCE,
            "converged_gain": stats.CONVERGED_GAIN, "converged_window": stats.LAST_FRACTION, "sizes": sizes,
            "provenance": common.provenance("swaps", argv, args)}


def print_swap(result: dict) -> None:
    print(f"{result['name']}: {result['title']} (mean ± std over {len(result['seeds'])} seed(s))")
    for variant in result["variants"]:
        summary = variant["summary"]
        print(f"  {variant['name']:8s} {variant['params']:>11,} params (FFN hidden {variant['ffn_hidden']}, "
              f"{variant['ffn_params']:,} FFN params) | best val loss {summary['best_val_loss']['mean']:.4f} ± "
              f"{summary['best_val_loss']['std']:.4f} | final {summary['final_val_loss']['mean']:.4f}", flush=True)
    effect = result["effect"]
    interval = "" if effect["low"] is None else f" (95% interval {effect['low']:+.4f} to {effect['high']:+.4f})"
    print(f"  effect {effect['mean']:+.4f}{interval}, {effect['converged']} runs converged: {effect['verdict']}",
          flush=True)


# ----------------------------------------------------------------------------------------------------
# The KV cache: the same greedy text, faster


def time_generation(model: GPT, prompt: torch.Tensor, new_tokens: int, use_kv_cache: bool, repeats: int,
                    device: torch.device) -> tuple[list[int], list[float]]:
    """Greedy generation timed `repeats` times (after one short untimed warm-up); (new token ids, seconds)."""
    generate(model, prompt, 8, temperature=0.0, use_kv_cache=use_kv_cache)
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        ids = generate(model, prompt, new_tokens, temperature=0.0, use_kv_cache=use_kv_cache)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return ids[0, prompt.size(1):].tolist(), seconds


def measure_kv_cache(model: GPT, new_tokens: int, repeats: int, device: torch.device) -> dict:
    """Tokens per second with and without the cache, in float32, and whether the token ids agree."""
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)  # token 0: "\n" in the char vocabulary
    uncached_ids, uncached_seconds = time_generation(model, prompt, new_tokens, False, repeats, device)
    cached_ids, cached_seconds = time_generation(model, prompt, new_tokens, True, repeats, device)
    differences = [i for i, (a, b) in enumerate(zip(uncached_ids, cached_ids, strict=True)) if a != b]
    without = new_tokens / statistics.median(uncached_seconds)
    with_cache = new_tokens / statistics.median(cached_seconds)
    return {"new_tokens": new_tokens, "prompt_ids": prompt[0].tolist(),
            "seconds_without_cache": uncached_seconds, "seconds_with_cache": cached_seconds,
            "tokens_per_sec_without_cache": without, "tokens_per_sec_with_cache": with_cache,
            "speedup": with_cache / without, "identical": not differences,
            "first_difference": differences[0] if differences else None, "token_ids": cached_ids}


def kvcache_result(args: argparse.Namespace, argv: list[str]) -> dict:
    """Measure the KV cache on the vanilla and modern models of this setting."""
    device = pick_device(args.device)
    models = []
    for name in ("vanilla", "modern"):
        checkpoint_path = run_dir(args, name, common.FIRST_SEED) / "best.pt"
        text_of = None
        if checkpoint_path.exists():
            model = load_model(checkpoint_path, device)
            weights = common.display_path(checkpoint_path)
            text_of = tokenizer_from_state(load_checkpoint(checkpoint_path)["tokenizer"]).decode
        else:  # no trained model of this setting yet: the speed is the same with random weights
            torch.manual_seed(0)
            sizes = settings.model_flags(settings.RECIPES[common.recipe_name(args, CPU_RECIPE)])
            with torch.device(device):
                model = GPT(GPTConfig.from_preset(name, **sizes)).eval()
            weights = "random"
        new_tokens = args.new_tokens or 2 * model.config.block_size
        print(f"kvcache: {name} ({weights} weights), {new_tokens} tokens, {args.repeats} timings each way", flush=True)
        measured = measure_kv_cache(model, new_tokens, args.repeats, device)
        models.append({"name": name, "weights": weights, "config": asdict(model.config),
                       "params": model.num_params(), **measured,
                       "text": text_of(measured["token_ids"]) if text_of else None})
        print(f"  {measured['tokens_per_sec_without_cache']:,.0f} tokens/s without the cache, "
              f"{measured['tokens_per_sec_with_cache']:,.0f} with it ({measured['speedup']:.1f}x); "
              f"identical tokens: {measured['identical']}", flush=True)
    return {"name": "kvcache", "kind": "kvcache", "setting": common.setting_name(args),
            "title": "generation with and without the KV cache", "dtype": "float32", "temperature": 0.0,
            "repeats": args.repeats, "models": models, "provenance": common.provenance("swaps", argv, args)}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    names = list(EXPERIMENTS) if "all" in args.experiments else list(dict.fromkeys(args.experiments))
    if args.full and "pos-scale" in names:
        names.remove("pos-scale")  # "all --full": the scale runs are a CPU experiment
    swaps = [name for name in names if name in SWAPS]
    pairs = [(variant, None) for name in swaps for variant in SWAPS[name][1:]]
    if "pos-scale" in names:
        pairs += [(variant, size if fields else None) for size, fields in SCALE_SIZES.items()
                  for variant in ("vanilla", "rope")]
    runs = train_variants(list(dict.fromkeys(pairs)), args)
    main_size = {variant: records for (variant, size), records in runs.items() if size is None}
    for name in swaps:
        result = swap_result(name, main_size, args, argv)
        common.write_result(result, args.results_dir)
        print_swap(result)
    if "pos-scale" in names:
        common.write_result(scale_result(args, argv, runs), args.results_dir)
    identical = True
    if "kvcache" in names:
        result = kvcache_result(args, argv)
        common.write_result(result, args.results_dir)
        identical = all(model["identical"] for model in result["models"])
    report.build_report(args.results_dir, args.docs_dir)
    if not identical:
        raise SystemExit("error: greedy generation with the KV cache gave different tokens than without it")


if __name__ == "__main__":
    main()
