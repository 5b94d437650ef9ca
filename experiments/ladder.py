"""
The ladder: a GPT built up one part at a time, with what each part buys measured.

    uv run python -m experiments.ladder             # every rung on the CPU (see LADDER_SIZES for the time)
    uv run python -m experiments.ladder --full      # the same rungs at the 10M size with train.py's GPU recipe

First the floor that any network must beat, counted from the training text with no training at all:
the cross-entropy of the val split under a uniform guess (ln 65), character frequencies (unigram) and
the frequency of each character after each character (bigram). Then the trained rungs, each one
`uv run train.py` run per seed with the parts of model.py switched on one at a time: the bigram
network (embedding straight into the head), one attention head, several heads, the feed-forward
network, residual connections, pre-norm, stacked blocks (the vanilla GPT), the same stack without
residual connections, and each modern swap (RMSNorm, SwiGLU, RoPE) and all of them together. Last,
the generation rungs on the final model: the KV cache (speed, and the same text) and the sampling
settings (temperature, top-k, top-p) on one prompt.

Writes experiments/results/ladder.json (ladder_full.json with --full; with --rungs, ladder_partial.json or
ladder_full_partial.json, so the whole ladder's results stay), then regenerates docs/results.md,
docs/plots/ladder*.png and, from ladder.json, the measured parts of the chapters in docs/learn/.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/ladder.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import data  # noqa: E402
import generate  # noqa: E402
from experiments import common, report, swaps  # noqa: E402
from machinery.device import pick_device  # noqa: E402
from tokenizer import bits_per_char, build_tokenizer  # noqa: E402


@dataclass(frozen=True)
class Rung:
    name: str  # what the rung is filed under: its runs' folder, its row, its chapter's measured block
    adds: str  # what it adds to its parent, in words
    parent: str | None  # the rung it changes (None: the first network, compared with the counted bigram)
    config: dict  # GPTConfig fields set on top of the ladder's base model


# Every rung is the vanilla preset at the ladder's size with some parts removed. The head is its own matrix
# (tie_embeddings False) in every rung: a head tied to the embedding cannot hold a free bigram table, and
# this way each rung differs from its parent only in the part it adds.
BASE = dict(tie_embeddings=False)
ATTENTION_ONLY = dict(n_layer=1, norm="none", mlp="none", residual=False)
RUNGS = (
    # mlp, norm and residual are "none"/False in the bigram only so that the next rung's change reads cleanly.
    Rung("bigram", "a trained table: token embedding straight into the head", None,
         dict(n_layer=0, pos="none", norm="none", mlp="none", residual=False)),
    Rung("one-head", "one head of causal self-attention, with learned positions", "bigram",
         {**ATTENTION_ONLY, "n_head": 1}),
    Rung("heads", "several heads of the same total width", "one-head", ATTENTION_ONLY),
    Rung("ffn", "the feed-forward network after attention", "heads", dict(n_layer=1, norm="none", residual=False)),
    Rung("residual", "residual connections around both sublayers", "ffn", dict(n_layer=1, norm="none")),
    Rung("norm", "pre-norm: LayerNorm before each sublayer and the head", "residual", dict(n_layer=1)),
    Rung("stacked", "stacked blocks: the vanilla GPT", "norm", {}),
    Rung("no-residual", "the same stack without residual connections", "stacked", dict(residual=False)),
    Rung("rmsnorm", "swap LayerNorm for RMSNorm", "stacked", dict(norm="rmsnorm")),
    Rung("swiglu", "swap the ReLU FFN for SwiGLU", "stacked", dict(mlp="swiglu")),
    Rung("rope", "swap learned positions for RoPE", "stacked", dict(pos="rope")),
    Rung("modern", "all three swaps and no biases: the modern preset's parts", "stacked",
         dict(norm="rmsnorm", mlp="swiglu", pos="rope", bias=False)),
)
RUNG_NAMES = tuple(rung.name for rung in RUNGS)

# Sizes. "cpu": a 4-block, 64-wide model with a context of 64 characters (64 wide, so that the bigram rung
# can hold a full 65 x 65 table), 2,000 steps of 32 sequences (4M tokens, four passes over the training
# text), so that the 36 runs need well under an hour of CPU time. The results record how much each rung
# still fell over its last quarter (PLATEAU_GAIN below) and the report says which had flattened: at a size
# that fits this budget the deeper rungs are still improving slowly at the end. One thread per run and two
# runs at once: at this size a run uses one core better than two. "full": the vanilla preset's 10M size and
# train.py's GPU recipe.
LADDER_SIZES = {
    "cpu": dict(n_layer=4, n_head=4, n_embd=64, block_size=64, dropout=0.0),
    "full": {},
}
CPU_SCHEDULE = dict(batch_size=32, max_iters=2000, eval_interval=200, eval_windows=0, lr=3e-3, min_lr=3e-4,
                    warmup_iters=50, beta2=0.99, dtype="float32")
PLATEAU_GAIN = 0.02  # nats: a rung whose mean val loss falls less than this over its last quarter has flattened
BIGRAM_TOLERANCE = 0.01  # nats: how close the bigram network's val loss must come to the counted bigram's
SAMPLE_TOKENS = 200  # characters of text sampled from each rung, after a newline, at temperature 1
# Where a ladder run writes its results and its copy of the results page, unless --update-results: a learner's
# run never rewrites the committed files.
OWN_RESULTS_DIR = common.ROOT / "out" / "ladder"
SAMPLING_PROMPT = "ROMEO:\n"
SAMPLING_SETTINGS = (  # the generation rung's settings, each on the same prompt with the same seed
    dict(temperature=0.0), dict(temperature=0.5), dict(temperature=1.0), dict(temperature=1.5),
    dict(temperature=1.0, top_k=5), dict(temperature=1.0, top_p=0.8),
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build a GPT one part at a time and measure each part.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--full", action="store_true",
                        help="the 10M vanilla size with train.py's GPU recipe (default: the CPU size in\n"
                             "LADDER_SIZES, experiments/ladder.py)")
    parser.add_argument("--seeds", type=int, default=3,
                        help=f"seeds per trained rung, {common.FIRST_SEED} upwards (default: 3)")
    parser.add_argument("--rungs", nargs="+", choices=RUNG_NAMES, metavar="RUNG",
                        help="train only these rungs and the rungs they build on (default: all of\n"
                             f"{', '.join(RUNG_NAMES)})")
    parser.add_argument("--workers", type=int,
                        help="runs trained at once (default: 2 on a CPU, one thread each; 1 on a GPU)")
    parser.add_argument("--count-only", action="store_true",
                        help="print the counted models' val loss (chapter 1) and stop: nothing trained or written")
    common.add_run_args(parser)
    parser.add_argument("--update-results", action="store_true",
                        help="write the committed results (experiments/results, docs) instead of out/ladder/")
    parser.set_defaults(results_dir=None, docs_dir=None)  # out/ladder/ unless --update-results or given
    args = parser.parse_args(argv)
    if args.results_dir is None:
        args.results_dir = common.RESULTS_DIR if args.update_results else OWN_RESULTS_DIR
    if args.docs_dir is None:
        args.docs_dir = common.DOCS_DIR if args.update_results else OWN_RESULTS_DIR / "docs"
    common.check_seeds(parser, args)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    return args


def setting_name(args: argparse.Namespace) -> str:
    return "full" if args.full else "cpu"


def schedule_flags(args: argparse.Namespace) -> list[str]:
    """train.py flags every rung shares: device, data, the schedule of the size, then --train-args. Both
    sizes score the whole val split, the text the counted baselines are scored on."""
    if args.full:
        return common.setting_flags(args, "gpu")  # train.py's GPU recipe (settings.RECIPES)
    return [*common.base_flags(args), *common.to_flags(CPU_SCHEDULE), *shlex.split(args.train_args)]


def rung_flags(rung: Rung, size: str) -> list[str]:
    """train.py flags of one rung's model: the vanilla preset at the ladder's size, then the rung's parts."""
    return ["--preset", "vanilla", *common.to_flags({**LADDER_SIZES[size], **BASE, **rung.config})]


