"""
Checkpoints: what a file holds, writing it so a crash never leaves half of one, reading it safely, and
putting a training run back exactly where it stopped.

A checkpoint is a plain dict of tensors and containers (so torch.load(weights_only=True) reads it):

    model, config, tokenizer       the weights, asdict(GPTConfig) and the tokenizer's state: all that
                                   generation needs (make_checkpoint(model, tokenizer))
    optimizer, rng, args           from a training run: the optimizer's state, the batch sampler's and every
                                   process's dropout random state, and the run's settings
    step, best_val_loss, ...       the fields of RunState: where the run stands

    corpus                         the text the run trained on (data.corpus_record), which --resume
                                   checks before it trains on that file again (machinery/corpus_check.py)

train.py writes best.pt and last.pt with make_checkpoint and save_checkpoint; `--resume` reads last.pt
with load_checkpoint, refuses it if the flags ask for another model (check_resumable), and continues
with restore_training. A resumed run on the CPU equals an uninterrupted one bit for bit. One run at a
time writes into a folder: it holds OutDirLock from prepare_out_dir to its end.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from machinery.files import atomic_file
from model import GPT, GPTConfig

if TYPE_CHECKING:
    from tokenizer import Tokenizer


@dataclass
class RunState:
    """Where a training run stands: what the loop updates and a checkpoint carries across a resume."""

    step: int = 0  # optimizer steps taken
    best_val_loss: float = float("inf")
    evals_without_improvement: int = 0  # for --patience
    elapsed_s: float = 0.0  # wall time since the run began, across resumes (as of the last save)
    train_s: float = 0.0  # the part of it spent in training steps
    budget_spent_s: float = 0.0  # the whole processes' time, start-up included, for --time-budget (machinery/budget.py)
    # Train loss summed over the steps since the last evaluation, so a run stopped between two
    # evaluations still logs the mean of the whole interval after it resumes.
    interval_loss: torch.Tensor | float = 0.0
    interval_steps: int = 0

    def record_eval(self, val_loss: float) -> bool:
        """Count one evaluation; return whether it is the best so far."""
        improved = val_loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val_loss)
        self.evals_without_improvement = 0 if improved else self.evals_without_improvement + 1
        return improved

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, device: torch.device) -> RunState:
        state = cls(**{field.name: checkpoint[field.name] for field in fields(cls) if field.name in checkpoint})
        state.interval_loss = state.interval_loss.to(device)
        return state


def make_checkpoint(model: GPT, tokenizer: Tokenizer | None, state: RunState | None = None,
                    optimizer: torch.optim.Optimizer | None = None, rng: dict | None = None,
                    settings: dict | None = None, corpus: dict | None = None) -> dict:
    """The dict a checkpoint file holds: the model's config and weights and its tokenizer (train.py always
    saves one; without it the ids cannot become text), and, from a training run, the optimizer, random
    states (see rng_state), settings and corpus record, and the RunState's fields."""
    checkpoint = {"model": model.state_dict(), "config": asdict(model.config)}
    if tokenizer is not None:
        checkpoint["tokenizer"] = tokenizer.state_dict()
    if state is not None:
        checkpoint |= {"optimizer": optimizer.state_dict(), "rng": rng, "args": settings, "corpus": corpus,
                       **asdict(state)}
    return checkpoint


