"""
Train a tinygpt model, from raw text to a checkpoint and a generated sample.

    python train.py                                  # the default run for this machine's device
    python train.py --preset vanilla                 # GPT-2 style instead of the modern parts
    python train.py --preset modern --pos learned    # change one part and measure its effect
    python train.py --data my_text.txt               # any UTF-8 text, with its own vocabulary
    python train.py --tokenizer bpe --vocab-size 768 # byte-level BPE learned from the training split
    python train.py --optimizer muon                 # Muon for the blocks' matrices (optim.py), AdamW for the rest
    python train.py --resume                         # continue the run in --out-dir
    python train.py --recipe swaps-cpu               # a named recipe from settings.py
    torchrun --standalone --nproc_per_node=2 train.py  # data parallel on 2 GPUs (or CPU processes)

Defaults depend on the device, through a recipe (settings.py): on a GPU, the 10M "modern" preset with
the settings that reach the best validation loss; on the CPU, the "small" preset, sized to finish in a
few minutes on a laptop.

The file reads top to bottom: the pieces of the loop (get_lr, make_optimizer, train_step, estimate_loss),
setup, then main: the loop, which evaluates, checkpoints, steps and logs. Bookkeeping lives beside it:
settings.py (every flag and the recipes), checkpoint.py (saving, resuming), distributed.py (processes,
signals), progress.py (timings). Output in --out-dir: best.pt and last.pt, metrics.jsonl and loss.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import data
from generate import print_sample, silence_closed_stdout
from machinery import checkpoint, distributed, settings
from machinery.device import (
    autocast,
    check_fits_in_memory,
    describe_device,
    grad_scaler,
    pick_device,
    pick_dtype,
    synchronize,
)
from machinery.optim import MuonAdamW
from machinery.progress import Clock, Progress, format_seconds
from model import GPT, GPTConfig
from tokenizer import bits_per_char

# ----------------------------------------------------------------------------------------------------
# Pieces of the loop


def get_lr(step: int, lr: float, min_lr: float, warmup_iters: int, max_iters: int) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at max_iters."""
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    progress = min(1.0, (step - warmup_iters) / max(1, max_iters - warmup_iters))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, beta2: float, device: torch.device,
                   optimizer: str = "adamw") -> torch.optim.Optimizer:
    """AdamW ("adamw"), or Muon for the blocks' matrices and AdamW for the rest ("muon", see optim.py). Weight
    decay applies to matrices (linear and embedding weights) only, not to biases or norms."""
    named = dict(model.named_parameters())  # the tied head is the embedding: listed once, as transformer.wte
    matrices = {name: p for name, p in named.items() if p.dim() >= 2}
    vectors = [p for p in named.values() if p.dim() < 2]
    fused = device.type in ("cuda", "cpu")  # PyTorch's fused AdamW: each update in one kernel, not a dozen ops
    if optimizer == "adamw":
        groups = [{"params": list(matrices.values()), "weight_decay": weight_decay},
                  {"params": vectors, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), fused=fused)
    block_matrices = [p for name, p in matrices.items() if name.startswith("transformer.h.")]
    embeddings_and_head = [p for name, p in matrices.items() if not name.startswith("transformer.h.")]
    groups = [{"params": block_matrices, "algorithm": "muon", "weight_decay": weight_decay},
              {"params": embeddings_and_head, "algorithm": "adamw", "weight_decay": weight_decay},
              {"params": vectors, "algorithm": "adamw", "weight_decay": 0.0}]
    return MuonAdamW(groups, lr=lr, weight_decay=weight_decay, beta2=beta2, fused=fused)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               x: torch.Tensor, y: torch.Tensor, lr: float, grad_accum: int = 1, grad_clip: float = 1.0,
               dtype: torch.dtype = torch.float32, rank: int = 0, world: int = 1) -> torch.Tensor:
    """One optimizer step on the batch x, y (grad_accum * world micro-batches): this process takes its own
    slices, accumulates their gradients (all-reduced across processes on the last one only), clips them
    and steps the optimizer at learning rate lr. Returns this process's mean loss, left on the device."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    micro_batch = x.size(0) // (grad_accum * world)
    mean_loss = torch.zeros((), device=x.device)
    for micro in range(grad_accum):
        rows = slice((micro * world + rank) * micro_batch, (micro * world + rank + 1) * micro_batch)
        sync_now = micro == grad_accum - 1  # all-reduce gradients only on the last micro-step
        with (model.no_sync() if world > 1 and not sync_now else nullcontext()), autocast(x.device, dtype):
            _, loss = model(x[rows], y[rows])
        scaler.scale(loss / grad_accum).backward()  # the mean over micro-batches: one batch grad_accum times larger
        mean_loss += loss.detach() / grad_accum
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss


@torch.no_grad()
def estimate_loss(model: GPT, val_tokens: torch.Tensor, starts: list[int], block_size: int, batch_size: int,
                  device: torch.device, dtype: torch.dtype, rank: int = 0, world: int = 1) -> float:
    """Mean cross-entropy per token over the fixed validation windows (shared out across processes)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # summed nats, scored tokens
    batch_size = max(batch_size, 64) if device.type != "cpu" else batch_size
    for x, y in data.eval_batches(val_tokens, starts[rank::world], block_size, batch_size, device):
        with autocast(device, dtype):
            logits, _ = model(x)
        losses = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                                   ignore_index=-1, reduction="sum")
        total += torch.stack([losses.double(), (y != -1).sum().double()])
    distributed.sum_across(total, world)
    model.train()
    return (total[0] / total[1]).item()


