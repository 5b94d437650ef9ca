"""
Train a tinygpt model, from raw text to a checkpoint and a generated sample.

    python train.py                                  # the default run for this machine's device
    python train.py --preset vanilla                 # GPT-2 style instead of the modern parts
    python train.py --preset modern --pos learned    # change one part and measure its effect
    python train.py --data my_text.txt               # any UTF-8 text, with its own vocabulary
    python train.py --tokenizer bpe --vocab-size 768 # byte-level BPE learned from the training split
    python train.py --resume                         # continue the run in --out-dir
    torchrun --standalone --nproc_per_node=2 train.py  # data parallel on 2 GPUs (or CPU processes)

Defaults depend on the device: on a GPU, the 10M "modern" preset with the settings that reach the
best validation loss; on the CPU, the "small" preset, sized to finish in a few minutes on a laptop.

The file reads top to bottom: settings, setup (distributed, device, data, model, optimizer), then
the loop: evaluate, checkpoint, step, log. Output in --out-dir: best.pt and last.pt, metrics.jsonl
and loss.png.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

import data
from device import autocast, describe_device, pick_device, pick_dtype, synchronize
from model import GPT, MLPS, NORMS, POSITIONS, PRESETS, GPTConfig, load_checkpoint
from tokenizer import TOKENIZER_KINDS, bits_per_char, build_tokenizer, tokenizer_from_state

# ----------------------------------------------------------------------------------------------------
# Settings. Defaults that depend on the device live in RECIPES; every flag can override them.

RECIPES = {
    # One GPU: the 10M modern model, trained to its best validation loss.
    "gpu": dict(preset="modern", batch_size=64, lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=5000,
                eval_interval=250, eval_windows=None, beta2=0.99, compile=True),
    # A laptop CPU: the small model, a few minutes, still recognisable Shakespeare.
    "cpu": dict(preset="small", batch_size=16, lr=4e-3, min_lr=4e-4, warmup_iters=50, max_iters=600,
                eval_interval=100, eval_windows=50, beta2=0.99, compile=False),
}
ARCHITECTURE_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias", "norm", "mlp", "pos",
                      "residual", "tie_embeddings", "attention")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one clear line and exit code 2 (no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; device-dependent defaults are left as None and filled by apply_recipe."""
    parser = ArgumentParser(description="Train a tinygpt model.", formatter_class=argparse.RawTextHelpFormatter)
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="UTF-8 text file to train on (default: Tiny Shakespeare, downloaded\n"
                                      f"to data/ if not found; ${data.DATA_ENV_VAR} also sets the path)")
    group.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="char",
                       help="char: one token per character; bpe: byte-level BPE learned from the\n"
                            "training split; gpt2: GPT-2's 50,257-token BPE (needs tiktoken and internet\n"
                            "on first use) (default: char)")
    group.add_argument("--vocab-size", type=int, help="BPE vocabulary size, 256 bytes + merges (with --tokenizer bpe)")
    group = parser.add_argument_group("model (a preset, then any field overridden)")
    group.add_argument("--preset", choices=list(PRESETS), help="GPU default: modern; CPU default: small")
    group.add_argument("--norm", choices=NORMS, help="none: every norm an identity")
    group.add_argument("--mlp", choices=MLPS, help="none: no feed-forward sublayer (attention only)")
    group.add_argument("--pos", choices=POSITIONS, help="none: no position information")
    group.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                       help="add each sublayer's output to its input (default: on)")
    group.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
                       help="the output head reuses the token embedding matrix (default: on)")
    group.add_argument("--n-layer", type=int, help="transformer blocks; 0: embedding straight into the head")
    group.add_argument("--n-head", type=int)
    group.add_argument("--n-embd", type=int)
    group.add_argument("--block-size", type=int, help="context length in tokens")
    group.add_argument("--dropout", type=float)
    group.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--attention", choices=("fused", "manual"), help="fused kernel or the written-out math")
    group = parser.add_argument_group("optimisation")
    group.add_argument("--batch-size", type=int, help="sequences per micro-batch (per process)")
    group.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default: 1)")
    group.add_argument("--max-iters", type=int, help="optimizer steps in the whole run")
    group.add_argument("--lr", type=float, help="peak learning rate")
    group.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    group.add_argument("--warmup-iters", type=int, help="steps of linear warmup")
    group.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices (default: 0.1)")
    group.add_argument("--beta2", type=float, help="AdamW beta2")
    group.add_argument("--grad-clip", type=float, default=1.0,
                       help="clip the gradient norm to this; 0: off (default: 1)")
    group.add_argument("--seed", type=int, default=1337, help="seed for weights, batches and dropout (default: 1337)")
    group = parser.add_argument_group("evaluation, checkpoints and output")
    group.add_argument("--eval-interval", type=int, help="evaluate and checkpoint every this many steps")
    group.add_argument("--eval-windows", type=int,
                       help="validate on this many fixed, evenly spaced windows of the val split\n"
                            "(the same ones every time); 0: the whole val split (GPU default)")
    group.add_argument("--patience", type=int, default=0,
                       help="stop when val loss has not improved for this many evaluations; 0: off")
    group.add_argument("--out-dir", default="out", help="where checkpoints, metrics and plots go (default: out)")
    group.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir/last.pt")
    group.add_argument("--overwrite", action="store_true", help="start afresh even if --out-dir holds a run")
    group.add_argument("--stop-after-iters", type=int,
                       help="stop (saving last.pt) after this many steps of this invocation; the schedule\n"
                            "still follows --max-iters, so --resume continues the same run")
    group.add_argument("--sample-tokens", type=int, default=300,
                       help="characters/tokens of text to print at the end; 0: none (default: 300)")
    group = parser.add_argument_group("hardware")
    group.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu")
    group.add_argument("--dtype", default="auto",
                       help="autocast precision: auto (CUDA: bfloat16, or float16 with a gradient scaler\n"
                            "on GPUs without bf16; MPS: float32; CPU: bfloat16 when the processor has\n"
                            "native bf16 units such as AMX, else float32), float32, bfloat16, float16")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the model (default: on for CUDA, off elsewhere)")
    args = parser.parse_args(argv)
    check_ranges(parser, args)
    return args


