"""Shared test fixtures: the real corpus, found the way the scripts find it."""

from pathlib import Path

import pytest

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