# ----------------------------------------------------------------------------------------------------
# Setup


class TrainingError(Exception):
    """The run cannot go on (its loss diverged, a checkpoint cannot be written); the message says what to do."""


class NothingToDo(Exception):
    """--resume of a run that has already reached its --max-iters."""


@dataclass
class Run:
    """Everything set up for the loop: settings, processes, hardware, data, model, optimizer, state."""

    args: argparse.Namespace
    processes: distributed.Processes
    device: torch.device
    dtype: torch.dtype
    corpus: data.Corpus
    raw_model: GPT  # the plain model: what is evaluated and saved
    model: nn.Module | None  # what trains: raw_model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer  # AdamW, or optim.MuonAdamW
    scaler: torch.amp.GradScaler
    batch_generator: torch.Generator
    state: checkpoint.RunState
    resumed: bool
    output_closed: bool = False  # stdout's reader went away (`python train.py | head`)

    def log(self, message: str) -> None:
        if self.processes.is_main and not self.output_closed:
            try:
                print(message, flush=True)
            except BrokenPipeError:  # stop quietly, saving as on Ctrl-C; later prints go nowhere
                silence_closed_stdout()
                self.output_closed = True


def set_up(args: argparse.Namespace, processes: distributed.Processes, given: set[str]) -> Run:
    """Device, settings (a resumed run's own, see settings.resume_settings; given: the flags on the command
    line), the previous run, the output folder, data, model and optimizer. Raises ValueError or
    data.DataError, before anything is written, for any input that cannot work, and NothingToDo."""
    corpus_path = data.find_corpus(args.data)  # a --data path with no file is named before the out dir is checked
    out_dir = Path(args.out_dir)
    saved = checkpoint.previous_run(out_dir, args.resume, args.overwrite)
    if saved:
        # Only the model fields on the command line count: a recipe's differ if the run overrode them.
        asked = {name: getattr(args, name) for name in settings.ARCHITECTURE_FLAGS if name in given}
        checkpoint.check_resumable(saved, asked, out_dir / "last.pt")
        changes = settings.resume_settings(args, saved["args"], given, processes.world, len(saved["rng"]["ranks"]))
        if processes.is_main and changes:
            print(f"resuming with {'; '.join(changes)}")
        if saved["step"] >= args.max_iters:
            raise NothingToDo(f"the run in {out_dir}/ has taken {saved['step']} of its {args.max_iters} steps; "
                              f"pass --max-iters N (more than {saved['step']}) to train it further")
    device = pick_device(args.device)
    if device.type == "cuda" and processes.world > 1:
        device = torch.device("cuda", processes.local_rank)
    dtype = pick_dtype(device, args.dtype)
    settings.apply_recipe(args, device.type)
    if saved:
        config = GPTConfig(**saved["config"])
    else:
        asked = {name: getattr(args, name) for name in settings.ARCHITECTURE_FLAGS if getattr(args, name) is not None}
        config = GPTConfig.from_preset(args.preset, **asked)  # checks every value before the data is read
    with torch.device("meta"):  # the parameter count without allocating the weights
        params = GPT(config).num_params()
    check_fits_in_memory(config, args.batch_size, device, dtype, params)
    if processes.is_main:  # only once the settings are known to work, so a refused run leaves no folder
        checkpoint.prepare_out_dir(out_dir)
    corpus = data.load_corpus(str(corpus_path), saved and saved["tokenizer"], args.tokenizer, args.vocab_size,
                              config.block_size, args.eval_windows)
    config = replace(config, vocab_size=corpus.tokenizer.vocab_size)
    args.block_size = config.block_size

    torch.manual_seed(args.seed + processes.rank)  # weights are the same on every rank: DDP broadcasts rank 0's
    raw_model = GPT(config).to(device)
    optimizer = make_optimizer(raw_model, args.lr, args.weight_decay, args.beta2, device, args.optimizer)
    batch_generator = torch.Generator().manual_seed(args.seed)  # same on every rank; each takes its slice
    if saved:
        state = checkpoint.restore_training(saved, raw_model, optimizer, batch_generator, processes.rank, args.seed,
                                            device)
    else:
        state = checkpoint.RunState(interval_loss=torch.zeros((), device=device))
    model = torch.compile(raw_model) if args.compile else raw_model
    if processes.world > 1:
        model = DistributedDataParallel(model, device_ids=[processes.local_rank] if device.type == "cuda" else None)
    scaler = grad_scaler(device, dtype)
    if processes.is_main:  # a new run starts an empty record; a resumed one drops evaluations after its step
        metrics = out_dir / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if saved and metrics.exists() else []
        metrics.write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= state.step))
    return Run(args, processes, device, dtype, corpus, raw_model, model, optimizer, scaler, batch_generator, state,
               resumed=saved is not None)


