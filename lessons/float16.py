"""
Lesson: float16 without loss scaling. Gradients underflow to zero; scale them too far and they overflow to
infinity. bfloat16, or a gradient scaler, fixes it. Shown numerically on the CPU.

    uv run python -m lessons.float16                    # a freshly initialised model of the "small" preset
    uv run python -m lessons.float16 --ckpt out/best.pt # a trained one: sharper predictions, smaller gradients

One backward pass on a batch of real text, the same weights every time: in float32 (the reference), under
float16 autocast with the loss multiplied by 2^k for several k (and the gradients divided by 2^k after, as
torch.amp.GradScaler does), and under bfloat16 autocast. For each: the share of the gradient of the logits
that became exactly zero where float32's is not (underflow), the share of the weights' gradient that is not
finite (overflow), and how far the weights' gradient is from float32's.

Why: a float16 number has 5 exponent bits. Anything smaller than about 6e-8 is zero and anything larger than
65,504 is infinity (the exact limits are printed, from torch.finfo). The gradient of a mean cross-entropy
over B × T tokens is (probability − 1 for the right token) / (B · T) per logit: for the many tokens a trained
model finds unlikely, far below float16's smallest number. Multiplying the loss by 2^k lifts every gradient
k powers of two into range; too large a k pushes the largest past 65,504. GradScaler starts at 2^16, skips
any step whose gradients hold an inf or a NaN and halves the scale, and doubles it again after 2,000 clean
steps. bfloat16 has float32's 8 exponent bits (the same range, so nothing under- or overflows) and fewer
mantissa bits (coarser values): no scaler needed, which is why train.py picks it wherever it is fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `uv run lessons/float16.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import data  # noqa: E402
from experiments import common  # noqa: E402
from lessons import write_result  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import build_tokenizer  # noqa: E402

LOSS_SCALE_EXPONENTS = (0, 8, 16, 24, 32)  # float16 with the loss times 2^k


def dtype_limits() -> list[dict]:
    """The range and precision of the three formats, from torch.finfo."""
    limits = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        info = torch.finfo(dtype)
        limits.append({"dtype": str(dtype).removeprefix("torch."), "max": info.max, "smallest_normal": info.tiny,
                       "smallest_subnormal": info.smallest_normal * info.eps, "eps": info.eps})
    return limits


def gradients(model: GPT, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype | None,
              loss_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of the logits, gradient of every weight), unscaled, after one backward pass of
    loss * loss_scale with matrix products in dtype (None: float32, no autocast)."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        logits, _ = model(x)
        logits.retain_grad()
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
    (loss * loss_scale).backward()
    weights = torch.cat([p.grad.flatten() for p in model.parameters()])
    return logits.grad.float() / loss_scale, weights / loss_scale


def compare_precisions(model: GPT, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Underflow, overflow and error against float32 for float16 at each loss scale, and for bfloat16."""
    reference_logits, reference = gradients(model, x, y, None)
    alive = reference_logits != 0
    float16 = torch.finfo(torch.float16)
    magnitude = reference_logits.abs()
    rows = [{"dtype": "float32", "loss_scale_exponent": 0, "logit_gradients_zeroed": 0.0,
             "weight_gradients_not_finite": 0.0, "relative_error": 0.0,
             "below_float16_normal": (magnitude < float16.tiny).float().mean().item(),
             "below_float16_subnormal": (magnitude < float16.tiny * float16.eps / 2).float().mean().item()}]
    cases = [("float16", torch.float16, exponent) for exponent in LOSS_SCALE_EXPONENTS]
    cases.append(("bfloat16", torch.bfloat16, 0))
    for name, dtype, exponent in cases:
        logits_grad, weights_grad = gradients(model, x, y, dtype, 2.0 ** exponent)
        finite = torch.isfinite(weights_grad).all().item()
        rows.append({"dtype": name, "loss_scale_exponent": exponent,
                     "logit_gradients_zeroed": ((logits_grad == 0) & alive).sum().item() / alive.sum().item(),
                     "weight_gradients_not_finite": (~torch.isfinite(weights_grad)).float().mean().item(),
                     "relative_error": ((weights_grad - reference).norm() / reference.norm()).item() if finite
                     else None})
    return rows


def real_batch(tokenizer, data_path: str | None, batch_size: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size windows of the val text, evenly spaced, and their next-token targets."""
    _, val_text = data.split_text(data.read_text(data.find_corpus(data_path)))
    ids = torch.tensor(tokenizer.encode(val_text, drop_unknown=True))
    starts = torch.linspace(0, len(ids) - block_size - 2, batch_size).long().tolist()
    windows = torch.stack([ids[s:s + block_size + 1] for s in starts])
    return windows[:, :-1], windows[:, 1:]


def report_lines(result: dict) -> list[str]:
    lines = ["| format | largest | smallest normal | smallest subnormal | precision (eps) |", "|---|---|---|---|---|"]
    lines += [f"| {row['dtype']} | {row['max']:.4g} | {row['smallest_normal']:.3g} | {row['smallest_subnormal']:.3g} "
              f"| {row['eps']:.3g} |" for row in result["limits"]]
    reference = result["rows"][0]
    lines += ["", f"One backward pass of `{result['model']}` ({result['params']:,} parameters) on {result['batch']} "
              f"× {result['block_size']} tokens of real text. In float32, "
              f"{100 * reference['below_float16_normal']:.1f} % of the logits' gradients are smaller than float16's "
              f"smallest normal number and {100 * reference['below_float16_subnormal']:.1f} % smaller than half its "
              "smallest subnormal, so they round to zero:", "",
              "| autocast | loss scale | logit gradients zeroed (underflow) | weight gradients not finite (overflow) "
              "| error against float32 |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        error = "—" if row["relative_error"] is None else f"{row['relative_error']:.2e}"
        lines.append(f"| {row['dtype']} | 2^{row['loss_scale_exponent']} | {100 * row['logit_gradients_zeroed']:.2f} % "
                     f"| {100 * row['weight_gradients_not_finite']:.2f} % | {error} |")
    return lines


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description="Watch float16 gradients underflow and overflow, and the fixes.")
    parser.add_argument("--ckpt", help="a trained checkpoint (default: a freshly initialised 'small' preset)")
    parser.add_argument("--data", help="the text the batch comes from (default: Tiny Shakespeare)")
    parser.add_argument("--batch-size", type=int, default=16, help="windows in the batch (default: 16)")
    parser.add_argument("--results-dir", type=Path, help="also write lesson_float16.json here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.ckpt:
        from generate import load

        model, tokenizer = load(args.ckpt, device="cpu", dtype="float32")
        name = common.display_path(args.ckpt)
    else:
        text = data.read_text(data.find_corpus(args.data))
        tokenizer = build_tokenizer("char", data.split_text(text)[0])
        model = GPT(GPTConfig.from_preset("small", vocab_size=tokenizer.vocab_size, dropout=0.0))
        name = "small preset, freshly initialised"
    model.eval()  # no dropout: every pass sees the same network
    x, y = real_batch(tokenizer, args.data, args.batch_size, model.config.block_size)
    result = {"name": "lesson_float16", "kind": "lesson", "title": "float16 without loss scaling", "model": name,
              "params": model.num_params(), "batch": args.batch_size, "block_size": model.config.block_size,
              "limits": dtype_limits(), "rows": compare_precisions(model, x, y)}
    result["report"] = report_lines(result)
    print("\n".join(result["report"]))
    if args.results_dir:
        write_result(result, "float16", argv, "cpu", args.data, args.results_dir)
    return result


if __name__ == "__main__":
    main()
