"""
Lesson: RoPE positions wrong inside the KV cache. Training looks fine; cached generation is garbage.

    uv run python -m lessons.rope_cache_offset              # on out/best.pt (uv run train.py trains a RoPE model)
    uv run python -m lessons.rope_cache_offset --ckpt PATH  # any checkpoint with pos="rope"

The bug lives here, never in model.py: ForgetsTheOffset is model.py's GPT with the mistake that is easy to
make when a KV cache meets RoPE. The new tokens are rotated as if the sequence began where they begin, so
a token decoded at position 40 is rotated as position 0.

Symptom 1: the full forward pass, which is all that training runs, is untouched: the loss is the same.
Symptom 2: with the cache, every new token's logits differ from the full forward's, and greedy text drifts.
The check that catches it is the one tests/test_model.py makes of the real model
(test_kv_cache_one_token_decoding_matches_full_forward): decoding one token at a time with the cache must
give the full forward's logits. Here it is run on both models: the real one passes, the broken one fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run lessons/rope_cache_offset.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import data  # noqa: E402
from experiments import common  # noqa: E402
from generate import load, sample  # noqa: E402
from lessons import write_result  # noqa: E402
from model import GPT  # noqa: E402

TOLERANCE = 1e-4  # the largest difference between cached and full logits that counts as equal (float32)


class ForgetsTheOffset(GPT):
    """model.py's GPT, except that the RoPE tables are read from position 0 for every call: with a KV cache,
    each new token is rotated as if it were the first. Without a cache (training) nothing changes."""

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache=None):
        start = int(kv_cache.pos) if kv_cache is not None else 0
        cos, sin = self.rope_cos, self.rope_sin
        # GPT.forward reads the tables at rows start..start+T; rolled by start, those rows hold rows 0..T.
        self.rope_cos, self.rope_sin = cos.roll(start, dims=0), sin.roll(start, dims=0)
        try:
            return super().forward(idx, targets, kv_cache)
        finally:
            self.rope_cos, self.rope_sin = cos, sin


def with_the_bug(model: GPT) -> ForgetsTheOffset:
    """The same weights in the broken model."""
    broken = ForgetsTheOffset(model.config)
    broken.load_state_dict(model.state_dict())
    return broken.to(next(model.parameters()).device).eval()


@torch.no_grad()
def cache_vs_full_difference(model: GPT, idx: torch.Tensor, prompt_len: int = 4) -> float:
    """Largest |cached - full| logit when the prompt is prefilled and the rest decoded one token at a time."""
    model.eval()
    full, _ = model(idx)
    cache = model.new_kv_cache()
    steps = [model(idx[:, :prompt_len], kv_cache=cache)[0]]
    steps += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(prompt_len, idx.size(1))]
    return (torch.cat(steps, dim=1) - full).abs().max().item()


@torch.no_grad()
def full_forward_loss(model: GPT, idx: torch.Tensor) -> float:
    """The training loss on idx (inputs idx[:, :-1], targets idx[:, 1:]): no cache, as in training."""
    model.eval()
    return model(idx[:, :-1], idx[:, 1:])[1].item()


def compare(model: GPT, idx: torch.Tensor) -> dict:
    """The real model and the broken one on the same tokens: training loss and the cache check."""
    broken = with_the_bug(model)
    return {"loss_real": full_forward_loss(model, idx), "loss_broken": full_forward_loss(broken, idx),
            "cache_difference_real": cache_vs_full_difference(model, idx[:, 1:]),
            "cache_difference_broken": cache_vs_full_difference(broken, idx[:, 1:]), "tolerance": TOLERANCE}


def report_lines(result: dict) -> list[str]:
    """What the lesson measured, as the chapter shows it."""
    rows = [["real (model.py)", f"{result['loss_real']:.4f}", f"{result['cache_difference_real']:.1e}"],
            ["broken offset", f"{result['loss_broken']:.4f}", f"{result['cache_difference_broken']:.1e}"]]
    lines = [f"On `{result['checkpoint']}`, one val window of the model's context:", "",
             "| model | training loss (full forward) | largest \\|cached − full\\| logit |", "|---|---|---|",
             *[f"| {' | '.join(row)} |" for row in rows], "",
             f"The check passes below {result['tolerance']:.0e}. Greedy text from the prompt "
             f"`{result['prompt'].strip()}`:"]
    for name, text in result["texts"].items():
        lines += ["", f"{name}:", "```", text, "```"]
    return lines


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Break RoPE's position offset in the KV cache and watch.")
    parser.add_argument("--ckpt", default="out/best.pt", help="a checkpoint with pos='rope' (default: out/best.pt)")
    parser.add_argument("--data", help="the text to take a val window from (default: Tiny Shakespeare)")
    parser.add_argument("--prompt", default="ROMEO:\n", help="the prompt the greedy samples continue")
    parser.add_argument("--new-tokens", type=int, default=200, help="characters to generate (default: 200)")
    parser.add_argument("--results-dir", type=Path, help="also write lesson_rope_cache_offset.json here")
    args = parser.parse_args(argv)
    try:
        model, tokenizer = load(args.ckpt, device="cpu", dtype="float32")
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    if model.config.pos != "rope":
        raise SystemExit(f"error: {args.ckpt} uses pos={model.config.pos!r}; this lesson breaks RoPE, so it needs a "
                         "checkpoint trained with --pos rope (uv run train.py's CPU default is one)")
    _, val_text = data.split_text(data.read_text(data.find_corpus(args.data)))
    window = tokenizer.encode(val_text[:model.config.block_size + 1], drop_unknown=True)
    measured = compare(model, torch.tensor([window]))
    broken = with_the_bug(model)
    texts = {name: sample(chosen, tokenizer, prompt=args.prompt, max_new_tokens=args.new_tokens, temperature=0,
                          use_kv_cache=cache)
             for name, chosen, cache in (("real, with the cache", model, True),
                                         ("broken, with the cache", broken, True),
                                         ("broken, without the cache", broken, False))}
    print(f"training loss on a val window: real {measured['loss_real']:.4f}, broken {measured['loss_broken']:.4f} "
          "(identical: training cannot see the bug)")
    for name in ("real", "broken"):
        difference = measured[f"cache_difference_{name}"]
        verdict = "passes" if difference <= TOLERANCE else "FAILS"
        print(f"cache vs full forward, {name} model: largest logit difference {difference:.2e}: {verdict} the check")
    for name, text in texts.items():
        print(f"\n--- greedy, {name} ---\n{text}")
    result = {"name": "lesson_rope_cache_offset", "kind": "lesson", "title": "RoPE positions wrong inside the KV cache",
              "checkpoint": common.display_path(args.ckpt), **measured, "prompt": args.prompt, "texts": texts}
    result["report"] = report_lines(result)
    if args.results_dir:
        write_result(result, "rope_cache_offset", argv, "cpu", args.data, args.results_dir)
    return result


if __name__ == "__main__":
    main()