def describe(run: Run) -> None:
    """Log what is about to train, on what, and from where."""
    args, config, corpus = run.args, run.raw_model.config, run.corpus
    run.log(f"device {describe_device(run.device)} | precision {str(run.dtype).removeprefix('torch.')} | "
            f"compile {'on' if args.compile else 'off'} | processes {run.processes.world}")
    run.log(f"model {'from checkpoint' if run.resumed else args.preset}: {run.raw_model.num_params():,} parameters "
            f"(norm={config.norm}, mlp={config.mlp}, pos={config.pos}, {config.n_layer} layers, {config.n_embd} wide)")
    run.log(f"data {corpus.name}: {len(corpus.train_tokens):,} train / {len(corpus.val_tokens):,} val tokens "
            f"({corpus.tokenizer.name} tokenizer, vocab {corpus.tokenizer.vocab_size}); {tokens_per_step(run):,} "
            f"tokens per step; val on {len(corpus.val_starts)} fixed windows")
    if run.resumed:
        run.log(f"resuming from {Path(args.out_dir) / 'last.pt'} at step {run.state.step} "
                f"(best val loss {run.state.best_val_loss:.4f})")


def tokens_per_step(run: Run) -> int:
    return run.args.batch_size * run.raw_model.config.block_size * run.args.grad_accum * run.processes.world


# ----------------------------------------------------------------------------------------------------
# The run


def save(run: Run, *paths: Path) -> None:
    """Write the run's checkpoint to each path. Every rank must call this: all their random states go in."""
    ranks = distributed.gather(checkpoint.rng_state(run.device), run.processes.world)
    if run.processes.is_main:
        rng = {"batches": run.batch_generator.get_state(), "ranks": ranks}
        state = checkpoint.make_checkpoint(run.raw_model, run.corpus.tokenizer, run.state, run.optimizer, rng,
                                           vars(run.args))
        for path in paths:
            try:
                checkpoint.save_checkpoint(state, path)
            except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
                cause = error if isinstance(error, OSError) or error.__context__ is None else error.__context__
                reason = getattr(cause, "strerror", None) or " ".join(str(cause).split())
                raise TrainingError(f"could not write {path} at step {run.state.step} ({reason}); the previous "
                                    f"checkpoint is kept: make room, then continue with --resume --out-dir "
                                    f"{run.args.out_dir}") from None