def check_ranges(parser: ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse flag values that cannot work, before anything is read or written."""
    at_least_one = ("n_head", "n_embd", "block_size", "batch_size", "grad_accum", "max_iters",
                    "eval_interval", "stop_after_iters")
    for name in at_least_one:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    for name in ("lr", "min_lr"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, not {value}")
    if args.dropout is not None and not 0 <= args.dropout < 1:
        parser.error(f"--dropout must be in [0, 1), not {args.dropout}")
    if args.beta2 is not None and not 0 < args.beta2 < 1:
        parser.error(f"--beta2 must be in (0, 1), not {args.beta2}")
    for name in ("n_layer", "weight_decay", "grad_clip", "patience", "sample_tokens", "warmup_iters", "eval_windows"):
        value = getattr(args, name)
        if value is not None and value < 0:
            parser.error(f"--{name.replace('_', '-')} must not be negative, not {value}")
    if args.tokenizer == "bpe" and (args.vocab_size is None or args.vocab_size < 257):
        parser.error("--tokenizer bpe needs --vocab-size of at least 257 (256 bytes + merges)")


def apply_recipe(args: argparse.Namespace, device: torch.device) -> None:
    """Fill every setting left unset with the recipe for this kind of device."""
    recipe = RECIPES["cpu" if device.type == "cpu" else "gpu"]
    for name, value in recipe.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.compile and device.type == "mps":
        args.compile = False  # torch.compile does not support training on MPS


# ----------------------------------------------------------------------------------------------------
# Pieces of the loop


def get_lr(step: int, args: argparse.Namespace) -> float:
    """Linear warmup to --lr, then cosine decay to --min-lr at --max-iters."""
    if step < args.warmup_iters:
        return args.lr * (step + 1) / args.warmup_iters
    progress = min(1.0, (step - args.warmup_iters) / max(1, args.max_iters - args.warmup_iters))
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)


def make_optimizer(model: GPT, args: argparse.Namespace, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (linear and embedding weights) only, not on biases or norms."""
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": matrices, "weight_decay": args.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, args.beta2), fused=device.type == "cuda")


@torch.no_grad()
def estimate_loss(model: GPT, val_tokens: torch.Tensor, starts: list[int], args, device, dtype,
                  rank: int = 0, world: int = 1) -> float:
    """Mean cross-entropy per token over the fixed validation windows (shared out across processes)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # summed nats, scored tokens
    batch = max(args.batch_size, 64) if device.type != "cpu" else args.batch_size
    for x, y in data.eval_batches(val_tokens, starts[rank::world], args.block_size, batch, device):
        with autocast(device, dtype):
            logits, _ = model(x)
        losses = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                                   ignore_index=-1, reduction="sum")
        total += torch.stack([losses.double(), (y != -1).sum().double()])
    if world > 1:
        dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint atomically: a temp file in the same folder, flushed, then renamed over path.
    A crash mid-write leaves the previous file intact."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        try:
            torch.save(state, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def format_seconds(seconds: float) -> str:
    """1h02m, 3m05s or 12s."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """A one-line progress display, redrawn in place, in a terminal or a notebook (not in plain logs)."""

    def __init__(self, total: int, enabled: bool):
        in_notebook = "ipykernel" in sys.modules
        self.enabled = enabled and (sys.stdout.isatty() or in_notebook)
        self.total = total
        self.last_draw = 0.0

    def update(self, step: int, tokens_per_sec: float, eta: float) -> None:
        if not self.enabled or time.time() - self.last_draw < 0.5:
            return
        self.last_draw = time.time()
        done = int(30 * step / self.total)
        print(f"\r[{'=' * done}{' ' * (30 - done)}] step {step}/{self.total} "
              f"{tokens_per_sec:,.0f} tok/s, {format_seconds(eta)} left ", end="", flush=True)

    def clear(self) -> None:
        if self.enabled:
            print("\r" + " " * 100 + "\r", end="", flush=True)


# ----------------------------------------------------------------------------------------------------
# The run


def setup_distributed() -> tuple[int, int, int]:
    """Join the process group when launched by torchrun; returns (rank, local_rank, world_size)."""
    if "RANK" not in os.environ:
        return 0, 0, 1
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        # NCCL carries the GPU tensors (gradients); gloo the CPU ones, such as the stop flag each step,
        # which then needs no wait for the GPU.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")
    return dist.get_rank(), local_rank, dist.get_world_size()


def rng_states(device: torch.device, world: int) -> list[dict]:
    """Every process's dropout random state, in rank order (each rank draws its own masks). Under DDP
    every rank must call this at the same point: the states are gathered from all of them."""
    state = {"torch": torch.get_rng_state(),
             "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if world == 1:
        return [state]
    states = [None] * world
    dist.all_gather_object(states, state)
    return states


def restore_rng_state(saved: list[dict], rank: int, step: int, seed: int, device: torch.device) -> None:
    """Continue this rank's dropout random stream from a checkpoint. A rank the saving run did not have
    (resumed on more processes) starts a fresh stream, seeded from --seed, its rank and the step."""
    if rank >= len(saved):
        torch.manual_seed(seed + rank + 1_000_003 * step)
        return
    torch.set_rng_state(saved[rank]["torch"])
    if device.type == "cuda" and saved[rank]["cuda"] is not None:  # dropout draws on the GPU
        torch.cuda.set_rng_state(saved[rank]["cuda"].cpu(), device)


def stop_requested(stop_signal: list, world: int) -> bool:
    """Whether Ctrl-C or SIGTERM has arrived. Under DDP the ranks decide together: a signal can reach one
    process a step before another, and a rank that stopped alone would leave the others waiting for it in
    the next gradient all-reduce forever. The cost is one one-number all-reduce per step, on the CPU so
    that the GPU keeps running ahead."""
    if world == 1:
        return bool(stop_signal)
    flag = torch.tensor(float(bool(stop_signal)))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.item() > 0


def model_config(args: argparse.Namespace, vocab_size: int) -> GPTConfig:
    """The preset with every architecture flag the user gave applied on top."""
    overrides = {name: getattr(args, name) for name in ARCHITECTURE_FLAGS if getattr(args, name) is not None}
    return GPTConfig.from_preset(args.preset, vocab_size=vocab_size, **overrides)


def check_resumable(checkpoint: dict, args: argparse.Namespace, path: Path) -> None:
    """Refuse to resume a checkpoint whose model differs from what the flags ask for."""
    saved = checkpoint["config"]
    for name in ARCHITECTURE_FLAGS:
        asked = getattr(args, name)
        if asked is not None and asked != saved[name]:
            raise SystemExit(f"error: {path} holds a model with {name}={saved[name]!r} but --"
                             f"{name.replace('_', '-')} asks for {asked!r}; drop the flag to resume it, "
                             "or use another --out-dir for a new run")


def main(argv: list[str] | None = None) -> dict:
    """Train as the flags say; returns a summary (best val loss, steps, time, parameters)."""
    args = parse_args(argv)
    rank, local_rank, world = setup_distributed()
    is_main = rank == 0
    log = print if is_main else (lambda *a, **k: None)
    try:
        device = pick_device(args.device)
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", local_rank)
        dtype = pick_dtype(device, args.dtype)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    apply_recipe(args, device)

    out_dir = Path(args.out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    checkpoint = None
    if args.resume:
        try:
            checkpoint = load_checkpoint(last_path)
        except FileNotFoundError:
            raise SystemExit(f"error: --resume found no checkpoint at {last_path}; train without --resume first, "
                             "or point --out-dir at the run to continue") from None
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        check_resumable(checkpoint, args, last_path)
    elif (last_path.exists() or best_path.exists()) and not args.overwrite:
        raise SystemExit(f"error: {out_dir}/ already holds a trained run; pass --resume to continue it, "
                         "--out-dir DIR for a new one, or --overwrite to replace it")

    # Data: the text, its tokenizer (the checkpoint's when resuming), the standard split, token ids.
    try:
        corpus = data.find_corpus(args.data)
        text = data.read_text(corpus)
    except data.DataError as error:
        raise SystemExit(f"error: {error}") from None
    train_text, val_text = data.split_text(text)
    try:
        tokenizer = (tokenizer_from_state(checkpoint["tokenizer"]) if checkpoint
                     else build_tokenizer(args.tokenizer, train_text, args.vocab_size))
        train_ids = data.encode_cached(train_text, tokenizer)
        val_ids = data.encode_cached(val_text, tokenizer)
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"error: {error}") from None

    # Model: rebuilt from the checkpoint's config when resuming, else the preset plus flags.
    try:
        config = GPTConfig(**checkpoint["config"]) if checkpoint else model_config(args, tokenizer.vocab_size)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    args.block_size = config.block_size
    for name, ids in (("training", train_ids), ("validation", val_ids)):
        if len(ids) < config.block_size + 1:
            raise SystemExit(f"error: {corpus} gives only {len(ids)} {name} tokens, fewer than one context of "
                             f"{config.block_size} + 1; use a longer text or a smaller --block-size")
    train_tokens = torch.from_numpy(train_ids.astype("int64"))
    val_tokens = torch.from_numpy(val_ids.astype("int64"))
    val_starts = data.eval_windows(len(val_tokens), config.block_size, args.eval_windows or None)

    torch.manual_seed(args.seed + rank)  # weights are the same on every rank: DDP broadcasts rank 0's
    raw_model = GPT(config).to(device)
    optimizer = make_optimizer(raw_model, args, device)
    batch_generator = torch.Generator().manual_seed(args.seed)  # same on every rank; each takes its slice
    step, best_val_loss, evals_without_improvement = 0, float("inf"), 0
    if checkpoint:
        raw_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, best_val_loss = checkpoint["step"], checkpoint["best_val_loss"]
        evals_without_improvement = checkpoint["evals_without_improvement"]
        batch_generator.set_state(checkpoint["rng"]["batches"])
        restore_rng_state(checkpoint["rng"]["ranks"], rank, step, args.seed, device)
    model = torch.compile(raw_model) if args.compile else raw_model
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda"
                                                          else None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    out_dir.mkdir(parents=True, exist_ok=True)

    tokens_per_step = args.batch_size * config.block_size * args.grad_accum * world
    log(f"device {describe_device(device)} | precision {str(dtype).removeprefix('torch.')} | "
        f"compile {'on' if args.compile else 'off'} | processes {world}")
    log(f"model {args.preset if not checkpoint else 'from checkpoint'}: {raw_model.num_params():,} parameters "
        f"(norm={config.norm}, mlp={config.mlp}, pos={config.pos}, {config.n_layer} layers, {config.n_embd} wide)")
    log(f"data {corpus.name}: {len(train_tokens):,} train / {len(val_tokens):,} val tokens "
        f"({tokenizer.name} tokenizer, vocab {tokenizer.vocab_size}); {tokens_per_step:,} tokens per step; "
        f"val on {len(val_starts)} fixed windows")
    if checkpoint:
        log(f"resuming from {last_path} at step {step} (best val loss {best_val_loss:.4f})")

    stop_signal, previous_handlers = [], {}
    if threading.current_thread() is threading.main_thread():  # signal handlers need the main thread
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[signum] = signal.signal(signum, lambda signum, frame: stop_signal.append(signum))

    def checkpoint_state(rank_rng_states: list[dict]) -> dict:
        return {"model": raw_model.state_dict(), "config": asdict(config), "tokenizer": tokenizer.state_dict(),
                "optimizer": optimizer.state_dict(), "step": step, "best_val_loss": best_val_loss,
                "evals_without_improvement": evals_without_improvement,
                "elapsed_s": elapsed_before + time.time() - run_start, "train_s": train_seconds,
                "rng": {"batches": batch_generator.get_state(), "ranks": rank_rng_states},
                "interval_loss": interval_loss, "interval_steps": interval_steps,  # train loss since the last eval
                "args": vars(args)}

    metrics_file = open(out_dir / "metrics.jsonl", "a" if checkpoint else "w") if is_main else None
    progress = Progress(args.max_iters, enabled=is_main)
    # Bits per character compare tokenizers fairly: all nats over the val text / its characters / ln 2.
    # Every val token but the first is scored, so the first token's characters are not counted.
    val_chars_scored = len(val_text) - len(tokenizer.decode(val_ids[:1].tolist()))
    # Times: elapsed_s is wall time since the run began (across resumes), train_s the part spent in
    # training steps, first_step_s this invocation's first step (which includes torch.compile's work).
    elapsed_before = checkpoint["elapsed_s"] if checkpoint else 0.0
    train_seconds = checkpoint["train_s"] if checkpoint else 0.0
    first_step_seconds = None
    start_step, run_start = step, time.time()
    interval_start, interval_loss, interval_steps = time.time(), torch.zeros((), device=device), 0
    if checkpoint:  # stopped between evaluations: the next logged train loss still averages the whole interval
        interval_loss, interval_steps = checkpoint["interval_loss"].to(device), checkpoint["interval_steps"]
    stopped_by = None
    while True:
        last_step = step == args.max_iters
        # Evaluate and checkpoint (at the start of every interval, and at the very end). Not again at the
        # step a run resumes from: if it was an evaluation step, it was evaluated and logged before saving.
        if (step % args.eval_interval == 0 or last_step) and not (checkpoint and step == start_step):
            synchronize(device)
            interval_seconds = time.time() - interval_start  # training steps only, evaluation excluded
            train_seconds += interval_seconds
            steps_timed = min(interval_steps, step - start_step)  # a resumed interval is timed from the resume
            tokens_per_sec = steps_timed * tokens_per_step / interval_seconds if steps_timed else 0.0
            val_loss = estimate_loss(raw_model, val_tokens, val_starts, args, device, dtype, rank, world)
            improved = val_loss < best_val_loss
            best_val_loss = min(best_val_loss, val_loss)
            evals_without_improvement = 0 if improved else evals_without_improvement + 1
            elapsed = elapsed_before + time.time() - run_start
            train_loss = None
            if interval_steps:
                if world > 1:
                    dist.all_reduce(interval_loss)
                    interval_loss /= world
                train_loss = interval_loss.item() / interval_steps
            steps_done = step - start_step
            time_left = (time.time() - run_start) / steps_done * (args.max_iters - step) if steps_done else 0.0
            record = {"step": step, "train_loss": train_loss, "val_loss": val_loss,
                      "val_bpc": bits_per_char(val_loss * (len(val_tokens) - 1), val_chars_scored),
                      "lr": get_lr(min(step, args.max_iters - 1), args), "tokens_per_sec": tokens_per_sec,
                      "elapsed_s": elapsed, "train_s": train_seconds, "first_step_s": first_step_seconds}
            progress.clear()
            train_text_loss = f"{train_loss:.4f}" if train_loss is not None else "  -   "
            log(f"step {step:5d} | train {train_text_loss} | val {val_loss:.4f} ({record['val_bpc']:.3f} bpc)"
                f"{' *' if improved else '  '} | lr {record['lr']:.2e} | {tokens_per_sec:8,.0f} tok/s | "
                f"{format_seconds(elapsed)} elapsed, {format_seconds(time_left)} left", flush=True)
            interval_loss, interval_steps = torch.zeros((), device=device), 0  # logged; saved below as a fresh start
            saved_rng = rng_states(device, world)
            if is_main:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if improved:
                    save_checkpoint(checkpoint_state(saved_rng), best_path)
                save_checkpoint(checkpoint_state(saved_rng), last_path)
            interval_start = time.time()
            if args.patience and evals_without_improvement >= args.patience:
                log(f"early stop: val loss has not improved for {args.patience} evaluations")
                break
        if last_step:
            break
        signalled = stop_requested(stop_signal, world)
        if signalled or (args.stop_after_iters and step - start_step >= args.stop_after_iters):
            stopped_by = "signal" if signalled else "stop-after-iters"
            break

        # One optimizer step: grad_accum micro-batches, each process taking its own slice of the batch.
        lr = get_lr(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro_batches = args.grad_accum * world
        x_all, y_all = data.get_batch(train_tokens, args.batch_size * micro_batches, config.block_size,
                                      batch_generator, device)
        for micro in range(args.grad_accum):
            part = slice((micro * world + rank) * args.batch_size, (micro * world + rank + 1) * args.batch_size)
            sync_now = micro == args.grad_accum - 1  # all-reduce gradients only on the last micro-step
            with (model.no_sync() if world > 1 and not sync_now else nullcontext()), autocast(device, dtype):
                _, loss = model(x_all[part], y_all[part])
            scaler.scale(loss / args.grad_accum).backward()
            interval_loss += loss.detach() / args.grad_accum
        if args.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        interval_steps += 1
        if first_step_seconds is None:
            synchronize(device)
            first_step_seconds = time.time() - interval_start
        if progress.enabled:
            elapsed = time.time() - run_start
            progress.update(step, (step - start_step) * tokens_per_step / elapsed,
                            elapsed / (step - start_step) * (args.max_iters - step))
    for signum, handler in previous_handlers.items():  # so Ctrl-C works again in a notebook after training
        if handler is not None:  # None: installed outside Python, so it cannot be put back from here
            signal.signal(signum, handler)

    saved_rng = rng_states(device, world) if stopped_by else None
    if stopped_by and world > 1:  # each rank holds the train loss of its own slices: save their mean
        dist.all_reduce(interval_loss)
        interval_loss /= world
    if is_main:
        if stopped_by:
            save_checkpoint(checkpoint_state(saved_rng), last_path)
            log(f"stopped at step {step} ({stopped_by}); {last_path} saved: --resume continues the run")
        metrics_file.close()
        write_loss_plot(out_dir)
    total_time = time.time() - run_start
    summary = {"best_val_loss": best_val_loss, "steps": step, "train_seconds": total_time,
               "params": raw_model.num_params(), "device": describe_device(device),
               "tokens_per_step": tokens_per_step}
    log(f"done: best val loss {best_val_loss:.4f} after {step} steps in {format_seconds(total_time)}; "
        f"checkpoints in {out_dir}/")
    if is_main and args.sample_tokens and not stopped_by:
        print_sample(best_path, device, args.sample_tokens)
    if world > 1:
        # The DDP wrapper lives in reference cycles, so only a garbage collection frees it. Left to the one
        # at interpreter exit, a gloo worker thread still releasing its work can no longer take the GIL and
        # the process aborts ("terminate called without an active exception"): free it while Python runs.
        del model
        gc.collect()
        dist.destroy_process_group()
    if stopped_by == "signal":
        raise SystemExit(0)
    return summary


def write_loss_plot(out_dir: Path) -> None:
    """loss.png from metrics.jsonl, when matplotlib is installed (it is optional)."""
    try:
        from plots import plot_training_curves
    except ImportError:
        print("(loss.png skipped: pip install matplotlib to get it)")
        return
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    plot_training_curves(records, out_dir / "loss.png")


def print_sample(best_path: Path, device: torch.device, num_tokens: int) -> None:
    """Print text generated by the best checkpoint, so the run ends showing what was learned."""
    from generate import load, sample

    model, tokenizer = load(best_path, device=str(device.type))
    print(f"\n--- a sample from {best_path} ---", flush=True)
    sample(model, tokenizer, prompt="\n", max_new_tokens=num_tokens, temperature=0.8, seed=0,
           stream=lambda piece: print(piece, end="", flush=True))
    print("\n---", flush=True)


if __name__ == "__main__":
    main()