def result_name(args: argparse.Namespace, rungs: list[Rung]) -> str:
    """ladder, ladder_full with --full; _partial when only some rungs ran, so the whole ladder's file is kept."""
    return "ladder" + ("_full" if args.full else "") + ("_partial" if len(rungs) < len(RUNGS) else "")


def chosen_rungs(names: list[str] | None) -> list[Rung]:
    """The named rungs and every rung they build on, in ladder order (all of them for None)."""
    by_name = {rung.name: rung for rung in RUNGS}
    wanted = set()
    for name in names or RUNG_NAMES:
        while name is not None and name not in wanted:
            wanted.add(name)
            name = by_name[name].parent
    return [rung for rung in RUNGS if rung.name in wanted]


# ----------------------------------------------------------------------------------------------------
# The floor: counts from the training text


def count_baselines(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> dict[str, np.ndarray]:
    """The next-token probabilities of three counted models, add-one (Laplace) smoothed so that a pair never
    seen in training still has a probability: uniform (vocab,), unigram (vocab,), bigram (vocab, vocab) with
    row a the distribution of the character after a."""
    unigram = np.bincount(train_ids, minlength=vocab_size) + 1.0
    pairs = np.zeros((vocab_size, vocab_size))
    np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
    pairs += 1.0
    return {"uniform": np.full(vocab_size, 1.0 / vocab_size), "unigram": unigram / unigram.sum(),
            "bigram": pairs / pairs.sum(axis=1, keepdims=True)}


def counted_val_loss(name: str, probs: np.ndarray, val_ids: np.ndarray) -> float:
    """Mean cross-entropy (nats) over every val token but the first, as train.py scores the whole val split."""
    targets = val_ids[1:]
    chosen = probs[val_ids[:-1], targets] if name == "bigram" else probs[targets]
    return float(-np.log(chosen).mean())


def sample_counted(name: str, probs: np.ndarray, start: int, length: int, seed: int = 0) -> list[int]:
    """Token ids drawn from a counted model, each bigram draw conditioned on the token before it."""
    rng = np.random.default_rng(seed)
    ids = [start]
    for _ in range(length):
        row = probs[ids[-1]] if name == "bigram" else probs
        ids.append(int(rng.choice(len(row), p=row)))
    return ids[1:]


def counted_results(data_path: str | None) -> list[dict]:
    """The counted models' val loss and bits per character on the corpus (data.find_corpus's), with a sample
    of each."""
    text = data.read_text(data.find_corpus(data_path))
    train_text, val_text = data.split_text(text)
    tokenizer = build_tokenizer("char", train_text)
    train_ids = np.asarray(tokenizer.encode(train_text))
    val_ids = np.asarray(tokenizer.encode(val_text))
    val_chars_scored = len(val_text) - len(tokenizer.decode(val_ids[:1].tolist()))
    newline = tokenizer.encode("\n")[0]
    results = []
    for name, probs in count_baselines(train_ids, val_ids, tokenizer.vocab_size).items():
        loss = counted_val_loss(name, probs, val_ids)
        results.append({"name": name, "val_loss": loss,
                        "val_bpc": bits_per_char(loss * (len(val_ids) - 1), val_chars_scored),
                        "probabilities": int(probs.size), "smoothing": "add-one",
                        "sample": tokenizer.decode(sample_counted(name, probs, newline, SAMPLE_TOKENS))})
    return results


# ----------------------------------------------------------------------------------------------------
# The trained rungs


def train_rungs(rungs: list[Rung], args: argparse.Namespace) -> dict[str, list[dict]]:
    """Train (or reuse) every seed of every rung, args.workers at a time; rung name -> run records by seed."""
    shared = schedule_flags(args)
    jobs = [(rung, seed) for rung in rungs for seed in common.seeds(args)]
    # The deepest first (no n_layer: the size's full depth), so that the workers run out of work together.
    jobs.sort(key=lambda job: job[0].config.get("n_layer", math.inf), reverse=True)
    records = common.train_runs(
        [([*rung_flags(rung, setting_name(args)), *shared, "--seed", str(seed)],
          args.runs_dir / "ladder" / setting_name(args) / rung.name / f"seed{seed}") for rung, seed in jobs],
        args.device, args.rerun, args.workers)
    runs: dict[str, list[dict]] = {rung.name: [] for rung in rungs}
    for (rung, _), record in sorted(zip(jobs, records, strict=True), key=lambda pair: pair[0][1]):
        runs[rung.name].append(record)
    return runs


def plateau(summary: dict) -> dict:
    """How much the mean val loss fell over the last quarter of the run, and whether that is under PLATEAU_GAIN."""
    steps, mean = summary["steps"], summary["curves"]["val_loss"]["mean"]
    quarter = min(range(len(steps)), key=lambda i: abs(steps[i] - 0.75 * steps[-1]))
    gain = mean[quarter] - mean[-1]
    return {"from_step": steps[quarter], "gain": gain, "flat": gain < PLATEAU_GAIN}


def rung_sample(run: dict, prompt: str = "\n") -> str:
    """Text from a run's best checkpoint: SAMPLE_TOKENS characters after the prompt, temperature 1, seed 0."""
    model, tokenizer = generate.load(Path(common.ROOT, run["out_dir"]), device="cpu", dtype="float32")
    return generate.sample(model, tokenizer, prompt=prompt, max_new_tokens=SAMPLE_TOKENS, temperature=1.0, seed=0)


def rung_result(rung: Rung, runs: dict[str, list[dict]]) -> dict:
    own = runs[rung.name]
    diff = common.config_diff(runs[rung.parent][0]["config"], own[0]["config"]) if rung.parent else {}
    if rung.parent and own[0]["schedule"] != runs[rung.parent][0]["schedule"]:
        raise SystemExit(f"error: rung {rung.name} was trained with another schedule than {rung.parent}")
    result = common.variant_result(rung.name, own, adds=rung.adds, parent=rung.parent, config_diff=diff,
                                   sample=rung_sample(own[0]))
    result["plateau"] = plateau(result["summary"])
    return result


def bigram_check(counted: list[dict], rungs: list[dict]) -> dict:
    """The bigram network against the counted bigram: it learns the same table, so the losses must agree."""
    counted_loss = next(c["val_loss"] for c in counted if c["name"] == "bigram")
    network = next(r["summary"]["best_val_loss"]["mean"] for r in rungs if r["name"] == "bigram")
    return {"counted": counted_loss, "network": network, "difference": network - counted_loss,
            "tolerance": BIGRAM_TOLERANCE, "within": abs(network - counted_loss) <= BIGRAM_TOLERANCE}


# ----------------------------------------------------------------------------------------------------
# The generation rungs, on the last rung's first seed


def word_stats(text: str, known_words: set[str]) -> dict:
    """Share of the words in text that occur in the training text, and share that are distinct."""
    words = re.findall(r"[A-Za-z']+", text)
    if not words:
        return {"words": 0, "known": None, "distinct": None}
    return {"words": len(words), "known": sum(word in known_words for word in words) / len(words),
            "distinct": len(set(words)) / len(words)}


def sampling_result(run: dict, data_path: str | None) -> dict:
    """The same prompt and seed under each of SAMPLING_SETTINGS; the words are looked up in the corpus."""
    model, tokenizer = generate.load(Path(common.ROOT, run["out_dir"]), device="cpu", dtype="float32")
    train_text, _ = data.split_text(data.read_text(data.find_corpus(data_path)))
    known_words = set(re.findall(r"[A-Za-z']+", train_text))
    samples = []
    for settings in SAMPLING_SETTINGS:
        text = generate.sample(model, tokenizer, prompt=SAMPLING_PROMPT, max_new_tokens=SAMPLE_TOKENS, seed=0,
                               **settings)
        samples.append({"top_k": None, "top_p": None, **settings, "text": text,
                        **word_stats(text[len(SAMPLING_PROMPT):], known_words)})
    return {"checkpoint": run["out_dir"], "prompt": SAMPLING_PROMPT, "new_tokens": SAMPLE_TOKENS, "seed": 0,
            "samples": samples}


def kvcache_result(run: dict, repeats: int = 5) -> dict:
    """Greedy generation with and without the KV cache on one checkpoint: tokens/s both ways, same tokens?"""
    model, _ = generate.load(Path(common.ROOT, run["out_dir"]), device="cpu", dtype="float32")
    measured = swaps.measure_kv_cache(model, 2 * model.config.block_size, repeats, torch.device("cpu"))
    return {"checkpoint": run["out_dir"], "repeats": repeats, **measured}


# ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start, children_before = time.time(), common.children_cpu_seconds()
    rungs = chosen_rungs(args.rungs)
    print("counting the baselines from the training text", flush=True)
    counted = counted_results(args.data)
    for entry in counted:
        print(f"  {entry['name']:8s} val loss {entry['val_loss']:.4f} ({entry['val_bpc']:.3f} bits per char)",
              flush=True)
    if args.count_only:
        return
    runs = train_rungs(rungs, args)
    train_cpu_seconds = None if children_before is None else common.children_cpu_seconds() - children_before
    results = [rung_result(rung, runs) for rung in rungs]
    last = runs[rungs[-1].name][0]
    if pick_device(args.device).type == "cpu":
        torch.set_num_threads(1)  # the generation rungs time one process on one core, as each run trained
    result = {"name": result_name(args, rungs), "kind": "ladder", "setting": setting_name(args),
              "title": "what each part of a GPT buys", "seeds": common.seeds(args),
              "schedule": runs[rungs[0].name][0]["schedule"], "plateau_gain": PLATEAU_GAIN,
              "counted": counted, "rungs": results, "bigram_check": bigram_check(counted, results),
              "kvcache": kvcache_result(last), "sampling": sampling_result(last, args.data),
              "wall_seconds": time.time() - start, "train_cpu_seconds": train_cpu_seconds,
              "provenance": common.provenance("ladder", argv, args)}
    common.write_result(result, args.results_dir)
    for rung in results:
        summary = rung["summary"]
        print(f"  {rung['name']:12s} {rung['params']:>10,} params | val {summary['best_val_loss']['mean']:.4f} ± "
              f"{summary['best_val_loss']['std']:.4f} | last-quarter fall {rung['plateau']['gain']:.4f}", flush=True)
    check = result["bigram_check"]
    print(f"bigram network {check['network']:.4f} vs counted {check['counted']:.4f} "
          f"(difference {check['difference']:+.4f}, tolerance {check['tolerance']}); "
          f"ladder took {result['wall_seconds'] / 60:.1f} minutes", flush=True)
    report.build_report(args.results_dir, args.docs_dir)
    if not args.update_results:
        print(f"results in {common.display_path(args.results_dir)}/ and {common.display_path(args.docs_dir)}/ (the "
              "committed ones in experiments/results and docs: --update-results)", flush=True)


if __name__ == "__main__":
    main()
