"""
Exercise 1: counting, the floor any network must beat.

Read first: [chapter 1, counting](../../docs/learn/01-counting.md). Check with `uv run workshop.py check 1`.

Write the three counted models of the training text (uniform, unigram, bigram), add-one smoothed, their
cross-entropy on the val split in nats, and the conversion of a summed loss to bits per character.
"""

import numpy as np


def count_baselines(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> dict[str, np.ndarray]:
    """The next-token probabilities of three counted models, each row summing to 1:

        "uniform"  (vocab_size,)              p(b)     = 1 / vocab_size
        "unigram"  (vocab_size,)              p(b)     = (count(b) + 1) / (N + vocab_size)
        "bigram"   (vocab_size, vocab_size)   p(b | a) = (count(a, b) + 1) / (count(a, ·) + vocab_size)

    train_ids, val_ids: 1-D integer arrays of token ids (val_ids is not counted). Row a of "bigram" is the
    distribution of the token after a; count(a, ·) counts the pairs of train_ids that start with a. The + 1
    (add-one smoothing) gives a pair never seen in training a probability above 0. Returns float64 arrays.
    """
    raise NotImplementedError("count the tokens and the pairs, add one to every count, and divide by the totals")


def counted_val_loss(name: str, probs: np.ndarray, val_ids: np.ndarray) -> float:
    """The mean cross-entropy, in nats, of val_ids under one counted model: the mean of -ln p(next token)
    over every val token but the first (the first has no token before it).

    name is "uniform", "unigram" or "bigram"; probs is that model's array from count_baselines. For the
    bigram, p(val_ids[i] | val_ids[i-1]) is probs[val_ids[i-1], val_ids[i]].
    """
    raise NotImplementedError("pick each target's probability, take -ln, and average")


def bits_per_char(total_nats: float, num_chars: int) -> float:
    """A summed cross-entropy over a text (nats) as bits per character: total_nats / num_chars / ln 2."""
    raise NotImplementedError("divide by the number of characters and by ln 2")
