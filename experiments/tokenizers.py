"""
Which tokenizer gives the best model? The same model and schedule trained on characters, on byte-level
BPE of a few vocabulary sizes, and on GPT-2's BPE.

    uv run python -m experiments.tokenizers                          # CPU-sized model, one seed
    uv run python -m experiments.tokenizers --vocab-sizes 512 4096   # other BPE sizes
    uv run python -m experiments.tokenizers --full --seeds 3         # the 10M modern preset, GPU recipe

Loss per token does not compare across tokenizers (a BPE token holds several characters); validation
bits per character (val_bpc in metrics.jsonl) does, so that is the headline number. Also reported: val
loss per token, parameters (the embedding table grows with the vocabulary), tokens/s and characters/s.

The context is the same number of tokens for every tokenizer (block_size), so a BPE model sees more
characters of context, and more text per step, than the char model: the table gives characters per
token and the context in characters. That is part of what a tokenizer buys, so it is kept, not undone.

GPT-2's tokenizer is used only if tiktoken can load its encoding (a download on first use); otherwise
its row records why it was skipped.

Writes experiments/results/tokenizers.json, then regenerates docs/results.md and docs/plots/.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run experiments/tokenizers.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402
from experiments import common, report  # noqa: E402
from machinery.checkpoint import load_checkpoint  # noqa: E402
from tokenizer import GPT2Tokenizer, tokenizer_from_state  # noqa: E402

PRESET = "modern"  # the architecture under test is the project's default one
BPE_VOCAB_SIZES = (512, 1024, 2304)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Compare tokenizers at the same model size, in bits per character.",
                                     formatter_class=argparse.RawTextHelpFormatter)
    common.add_suite_args(parser, default_seeds=1)
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=list(BPE_VOCAB_SIZES),
                        help=f"BPE vocabulary sizes (default: {' '.join(map(str, BPE_VOCAB_SIZES))})")
    common.add_run_args(parser)
    args = parser.parse_args(argv)
    common.check_seeds(parser, args)
    if min(args.vocab_sizes) < 257:
        parser.error("--vocab-sizes must each be at least 257 (256 bytes + merges)")
    return args


def gpt2_unavailable() -> str | None:
    """Why GPT-2's tokenizer cannot be used here, or None if it can."""
    if importlib.util.find_spec("tiktoken") is None:
        return "skipped: tiktoken is not installed"
    try:
        GPT2Tokenizer()
    except RuntimeError:
        return "skipped: offline (GPT-2's encoding could not be downloaded)"
    return None


def text_per_token(run: dict, args: argparse.Namespace) -> float:
    """Characters of the validation text per token, with the run's own tokenizer (its encoding is cached)."""
    tokenizer = tokenizer_from_state(load_checkpoint(Path(common.ROOT, run["out_dir"]) / "last.pt")["tokenizer"])
    _, val_text = data.split_text(data.read_text(data.find_corpus(args.data)))
    return len(val_text) / len(data.encode_cached(val_text, tokenizer))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    candidates = [("char", ["--tokenizer", "char"])]
    candidates += [(f"bpe-{size}", ["--tokenizer", "bpe", "--vocab-size", str(size)]) for size in args.vocab_sizes]
    candidates += [("gpt2", ["--tokenizer", "gpt2"])]
    variants = []
    for number, (name, tokenizer_flags) in enumerate(candidates, 1):
        if name == "gpt2" and (reason := gpt2_unavailable()):
            print(f"[{number}/{len(candidates)}] gpt2: {reason}", flush=True)
            variants.append({"name": name, "flags": tokenizer_flags, "skipped": reason})
            continue
        runs = []
        for seed in common.seeds(args):
            print(f"[{number}/{len(candidates)}] {name}, seed {seed}", flush=True)
            flags = ["--preset", PRESET, *tokenizer_flags, *common.setting_flags(args, common.recipe_name(args)),
                     "--seed", str(seed)]
            out_dir = args.runs_dir / common.setting_name(args) / "tokenizers" / name / f"seed{seed}"
            runs.append(common.train_run(flags, out_dir, args.rerun))
        chars_per_token = text_per_token(runs[0], args)
        chars_per_sec = [run["tokens_per_sec"] * chars_per_token for run in runs if run["tokens_per_sec"] is not None]
        variants.append(common.variant_result(name, runs, flags=tokenizer_flags,
                                              vocab_size=runs[0]["config"]["vocab_size"],
                                              chars_per_token=chars_per_token,
                                              chars_per_sec=common.spread(chars_per_sec) if chars_per_sec else None,
                                              context_chars=chars_per_token * runs[0]["config"]["block_size"]))
    trained = [variant for variant in variants if "skipped" not in variant]
    result = {"name": "tokenizers", "kind": "tokenizers", "title": "tokenizers compared in bits per character",
              "setting": common.setting_name(args), "preset": PRESET, "seeds": common.seeds(args),
              "schedule": trained[0]["runs"][0]["schedule"], "variants": variants,
              "provenance": common.provenance("tokenizers", argv, args)}
    common.write_result(result, args.results_dir)
    for variant in trained:
        print(f"  {variant['name']:9s} vocab {variant['vocab_size']:>6,} | {variant['params']:>11,} params | "
              f"{variant['chars_per_token']:.2f} chars/token | best val "
              f"{variant['summary']['best_val_bpc']['mean']:.4f} bpc", flush=True)
    report.build_report(args.results_dir, args.docs_dir)


if __name__ == "__main__":
    main()