def evaluate(run: Run, clock: Clock, progress: Progress) -> None:
    """Measure the val loss; log it with the interval's train loss and speed; save last.pt (and best.pt)."""
    args, state, corpus, world = run.args, run.state, run.corpus, run.processes.world
    synchronize(run.device)
    interval_seconds = time.time() - clock.interval_start
    state.train_s += interval_seconds
    steps_timed = min(state.interval_steps, state.step - clock.start_step)  # a resumed interval: since the resume
    tokens_per_sec = steps_timed * tokens_per_step(run) / interval_seconds if steps_timed else 0.0
    val_loss = estimate_loss(run.raw_model, corpus.val_tokens, corpus.val_starts, run.raw_model.config.block_size,
                             args.batch_size, run.device, run.dtype, run.processes.rank, world)
    check_finite_loss(val_loss, "validation", state.step, run)
    improved = state.record_eval(val_loss)
    state.elapsed_s = clock.elapsed()
    mean_loss = distributed.mean_across(state.interval_loss, world).item()  # every rank trained its own slices
    train_loss = mean_loss / state.interval_steps if state.interval_steps else None
    record = {"step": state.step, "train_loss": train_loss, "val_loss": val_loss,
              "val_bpc": bits_per_char(val_loss * (len(corpus.val_tokens) - 1), corpus.val_chars_scored),
              "lr": get_lr(min(state.step, args.max_iters - 1), args.lr, args.min_lr, args.warmup_iters,
                           args.max_iters),
              "tokens_per_sec": tokens_per_sec, "elapsed_s": state.elapsed_s, "train_s": state.train_s,
              "first_step_s": clock.first_step_s}
    progress.clear()
    # The time left is estimated from this invocation's pace, so not before its first step.
    trained = state.step > clock.start_step
    time_left = clock.seconds_per_step(state.step) * (args.max_iters - state.step)
    run.log(f"step {state.step:5d} | train {'  -   ' if train_loss is None else f'{train_loss:.4f}'} | val "
            f"{val_loss:.4f} ({record['val_bpc']:.3f} bpc){' *' if improved else '  '} | lr {record['lr']:.2e} | "
            f"{tokens_per_sec:8,.0f} tok/s | {format_seconds(state.elapsed_s)} elapsed"
            f"{f', {format_seconds(time_left)} left' if trained else ''}")
    out_dir = Path(args.out_dir)
    metrics_path = out_dir / "metrics.jsonl"
    metrics_size = metrics_path.stat().st_size if run.processes.is_main else 0
    if run.processes.is_main:
        with open(metrics_path, "a") as metrics:
            metrics.write(json.dumps(record) + "\n")
    state.interval_loss, state.interval_steps = torch.zeros((), device=run.device), 0  # saved as a fresh start
    try:
        save(run, *([out_dir / "best.pt"] if improved else []), out_dir / "last.pt")
    except TrainingError:
        if run.processes.is_main:  # the record holds saved steps only, so a resume logs each step once
            os.truncate(metrics_path, metrics_size)
        raise
    clock.interval_start = time.time()


def check_finite_loss(loss: float, kind: str, step: int, run: Run) -> None:
    """Stop a diverged run at once, before NaN weights reach a checkpoint."""
    if math.isfinite(loss):
        return
    fp16 = ", or --dtype bfloat16 instead of float16" if run.dtype == torch.float16 else ""
    raise TrainingError(f"the {kind} loss is {loss} at step {step}: training diverged, and nothing from this "
                        f"step on was saved; try a lower --lr (this run: {run.args.lr:g}), gradient clipping "
                        f"(--grad-clip 1.0; this run: {run.args.grad_clip:g}){fp16}")


def main(argv: list[str] | None = None) -> dict:
    """Train as the flags say; returns a summary (best val loss, steps, time, parameters)."""
    args = settings.parse_args(argv)
    processes = distributed.join()
    try:
        run = set_up(args, processes, settings.given_flags(argv))
    except (ValueError, data.DataError) as error:
        raise SystemExit(f"error: {error}") from None
    except NothingToDo as nothing:
        print(f"nothing to do: {nothing}")
        return {}
    try:
        return train(run)
    except TrainingError as error:
        raise SystemExit(f"error: {error}") from None


