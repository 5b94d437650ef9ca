"""
Train a tinygpt model, from raw text to a checkpoint and a generated sample.

    uv run train.py                                  # the default run for this machine's device
    uv run train.py --preset vanilla                 # GPT-2 style instead of the modern parts
    uv run train.py --preset modern --pos learned    # change one part and measure its effect
    uv run train.py --data my_text.txt               # any UTF-8 text, with its own vocabulary
    uv run train.py --tokenizer bpe --vocab-size 768 # byte-level BPE learned from the training split
    uv run train.py --optimizer adamw                # AdamW for every parameter instead of Muon
    uv run train.py --time-budget 10m                # the best model this machine trains in 10 minutes
    uv run train.py --resume                         # continue the run in --out-dir
    uv run train.py --recipe swaps-cpu               # a named recipe (machinery/settings.py)
    uv run torchrun --standalone --nproc_per_node=2 train.py  # data parallel on 2 GPUs (or CPU processes)

Defaults depend on the device, through a recipe: on a GPU, the 10M "modern" preset; on the CPU, "small".

The file reads top to bottom: the pieces of the loop (get_lr, make_optimizer, train_step,
estimate_loss), set_up, then train(): the loop, whose steps evaluate and checkpoint, check whether to
stop, take one optimizer step, and log. Bookkeeping lives in machinery/: settings.py (every flag and the
recipes), budget.py (where the run ends: --max-iters or --time-budget), checkpoint.py (saving, resuming),
guards.py (what stops a run cleanly), distributed.py (processes, signals), progress.py (timings and the
metrics file). Output in --out-dir: best.pt and last.pt, metrics.jsonl and loss.png.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import data
from generate import print_sample
from machinery import checkpoint, distributed, guards, settings
from machinery.budget import Horizon, format_budget, seconds_once_warm, time_decoding
from machinery.device import (
    autocast,
    check_fits_in_memory,
    describe_device,
    grad_scaler,
    pick_device,
    pick_dtype,
)
from machinery.optim import MuonAdamW
from machinery.progress import Clock, MetricsFile, Progress, format_seconds, import_plotting, write_loss_plot
from model import GPT
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
    """AdamW ("adamw"), or Muon for the blocks' matrices and AdamW for the rest ("muon", machinery/optim.py).
    Weight decay applies to matrices (linear and embedding weights) only, not to biases or norms."""
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
    for x, y in data.eval_batches(val_tokens, starts[rank::world], block_size, eval_batch_size(batch_size, device),
                                  device):
        with autocast(device, dtype):
            logits, _ = model(x)
        losses = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                                   ignore_index=-1, reduction="sum")
        total += torch.stack([losses.double(), (y != -1).sum().double()])
    distributed.sum_across(total, world)
    model.train()
    return (total[0] / total[1]).item()


def eval_batch_size(batch_size: int, device: torch.device) -> int:
    """Windows per evaluation batch: the training batch, at least 64 on a GPU (no gradients to hold)."""
    return max(batch_size, 64) if device.type != "cpu" else batch_size


def warm_eval_seconds_per_window(run: Run) -> float:
    """What evaluating one val window costs once the model's first calls are over (one batch, timed warm):
    a timed run that planned its end from its cold first evaluation could stop after its first step."""
    s, corpus = run.settings, run.corpus
    starts = corpus.val_starts[:eval_batch_size(s.batch_size, run.device)]
    return seconds_once_warm(lambda: estimate_loss(run.raw_model, corpus.val_tokens, starts, s.block_size,
                                                   s.batch_size, run.device, run.dtype)) / len(starts)


# ----------------------------------------------------------------------------------------------------
# Setup


@dataclass
class Run:
    """Everything set up for the loop: settings, processes, hardware, data, model, optimizer, state."""

    settings: settings.Settings
    processes: distributed.Processes
    device: torch.device
    dtype: torch.dtype
    corpus: data.Corpus
    raw_model: GPT  # the plain model: what is evaluated and saved
    model: nn.Module | None  # what trains: raw_model, compiled and/or wrapped in DDP
    optimizer: torch.optim.Optimizer  # AdamW, or machinery.optim.MuonAdamW
    scaler: torch.amp.GradScaler
    batch_generator: torch.Generator
    state: checkpoint.RunState
    resumed: bool
    metrics: MetricsFile
    log: guards.Log
    horizon: Horizon  # where the run ends: --max-iters, or --time-budget (machinery/budget.py)

    @property
    def tokens_per_step(self) -> int:
        s = self.settings
        return s.batch_size * s.block_size * s.grad_accum * self.processes.world


def set_up(argv: list[str] | None, processes: distributed.Processes, out_dir_lock: checkpoint.OutDirLock) -> Run:
    """Settings (resolved once, a resumed run's own, on its own corpus: settings.resolve), the previous run, the
    output folder (locked: one run at a time), device, data, model and optimizer. Raises ValueError or
    data.DataError, before anything is written, for any input that cannot work, and guards.NothingToDo."""
    args, given = settings.parse_args(argv), settings.given_flags(argv)
    if args.data:  # a --data path with no file is named before the out dir is checked
        data.find_corpus(args.data)
    out_dir = Path(args.out_dir)
    if processes.is_main:  # before the saved run is read: another run may be writing it
        checkpoint.check_out_dir(out_dir)
    saved = checkpoint.previous_run(out_dir, args.resume, args.overwrite)
    if saved:  # only the model flags on the command line count: a recipe's differ if the run overrode them
        checkpoint.check_resumable(saved, settings.model_flags_given(args, given), out_dir / "last.pt")
    s, config, changes = settings.resolve(args, given, saved, processes.world)
    if processes.is_main and changes:
        print(f"resuming with {'; '.join(changes)}")
    spent = saved.get("budget_spent_s", 0.0) if saved else 0.0  # of the --time-budget; older runs recorded none
    guards.check_not_finished(saved and saved["step"], s.max_iters, out_dir, spent, s.time_budget)
    device = pick_device(s.device)
    if device.type == "cuda" and processes.world > 1:
        device = torch.device("cuda", processes.local_rank)
    dtype = pick_dtype(device, s.dtype)
    with torch.device("meta"):  # the parameter count without allocating the weights
        params = GPT(config).num_params()
    check_fits_in_memory(config, s.batch_size, device, dtype, params)
    corpus = data.load_corpus(s.data, saved and saved["tokenizer"], s.tokenizer, s.vocab_size, config.block_size,
                              s.eval_windows)
    config = replace(config, vocab_size=corpus.tokenizer.vocab_size)
    if processes.is_main:  # only once the settings and the corpus are known to work: a refused run leaves no folder
        checkpoint.prepare_out_dir(out_dir, out_dir_lock)

    torch.manual_seed(s.seed + processes.rank)  # weights are the same on every rank: DDP broadcasts rank 0's
    with torch.device(device):  # built where it runs, so attention "auto" picks that device's kernel
        raw_model = GPT(config)
    optimizer = make_optimizer(raw_model, s.lr, s.weight_decay, s.beta2, device, s.optimizer)
    batch_generator = torch.Generator().manual_seed(s.seed)  # same on every rank; each takes its slice
    state = (checkpoint.restore_training(saved, raw_model, optimizer, batch_generator, processes.rank, s.seed, device)
             if saved else checkpoint.RunState(interval_loss=torch.zeros((), device=device)))
    model = torch.compile(raw_model) if s.compile else raw_model
    if processes.world > 1:
        model = DistributedDataParallel(model, device_ids=[processes.local_rank] if device.type == "cuda" else None)
    metrics = MetricsFile(out_dir / "metrics.jsonl", enabled=processes.is_main)
    metrics.start(state.step if saved else None)  # a resumed run drops the evaluations after its step
    horizon = Horizon(s.max_iters, s.eval_interval, s.time_budget, state.budget_spent_s, processes.world, device)
    if horizon.timed and processes.is_main:
        import_plotting()
    return Run(s, processes, device, dtype, corpus, raw_model, model, optimizer, grad_scaler(device, dtype),
               batch_generator, state, saved is not None, metrics, guards.Log(processes.is_main), horizon)


def describe(run: Run) -> None:
    """Log what is about to train, on what, and from where."""
    s, config, corpus = run.settings, run.raw_model.config, run.corpus
    run.log(f"device {describe_device(run.device)} | precision {str(run.dtype).removeprefix('torch.')} | "
            f"compile {'on' if s.compile else 'off'} | processes {run.processes.world}")
    run.log(f"model {'from checkpoint' if run.resumed else s.preset}: {run.raw_model.num_params():,} parameters "
            f"(norm={config.norm}, mlp={config.mlp}, pos={config.pos}, {config.n_layer} layers, {config.n_embd} wide)")
    run.log(f"data {corpus.name}: {len(corpus.train_tokens):,} train / {len(corpus.val_tokens):,} val tokens "
            f"({corpus.tokenizer.name} tokenizer, vocab {corpus.tokenizer.vocab_size}); {run.tokens_per_step:,} "
            f"tokens per step; val on {len(corpus.val_starts)} fixed windows")
    if s.time_budget:
        left = f", {format_seconds(s.time_budget - run.state.budget_spent_s)} of it left" if run.resumed else ""
        run.log(f"time budget {format_budget(s.time_budget)}{left}, the whole process counted: recipe {s.recipe}, "
                f"{run.raw_model.num_params() / 1e6:.1f}M parameters, batch {s.batch_size}, {s.optimizer} lr {s.lr:g} "
                f"to {s.min_lr:g}, dropout {config.dropout:g} (attention {config.attention_dropout:g}); evaluations "
                f"{'at each tenth' if s.eval_interval is None else f'every {s.eval_interval} steps'}, then best.pt on "
                "the whole val split; any flag overrides these (uv run train.py --help)")
    if run.resumed:
        run.log(f"resuming from {Path(s.out_dir) / 'last.pt'} at step {run.state.step} "
                f"(best val loss {run.state.best_val_loss:.4f})")


# ----------------------------------------------------------------------------------------------------
# The run


def main(argv: list[str] | None = None) -> dict:
    """Train as the flags say; returns a summary (best val loss, steps, time, parameters)."""
    processes = distributed.join()
    with checkpoint.OutDirLock() as out_dir_lock:  # taken by set_up, held until the run ends
        try:
            run = set_up(argv, processes, out_dir_lock)
        except (ValueError, data.DataError) as error:
            raise SystemExit(f"error: {error}") from None
        except guards.NothingToDo as nothing:
            print(f"nothing to do: {nothing}")
            return {}
        try:
            return train(run)
        except guards.TrainingError as error:
            raise SystemExit(f"error: {error}") from None


def train(run: Run) -> dict:
    """The loop: evaluate and checkpoint when due (every --eval-interval steps, or each tenth of the
    --time-budget); stop when it is time; step; log."""
    s, state, processes, corpus, horizon = run.settings, run.state, run.processes, run.corpus, run.horizon
    describe(run)
    clock = Clock(state.step, state.elapsed_s)
    progress = Progress(horizon.total_steps(state.step), enabled=processes.is_main)
    with distributed.StopSignal() as stop_signal:
        while True:
            horizon.update(state.step, clock.seconds_per_step(state.step))  # a timed run reads its clock
            # Evaluate and checkpoint at the start of every interval and at the very end (not again at the
            # step a run resumes from: it was evaluated before it was saved).
            last_step, resumed_here = horizon.is_last(state.step), run.resumed and state.step == clock.start_step
            if (horizon.eval_due(state.step) or last_step) and not resumed_here:
                progress.clear()
                evaluate(run, clock)
            # Termination: every reason to stop, in one place.
            stopped_by = guards.stop_reason(last_step, s.patience, state.evals_without_improvement, stop_signal,
                                            processes.world, run.log, state.step - clock.start_step, s.stop_after_iters)
            if stopped_by:
                break
            # Forward, backward, update: one batch, drawn the same on every rank; each process trains its slices.
            x, y = data.get_batch(corpus.train_tokens, s.batch_size * s.grad_accum * processes.world, s.block_size,
                                  run.batch_generator, run.device)
            lr = get_lr(state.step, s.lr, s.min_lr, s.warmup_iters, horizon.total_steps(state.step))
            loss = train_step(run.model, run.optimizer, run.scaler, x, y, lr, s.grad_accum, s.grad_clip, run.dtype,
                              processes.rank, processes.world)
            # One number per step to the CPU: a NaN is caught at the step it appears (on any rank).
            guards.check_finite_loss(distributed.sum_across(loss.clone(), processes.world).item(), "training",
                                     state.step, s.lr, s.grad_clip, run.dtype)
            # Timing and logging.
            state.interval_loss += loss
            state.step += 1
            state.interval_steps += 1
            clock.step_taken(run.device)
            seconds_per_step = clock.seconds_per_step(state.step)
            progress.total = horizon.total_steps(state.step)
            progress.update(state.step, run.tokens_per_step / seconds_per_step,
                            horizon.seconds_left(state.step, seconds_per_step))
    return finish(run, clock, stopped_by)


def evaluate(run: Run, clock: Clock) -> None:
    """Measure the val loss; log it with the interval's train loss and speed; save last.pt (and best.pt)."""
    s, state, corpus, world = run.settings, run.state, run.corpus, run.processes.world
    interval_seconds = clock.end_interval(run.device)
    state.train_s += interval_seconds
    steps_timed = min(state.interval_steps, state.step - clock.start_step)  # a resumed interval: since the resume
    tokens_per_sec = steps_timed * run.tokens_per_step / interval_seconds if steps_timed else 0.0
    eval_started = time.time()
    val_loss = estimate_loss(run.raw_model, corpus.val_tokens, corpus.val_starts, s.block_size, s.batch_size,
                             run.device, run.dtype, run.processes.rank, world)
    windows = math.ceil(len(corpus.val_starts) / world)
    seconds_per_window = (time.time() - eval_started) / windows
    if run.horizon.timed and not run.horizon.eval_s_per_window:  # this process's first evaluation: it ran cold
        seconds_per_window = warm_eval_seconds_per_window(run)
    run.horizon.note_eval(seconds_per_window, windows)
    if run.horizon.timed and not run.horizon.decode_s_per_token and s.sample_tokens:  # what the sample will cost
        run.horizon.note_decoding(time_decoding(run.raw_model, run.device), s.sample_tokens,
                                  len(data.eval_windows(len(corpus.val_tokens), s.block_size)))
    guards.check_finite_loss(val_loss, "validation", state.step, s.lr, s.grad_clip, run.dtype)
    improved = state.record_eval(val_loss)
    state.elapsed_s, total = clock.elapsed(), run.horizon.total_steps(state.step)
    mean_loss = distributed.mean_across(state.interval_loss, world).item()  # every rank trained its own slices
    train_loss = mean_loss / state.interval_steps if state.interval_steps else None
    record = {"step": state.step, "train_loss": train_loss, "val_loss": val_loss,
              "val_bpc": bits_per_char(val_loss * (len(corpus.val_tokens) - 1), corpus.val_chars_scored),
              "lr": get_lr(min(state.step, total - 1), s.lr, s.min_lr, s.warmup_iters, total),
              "tokens_per_sec": tokens_per_sec, "elapsed_s": state.elapsed_s, "train_s": state.train_s,
              "first_step_s": clock.first_step_s}
    trained = state.step > clock.start_step  # the time left follows this invocation's pace: not before a step
    time_left = run.horizon.seconds_left(state.step, clock.seconds_per_step(state.step))
    run.log(f"step {state.step:5d} | train {'  -   ' if train_loss is None else f'{train_loss:.4f}'} | val "
            f"{val_loss:.4f} ({record['val_bpc']:.3f} bits per char){' *' if improved else '  '} | lr "
            f"{record['lr']:.2e} | {tokens_per_sec:8,.0f} tok/s | {format_seconds(state.elapsed_s)} elapsed"
            f"{f', {format_seconds(time_left)} left' if trained else ''}")
    state.interval_loss, state.interval_steps = torch.zeros((), device=run.device), 0  # saved as a fresh start
    out_dir = Path(s.out_dir)
    with run.metrics.appended(record):  # taken back if the save fails, so a resume logs each step once
        save_started = time.time()
        save(run, *([out_dir / "best.pt"] if improved else []), out_dir / "last.pt")
        run.horizon.note_save((time.time() - save_started) / (2 if improved else 1))
    clock.start_interval()


def evaluate_best_on_whole_split(run: Run) -> float:
    """A timed run's headline figure: best.pt's val loss on every window of the val split (not the sample of
    windows the run evaluated on), logged and written as the last record of metrics.jsonl. Main process only."""
    s, corpus = run.settings, run.corpus
    best = checkpoint.load_model(Path(s.out_dir) / "best.pt", run.device)
    starts = data.eval_windows(len(corpus.val_tokens), s.block_size)
    val_loss = estimate_loss(best, corpus.val_tokens, starts, s.block_size, s.batch_size, run.device, run.dtype)
    spent = run.horizon.spent_now()
    record = {"step": run.state.step, "best_val_loss_whole_split": val_loss, "val_windows": len(starts),
              "val_bpc_whole_split": bits_per_char(val_loss * (len(corpus.val_tokens) - 1), corpus.val_chars_scored),
              "budget_spent_s": spent, "time_budget_s": s.time_budget}
    with run.metrics.appended(record):
        pass
    run.log(f"best.pt on the whole val split ({len(starts)} windows): val {val_loss:.4f} "
            f"({record['val_bpc_whole_split']:.3f} bits per char), {format_seconds(spent)} of the "
            f"{format_budget(s.time_budget)} budget spent")
    return val_loss


def save(run: Run, *paths: Path) -> None:
    """Write the run's checkpoint to each path. Every rank must call this: all their random states go in."""
    run.state.budget_spent_s = run.horizon.spent_to_save()
    ranks = distributed.gather(checkpoint.rng_state(run.device), run.processes.world)
    if run.processes.is_main:
        rng = {"batches": run.batch_generator.get_state(), "ranks": ranks}
        state = checkpoint.make_checkpoint(run.raw_model, run.corpus.tokenizer, run.state, run.optimizer, rng,
                                           asdict(run.settings), run.corpus.record)
        for path in paths:
            try:
                checkpoint.save_checkpoint(state, path)
            except (OSError, RuntimeError) as error:  # torch.save reports a full disk as a RuntimeError
                raise guards.write_error(error, path, run.state.step, Path(run.settings.out_dir)) from None


def finish(run: Run, clock: Clock, stopped_by: str) -> dict:
    """Save an interrupted run, plot the curves, print a sample, leave the process group; return a summary."""
    s, state, out_dir = run.settings, run.state, Path(run.settings.out_dir)
    interrupted = stopped_by not in (guards.FINISHED, guards.EARLY_STOP)
    if stopped_by == guards.EARLY_STOP:
        run.log(f"early stop: val loss has not improved for {s.patience} evaluations")
    if interrupted:
        distributed.mean_across(state.interval_loss, run.processes.world)  # each rank's own slices: save the mean
        state.elapsed_s = clock.elapsed()
        save(run, out_dir / "last.pt")
        run.log(f"stopped at step {state.step} ({stopped_by}); {out_dir / 'last.pt'} saved: "
                f"uv run train.py --resume --out-dir {out_dir} continues the run")
    whole_split = None
    if s.time_budget and not interrupted and run.processes.is_main:
        whole_split = evaluate_best_on_whole_split(run)
    outputs = ["best.pt", "last.pt", "metrics.jsonl"]
    if run.processes.is_main and write_loss_plot(out_dir):
        outputs.append("loss.png")
    seconds, steps_here = time.time() - clock.started, state.step - clock.start_step
    run.log(f"done: best val loss {state.best_val_loss:.4f} after {steps_here} step{'s' if steps_here != 1 else ''} "
            f"in {format_seconds(seconds)}{f' (the run is at step {state.step})' if run.resumed else ''}; "
            f"{', '.join(outputs[:-1])} and {outputs[-1]} in {out_dir}/")
    if run.processes.is_main and s.sample_tokens and not interrupted and not run.log.closed:
        print_sample(out_dir / "best.pt", run.device, s.sample_tokens)
    run.model = None  # the DDP wrapper must be freed before the process group is left (distributed.leave)
    distributed.leave(run.processes.world)
    guards.exit_code_for(stopped_by)
    return {"best_val_loss": state.best_val_loss, "steps": state.step, "train_seconds": seconds,
            "params": run.raw_model.num_params(), "device": describe_device(run.device),
            "tokens_per_step": run.tokens_per_step, "best_val_loss_whole_split": whole_split}


if __name__ == "__main__":
    main(sys.argv[1:])
