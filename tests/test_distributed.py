"""Data parallel training through torchrun: two processes on the CPU (gloo) must follow the same loss
trajectory as one process with the same global batch, checkpoints move freely between the two, a resumed
run continues every rank's dropout stream, a signal that reaches one rank stops them all together, and
leaving the group stops its threads before the interpreter exits."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # every test runs train.py under torchrun

ROOT = Path(__file__).resolve().parents[1]
# A model small enough that a few steps take seconds; dropout 0, float32 (a CPU with native bf16 would
# pick bf16, whose rounding differs between batch shapes) and AdamW (Muon orthogonalises in bf16) so both
# runs compute the same thing.
TINY = ["--device", "cpu", "--dtype", "float32", "--optimizer", "adamw", "--preset", "small", "--n-layer", "1",
        "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--dropout", "0", "--eval-windows", "8",
        "--eval-interval", "3", "--sample-tokens", "0", "--lr", "3e-3", "--warmup-iters", "2"]


def train_command(args: list[str], processes: int) -> list[str]:
    """train.py in one process, or under torchrun with several."""
    if processes == 1:
        return [sys.executable, "train.py", *TINY, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "train.py", *TINY, *args]


def train_env(corpus: Path) -> dict:
    return {**os.environ, "TINYGPT_DATA": str(corpus), "OMP_NUM_THREADS": "1"}


def run_train(args: list[str], processes: int, corpus: Path) -> None:
    result = subprocess.run(train_command(args, processes), cwd=ROOT, env=train_env(corpus), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def losses(out_dir: Path) -> list[tuple[int, float | None, float]]:
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train_loss"], r["val_loss"]) for r in records]


def assert_same_losses(a: Path, b: Path) -> None:
    for (step_a, train_a, val_a), (step_b, train_b, val_b) in zip(losses(a), losses(b), strict=True):
        assert step_a == step_b
        assert val_a == pytest.approx(val_b, abs=1e-4)
        assert (train_a is None) == (train_b is None)
        if train_a is not None:
            assert train_a == pytest.approx(train_b, abs=1e-4)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, corpus_path):
    run_train(["--batch-size", "8", "--max-iters", "6", "--out-dir", str(tmp_path / "one")], 1, corpus_path)
    run_train(["--batch-size", "4", "--max-iters", "6", "--out-dir", str(tmp_path / "two")], 2, corpus_path)
    assert_same_losses(tmp_path / "one", tmp_path / "two")
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)["model"]
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["model"]
    assert one.keys() == two.keys()  # saved from the unwrapped model: no "module." prefixes
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5), name


def test_checkpoints_move_between_ddp_and_single_process(tmp_path, corpus_path):
    # The global batch stays 8: 4 per process under DDP, 8 in one process.
    # Saved under DDP, resumed in one process ...
    run_train(["--batch-size", "4", "--max-iters", "6", "--stop-after-iters", "3",
               "--out-dir", str(tmp_path / "a")], 2, corpus_path)
    run_train(["--batch-size", "8", "--max-iters", "6", "--resume", "--out-dir", str(tmp_path / "a")], 1, corpus_path)
    # ... and saved in one process, resumed under DDP.
    run_train(["--batch-size", "8", "--max-iters", "6", "--stop-after-iters", "3",
               "--out-dir", str(tmp_path / "b")], 1, corpus_path)
    run_train(["--batch-size", "4", "--max-iters", "6", "--resume", "--out-dir", str(tmp_path / "b")], 2, corpus_path)
    # Both equal the uninterrupted single-process run.
    run_train(["--batch-size", "8", "--max-iters", "6", "--out-dir", str(tmp_path / "ref")], 1, corpus_path)
    for resumed in ("a", "b"):
        final = losses(tmp_path / resumed)[-1]
        reference = losses(tmp_path / "ref")[-1]
        assert final[0] == reference[0] == 6
        assert final[2] == pytest.approx(reference[2], abs=1e-4)


def test_resume_under_ddp_continues_every_ranks_dropout_stream(tmp_path, corpus_path):
    # With dropout on, each rank draws its own masks; a resumed run must go on drawing the same ones.
    dropout = ["--dropout", "0.2", "--batch-size", "4", "--max-iters", "6"]
    run_train([*dropout, "--out-dir", str(tmp_path / "whole")], 2, corpus_path)
    run_train([*dropout, "--stop-after-iters", "4", "--out-dir", str(tmp_path / "split")], 2, corpus_path)
    assert len(torch.load(tmp_path / "split" / "last.pt", weights_only=True)["rng"]["ranks"]) == 2
    run_train([*dropout, "--resume", "--out-dir", str(tmp_path / "split")], 2, corpus_path)
    split, whole = losses(tmp_path / "split"), losses(tmp_path / "whole")
    assert [val for _, _, val in split] == [val for _, _, val in whole]  # the same weights: the same masks
    # The train loss to float32 rounding: a stop saves the ranks' mean of the interval's summed loss, so the
    # resumed run adds the same losses in another order. Other masks would differ by about 1e-2.
    for (step, train, _), (step_whole, train_whole, _) in zip(split, whole, strict=True):
        assert step == step_whole and train == (None if train_whole is None else pytest.approx(train_whole, rel=1e-6))


def worker_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of torchrun's worker process with this rank, found through Linux's /proc."""
    for process in Path("/proc").iterdir():
        try:
            parent = int((process / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (process / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher_pid and f"RANK={rank}".encode() in environment:
            return int(process.name)
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker processes through /proc")
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, corpus_path):
    # SIGTERM reaches rank 1 only: rank 0 must stop with it, save, and both exit (not hang).
    launcher = subprocess.Popen(train_command(["--batch-size", "4", "--max-iters", "100000", "--eval-interval",
                                               "1000", "--out-dir", str(tmp_path)], 2),
                                cwd=ROOT, env=train_env(corpus_path), text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not ((tmp_path / "metrics.jsonl").exists() and (tmp_path / "metrics.jsonl").read_text().strip()):
            assert launcher.poll() is None and time.monotonic() < deadline, "training never reached its first eval"
            time.sleep(0.1)
        rank_1 = worker_pid(launcher.pid, rank=1)
        assert rank_1, "no worker process with RANK=1 under torchrun"
        os.kill(rank_1, signal.SIGTERM)
        stdout, stderr = launcher.communicate(timeout=120)
    finally:  # a failed test must not leave a 100,000-step run behind
        if launcher.poll() is None:
            launcher.kill()
    # Each rank exits 143 (128 + SIGTERM), as a single process does, so torchrun reports a stopped job.
    assert launcher.returncode != 0 and "exitcode: 143" in stderr, stderr
    stopped = re.search(r"stopped at step (\d+) \(SIGTERM\)", stdout)
    assert stopped, stdout + stderr
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == int(stopped.group(1))


LEAVE = """
import os, sys, torch
from torch.nn.parallel import DistributedDataParallel
from machinery import distributed
processes = distributed.join()
model = DistributedDataParallel(torch.nn.Linear(4, 4))
model(torch.ones(2, 4)).sum().backward()
model = None
distributed.leave(processes.world)
threads = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
open(f"{sys.argv[1]}/rank{processes.rank}.txt", "w").write(" ".join(sorted(threads)))
"""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process's threads from Linux's /proc")
def test_leaving_the_group_stops_its_threads_while_python_runs(tmp_path):
    # A group still alive at interpreter exit is freed while Python shuts down, where a gloo thread releasing
    # its last work can abort the process. After leave() only the main thread may be left, on every rank.
    script = tmp_path / "leave.py"
    script.write_text(LEAVE)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    for rank in (0, 1):
        threads = (tmp_path / f"rank{rank}.txt").read_text().split()
        assert not [name for name in threads if "gloo" in name], f"rank {rank}'s threads after leave(): {threads}"