def train(run: Run) -> dict:
    """The loop: evaluate and checkpoint every --eval-interval steps, step, log; then finish."""
    args, processes = run.args, run.processes
    describe(run)
    state, progress = run.state, Progress(args.max_iters, enabled=processes.is_main)
    clock = Clock(state.step, state.elapsed_s)
    stopped_by = None
    with distributed.StopSignal() as stop_signal:
        while True:
            last_step = state.step >= args.max_iters
            # Evaluate and checkpoint at the start of every interval and at the very end; not again at the
            # step a run resumes from: it was evaluated and logged before it was saved.
            resumed_here = run.resumed and state.step == clock.start_step
            if (state.step % args.eval_interval == 0 or last_step) and not resumed_here:
                evaluate(run, clock, progress)
                if args.patience and state.evals_without_improvement >= args.patience:
                    run.log(f"early stop: val loss has not improved for {args.patience} evaluations")
                    break
            if last_step:
                break
            if stop_signal.requested(processes.world, run.output_closed):
                stopped_by = "output closed" if run.output_closed else signal.Signals(stop_signal.signum).name
                break
            if args.stop_after_iters and state.step - clock.start_step >= args.stop_after_iters:
                stopped_by = "stop-after-iters"
                break
            # One optimizer step: one batch, drawn the same on every rank; each process trains on its slices.
            x, y = data.get_batch(run.corpus.train_tokens, args.batch_size * args.grad_accum * processes.world,
                                  args.block_size, run.batch_generator, run.device)
            lr = get_lr(state.step, args.lr, args.min_lr, args.warmup_iters, args.max_iters)
            loss = train_step(run.model, run.optimizer, run.scaler, x, y, lr, args.grad_accum, args.grad_clip,
                              run.dtype, processes.rank, processes.world)
            # One number per step to the CPU: a NaN is caught at the step it appears (on any rank).
            check_finite_loss(distributed.sum_across(loss.clone(), processes.world).item(), "training",
                              state.step, run)
            state.interval_loss += loss
            state.step += 1
            state.interval_steps += 1
            if clock.first_step_s is None:
                synchronize(run.device)
                clock.first_step_s = time.time() - clock.interval_start
            seconds_per_step = clock.seconds_per_step(state.step)
            progress.update(state.step, tokens_per_step(run) / seconds_per_step,
                            seconds_per_step * (args.max_iters - state.step))
    return finish(run, clock, stopped_by)


def finish(run: Run, clock: Clock, stopped_by: str | None) -> dict:
    """Save a stopped run, plot the curves, print a sample, leave the process group; return a summary."""
    args, state, out_dir = run.args, run.state, Path(run.args.out_dir)
    if stopped_by:
        distributed.mean_across(state.interval_loss, run.processes.world)  # each rank's own slices: save the mean
        state.elapsed_s = clock.elapsed()
        save(run, out_dir / "last.pt")
        run.log(f"stopped at step {state.step} ({stopped_by}); {out_dir / 'last.pt'} saved: "
                f"python train.py --resume --out-dir {out_dir} continues the run")
    outputs = ["best.pt", "last.pt", "metrics.jsonl"]
    if run.processes.is_main and write_loss_plot(out_dir):
        outputs.append("loss.png")
    total_time = time.time() - clock.started
    run.log(f"done: best val loss {state.best_val_loss:.4f} after {state.step} step{'s' if state.step != 1 else ''} "
            f"in {format_seconds(total_time)}; {', '.join(outputs[:-1])} and {outputs[-1]} in {out_dir}/")
    if run.processes.is_main and args.sample_tokens and not stopped_by and not run.output_closed:
        print_sample(out_dir / "best.pt", run.device, args.sample_tokens)
    close(run)
    if stopped_by in ("SIGINT", "SIGTERM"):  # the shell's convention, so `&&` and schedulers see a stopped run
        raise SystemExit(128 + signal.Signals[stopped_by])
    return summary(run, total_time)


def summary(run: Run, seconds: float) -> dict:
    """What main returns: best val loss, steps, time, parameters, device and tokens per step."""
    return {"best_val_loss": run.state.best_val_loss, "steps": run.state.step, "train_seconds": seconds,
            "params": run.raw_model.num_params(), "device": describe_device(run.device),
            "tokens_per_step": tokens_per_step(run)}


def close(run: Run) -> None:
    """Leave the process group; the DDP wrapper must be freed first (see distributed.leave)."""
    run.model = None
    distributed.leave(run.processes.world)


def write_loss_plot(out_dir: Path) -> bool:
    """loss.png from metrics.jsonl, when matplotlib is installed (it is optional); whether it was written."""
    try:
        from machinery.plots import plot_training_curves
    except ImportError:
        print("(loss.png skipped: pip install matplotlib to get it)")
        return False
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    plot_training_curves(records, out_dir / "loss.png")
    return True


if __name__ == "__main__":
    main()
