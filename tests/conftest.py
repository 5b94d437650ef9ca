"""Shared test fixtures: the real corpus, found the way the scripts find it, one CPU thread, and small
trained checkpoints with the inspector server that serves them.

`uv run pytest` runs the whole suite (what CI runs). `uv run pytest -m "not slow"` runs the fast spec:
everything but the tests marked slow (DDP through torchrun, command lines run as processes, the
experiment pipelines and the longer training runs).
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import data
import train

ROOT = Path(__file__).resolve().parents[1]
SHARED_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    """Tiny Shakespeare: $TINYGPT_DATA, data/tinyshakespeare.txt, a shared copy beside the checkout,
    or a download (data.find_corpus). Tests that need real text fail loudly when none can be had."""
    if SHARED_COPY.exists() and not data.DEFAULT_CORPUS.exists():
        return SHARED_COPY
    try:
        return data.find_corpus()
    except data.DataError as error:
        pytest.fail(f"these tests need Tiny Shakespeare: {error}")


@pytest.fixture(scope="session")
def corpus_text(corpus_path: Path) -> str:
    return data.read_text(corpus_path)


@pytest.fixture(autouse=True, scope="session")
def one_cpu_thread():
    """The test models are too small to gain from a second thread, and on a busy machine the threads of
    each small op wait for one another (100x slower measured on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def compile_cache_of_this_session(tmp_path_factory):
    """torch.compile's cache, and the decode steps generate.py compiles, in a folder of this test session
    (processes the tests start inherit it), never the user's ~/.cache/tinygpt/compiled."""
    previous = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("compiled"))
    yield
    if previous is None:
        del os.environ["TORCHINDUCTOR_CACHE_DIR"]
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = previous


# ----------------------------------------------------------------------------------------------------
# The inspector: small trained checkpoints, and inspect_model.py running as a real server process

# Switches of the two checkpoints the inspector tests compare side by side.
INSPECTED_SWITCHES = {
    "modern": ["--norm", "rmsnorm", "--mlp", "swiglu", "--pos", "rope", "--no-bias"],
    "vanilla": ["--norm", "layernorm", "--mlp", "relu", "--pos", "learned", "--bias"],
}


@pytest.fixture(scope="session")
def small_checkpoints(corpus_path: Path, tmp_path_factory) -> list[Path]:
    """Two checkpoints (modern and vanilla switches, 2 layers x 2 heads, 32 wide, context 64) trained
    for 100 steps by train.py's command line, with AdamW: a few seconds each on one core. (The inspector's
    tests look for attention that has moved well away from uniform, which AdamW's 100 steps give.)"""
    paths = []
    for name, switches in INSPECTED_SWITCHES.items():
        out_dir = tmp_path_factory.mktemp(f"inspect-{name}")
        train.main(["--data", str(corpus_path), "--out-dir", str(out_dir), "--device", "cpu", "--dtype", "float32",
                    "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "64", "--dropout", "0",
                    "--batch-size", "16", "--max-iters", "100", "--warmup-iters", "10", "--lr", "1e-2",
                    "--optimizer", "adamw", "--eval-interval", "100", "--eval-windows", "4", "--sample-tokens", "0",
                    *switches])
        paths.append(out_dir / "best.pt")
    return paths


@dataclass
class InspectorServer:
    url: str  # ends with "/"
    process: subprocess.Popen


@pytest.fixture(scope="session")
def start_inspector():
    """start_inspector(checkpoint paths) runs `python inspect_model.py --ckpt ... --port 0` and returns
    the URL it prints once it serves; every server started is stopped at the end of the session."""
    started = []

    def start(checkpoints: list[Path]) -> InspectorServer:
        argv = [sys.executable, "inspect_model.py", "--port", "0", "--device", "cpu"]
        for path in checkpoints:
            argv += ["--ckpt", str(path)]
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
        started.append(process)
        line = process.stdout.readline()  # printed once the port is bound
        match = re.search(r"http://\S+/", line)
        if not match:
            pytest.fail(f"inspect_model.py did not start (exit code {process.poll()}): {line!r}")
        return InspectorServer(match.group(0), process)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def inspector(start_inspector, small_checkpoints: list[Path]) -> InspectorServer:
    """The inspector serving the two small checkpoints: model 0 modern, model 1 vanilla."""
    return start_inspector(small_checkpoints)
