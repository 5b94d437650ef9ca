"""Data parallel training through torchrun: two processes on the CPU (gloo) must follow the same loss
trajectory as one process with the same global batch, and checkpoints move freely between the two."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# A model small enough that a few steps take seconds; dropout 0 so both runs compute the same thing.
TINY = ["--device", "cpu", "--preset", "small", "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
        "--block-size", "32", "--dropout", "0", "--eval-windows", "8", "--eval-interval", "3",
        "--sample-tokens", "0", "--lr", "3e-3", "--warmup-iters", "2"]


def run_train(args: list[str], processes: int, corpus: Path) -> None:
    """Run train.py in one process, or under torchrun with several."""
    env = {**os.environ, "TINYGPT_DATA": str(corpus), "OMP_NUM_THREADS": "1"}
    if processes == 1:
        command = [sys.executable, "train.py"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={processes}", "train.py"]
    result = subprocess.run(command + TINY + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
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
