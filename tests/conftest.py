"""Shared test fixtures: the real corpus, found the way the scripts find it, and one CPU thread.

`uv run pytest` runs the whole suite (what CI runs). `uv run pytest -m "not slow"` runs the fast spec:
everything but the tests marked slow (DDP through torchrun, command lines run as processes, the
experiment pipelines and the longer training runs).
"""

from pathlib import Path

import pytest
import torch

import data

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
