"""The ladder's claims, checked: the counted baselines are what counting by hand gives, the bigram network
learns the counted bigram, the ladder records exactly what train.py wrote and fills the chapters with it,
the committed results are complete with every rung flattened, and the chapters of docs/learn/ cite no
figure that is not in the results.
"""

import math
from collections import Counter

import numpy as np
import pytest
import torch

import train
from experiments import common, ladder

LEARN = common.ROOT / "docs" / "learn"
COMMITTED = common.RESULTS_DIR / "ladder.json"


def test_counted_baselines_equal_counting_by_hand():
    train_ids = np.array([0, 1, 2, 0, 1, 0, 3, 1, 2, 2, 0])
    val_ids = np.array([1, 2, 0, 3, 3, 1])
    vocab = 5  # token 4 never occurs: smoothing still gives it a probability
    probs = ladder.count_baselines(train_ids, val_ids, vocab)
    unigram = Counter(train_ids.tolist())
    pairs = Counter(zip(train_ids[:-1].tolist(), train_ids[1:].tolist(), strict=True))
    after = Counter(train_ids[:-1].tolist())
    val_pairs = list(zip(val_ids[:-1].tolist(), val_ids[1:].tolist(), strict=True))
    by_hand = {
        "uniform": math.log(vocab),
        "unigram": -sum(math.log((unigram[b] + 1) / (len(train_ids) + vocab)) for _, b in val_pairs) / len(val_pairs),
        "bigram": -sum(math.log((pairs[a, b] + 1) / (after[a] + vocab)) for a, b in val_pairs) / len(val_pairs),
    }
    for name, expected in by_hand.items():
        assert ladder.counted_val_loss(name, probs[name], val_ids) == pytest.approx(expected, rel=1e-12)
    assert probs["bigram"].sum(axis=1) == pytest.approx(np.ones(vocab))


@pytest.fixture
def one_thread():
    """Models this small train fastest on one thread, as the ladder runs them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bigram_network_lands_on_the_counted_bigram(tmp_path, corpus_path, one_thread):
    """The ladder's own bigram rung, trained by train.py with the ladder's CPU schedule (one seed, seconds at
    this size), reaches the counted bigram's val loss within the stated tolerance."""
    bigram = ladder.RUNGS[0]
    assert bigram.name == "bigram" and bigram.config["n_layer"] == 0
    argv = [*ladder.rung_flags(bigram, "cpu"), *common.to_flags(ladder.CPU_SCHEDULE), "--device", "cpu", "--data",
            str(corpus_path), "--out-dir", str(tmp_path), "--sample-tokens", "0"]
    summary = train.main(argv)
    counted = ladder.counted_results(str(corpus_path))
    counted_bigram = next(entry["val_loss"] for entry in counted if entry["name"] == "bigram")
    assert abs(summary["best_val_loss"] - counted_bigram) <= ladder.BIGRAM_TOLERANCE