def check_finite_weights(weights: dict[str, torch.Tensor], source: str | Path) -> None:
    """Raise ValueError if a weight is NaN or infinite: such a model only ever predicts NaN. Every
    checkpoint is checked when it is written and when it is read (train.py, generate.py, export.py)."""
    broken = [name for name, tensor in weights.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if broken:
        raise ValueError(f"{source} has NaN or infinite weights ({len(broken)} tensors, e.g. {broken[0]}): the run "
                         "that wrote them diverged; use an earlier checkpoint or retrain with a lower --lr")


def save_checkpoint(checkpoint: dict, path: Path) -> None:
    """Write a checkpoint atomically (data.atomic_file): a crash mid-write leaves the previous file intact
    and no temporary file behind. Non-finite weights are refused, never written. The file is readable like
    any file the user makes (0666 less the umask)."""
    check_finite_weights(checkpoint["model"], f"the checkpoint for {path}")
    with atomic_file(path) as file:
        torch.save(checkpoint, file)


LOCK_FILE = "run.lock"


class OutDirLock:
    """What makes a training run the only one writing into its --out-dir: an exclusive lock (lock_exclusively) on
    out_dir/run.lock, held on an open file for the run's whole life. The operating system drops it when the
    process ends, however it ends (kill -9, a crash; a power loss leaves no process), so no lock is ever
    stale. The file holds the holder's pid, to name it to a run that is refused. Under torchrun the main
    process holds it. Used as a context manager, it is released at the end of the block."""

    def __init__(self) -> None:
        self.file = None

    def __enter__(self) -> OutDirLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def acquire(self, out_dir: Path) -> None:
        """Take the lock on out_dir (which must exist), or raise ValueError naming the run that holds it."""
        file = open(out_dir / LOCK_FILE, "a+")  # "a+": never truncate what the holder wrote
        try_lock(file, out_dir)
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        self.file = file

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the file drops the lock
            self.file = None


def lock_exclusively(file) -> bool:
    """Lock the open file for this process without waiting; False if another process holds the lock. An
    fcntl.flock where there is one (Linux, macOS); on Windows, msvcrt's lock on the file's first byte, which
    the system also drops when the process ends."""
    try:
        import fcntl
    except ImportError:
        import msvcrt

        file.seek(0)
        try:
            msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def try_lock(file, out_dir: Path) -> None:
    """Lock file exclusively without waiting. If another process holds it, close file and raise ValueError
    with that process's pid."""
    if not lock_exclusively(file):
        try:
            file.seek(0)
            pid = file.read().strip() or "unknown"
        except OSError:  # on Windows the holder's locked byte cannot be read
            pid = "unknown"
        file.close()
        raise ValueError(f"--out-dir {out_dir} is in use by another training run (process {pid}, which holds "
                         f"{out_dir / LOCK_FILE}); wait for it to end or stop it, or choose another --out-dir"
                         ) from None


def check_out_dir(out_dir: Path) -> None:
    """Raise ValueError if another run holds out_dir's lock now (naming its process), or if out_dir cannot be
    created or written. Takes nothing and creates nothing: a run refused later (for its corpus, say) leaves
    no folder behind; prepare_out_dir takes the lock once everything is checked."""
    if (out_dir / LOCK_FILE).is_file():  # checked before the saved run is read: refused whatever the flags
        with open(out_dir / LOCK_FILE) as file:
            try_lock(file, out_dir)  # and released again when the file closes
    existing = next(folder for folder in [out_dir, *out_dir.parents] if folder.exists() or folder == folder.parent)
    if not existing.is_dir():
        reason = "it is a file" if existing == out_dir else f"{existing} is a file"
    elif existing == out_dir:
        try:
            with tempfile.TemporaryFile(dir=out_dir):
                return
        except OSError as error:
            reason = error.strerror or str(error)
    elif os.access(existing, os.W_OK | os.X_OK):
        return
    else:
        reason = f"{existing} is not writable"
    raise ValueError(f"cannot write to --out-dir {out_dir} ({reason}); choose a folder you can write to")


def prepare_out_dir(out_dir: Path, lock: OutDirLock) -> None:
    """Create out_dir if need be and take its lock (raising ValueError if it cannot be written or another run
    holds it); then remove the temporary files of a save that was killed (their names are save_checkpoint's).
    Only with the lock held: it proves no other run is writing there, so no .tmp file is another run's save
    in progress."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock.acquire(out_dir)
    except OSError as error:
        raise ValueError(f"cannot write to --out-dir {out_dir} ({error.strerror or error}); "
                         "choose a folder you can write to") from None
    for stale in out_dir.glob(".*.pt.*.tmp"):
        stale.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read a tinygpt checkpoint safely (weights_only); clear errors for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train one first (uv run train.py) or pass --ckpt PATH")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                         "it may be truncated or corrupt: retrain or use another file") from error
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"{path} is not a tinygpt checkpoint (no model weights and config inside)")
    check_finite_weights(checkpoint["model"], path)
    join_swiglu_matrices(checkpoint)
    return checkpoint


def load_model(source: str | Path | dict, device: str | torch.device = "cpu") -> GPT:
    """Rebuild a model from a checkpoint alone (its config and weights), in eval mode, on device. source is a
    file, or a checkpoint already read by load_checkpoint (to read a file once for several uses). The model is
    built on the device itself, so its attention "auto" picks the kernel for that device (model.py)."""
    checkpoint = source if isinstance(source, dict) else load_checkpoint(source, device)
    try:
        with torch.device(device):
            model = GPT(GPTConfig(**checkpoint["config"]))
        model.load_state_dict(checkpoint["model"])
    except (TypeError, RuntimeError) as error:  # a config field or weights this model.py does not have
        raise ValueError(f"the checkpoint does not match this version of model.py: {error}") from error
    return model.eval()


def join_swiglu_matrices(checkpoint: dict) -> None:
    """Checkpoints written before SwiGLU's two input matrices became one (model.SwiGLU.w_gate_up) hold
    mlp.w_gate and mlp.w_up: join them, so the model loads. Their optimizer state lists the two apart and
    fits no model now, so such a run can be generated from and exported, but not resumed."""
    state = checkpoint["model"]
    for gate in [name for name in state if ".mlp.w_gate." in name]:
        up = gate.replace(".w_gate.", ".w_up.")
        state[gate.replace(".w_gate.", ".w_gate_up.")] = torch.cat([state.pop(gate), state.pop(up)])
        checkpoint["not_resumable"] = ("it was saved by an older version, whose optimizer state keeps SwiGLU's "
                                       "w_gate and w_up apart")


def previous_run(out_dir: Path, resume: bool, overwrite: bool) -> dict | None:
    """The checkpoint to resume, or None for a new run; refuses to overwrite a run by accident."""
    last_path = out_dir / "last.pt"
    if resume:
        try:
            return load_checkpoint(last_path)
        except FileNotFoundError:
            raise ValueError(f"--resume found no checkpoint at {last_path}; train without --resume first, "
                             "or point --out-dir at the run to continue") from None
    if (last_path.exists() or (out_dir / "best.pt").exists()) and not overwrite:
        raise ValueError(f"{out_dir}/ already holds a trained run; pass --resume to continue it, "
                         "--out-dir DIR for a new one, or --overwrite to replace it")
    return None


def check_resumable(checkpoint: dict, asked: dict, path: Path) -> None:
    """Raise ValueError if the checkpoint lacks a training run's state (the optimizer, random states and
    settings a resume continues), or if the config fields the flags ask for ({field: value}) differ from
    the saved model's."""
    if "not_resumable" in checkpoint:
        raise ValueError(f"--resume cannot continue {path}: {checkpoint['not_resumable']}; start a new run with "
                         "--out-dir DIR")
    missing = [key for key in ("optimizer", "rng", "args", "step") if key not in checkpoint]
    if missing:
        raise ValueError(f"{path} holds a model but not the state of its training run ({', '.join(missing)} "
                         "missing), so --resume cannot continue it; start a new run with --out-dir DIR")
    saved = checkpoint["config"]
    for name, value in asked.items():
        if value != saved[name]:
            raise ValueError(f"{path} holds a model with {name}={saved[name]!r} but --{name.replace('_', '-')} "
                             f"asks for {value!r}; drop the flag to resume it, or use another --out-dir for a new run")


def rng_state(device: torch.device) -> dict:
    """This process's dropout random state (on a GPU, dropout draws from the GPU's generator)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def restore_rng_state(saved: list[dict], rank: int, step: int, seed: int, device: torch.device) -> None:
    """Continue this rank's dropout random stream from the saved states (one per rank). A rank the saving
    run did not have (resumed on more processes) starts a fresh stream, seeded from seed, rank and step."""
    if rank >= len(saved):
        torch.manual_seed(seed + rank + 1_000_003 * step)
        return
    torch.set_rng_state(saved[rank]["torch"])
    if device.type == "cuda" and saved[rank]["cuda"] is not None:
        torch.cuda.set_rng_state(saved[rank]["cuda"].cpu(), device)


def restore_training(checkpoint: dict, model: GPT, optimizer: torch.optim.Optimizer,
                     batch_generator: torch.Generator, rank: int, seed: int, device: torch.device) -> RunState:
    """Put the weights, the optimizer and every random stream back as the checkpoint saved them; return
    where the run stands."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    batch_generator.set_state(checkpoint["rng"]["batches"])
    state = RunState.from_checkpoint(checkpoint, device)
    restore_rng_state(checkpoint["rng"]["ranks"], rank, state.step, seed, device)
    return state
