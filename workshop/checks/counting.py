"""Exercise 1's check: the counted baselines against experiments/ladder.py's count_baselines and
counted_val_loss, and bits per character against tokenizer.py's bits_per_char."""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np
import torch

from experiments.ladder import count_baselines, counted_val_loss
from tokenizer import bits_per_char
from workshop.checks.common import mistakes_for, recognise, replaces
from workshop.tutor import Failure, Mistake, call, compare, diagnose, require

VOCAB = 7  # token 6 never occurs in the training ids: only smoothing gives it a probability
MODELS = ("uniform", "unigram", "bigram")


def ids(length: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB - 1, length)


def tables(result) -> tuple[torch.Tensor, ...]:
    """The three arrays of count_baselines' dict as float64 tensors, in the order of MODELS."""
    return tuple(torch.as_tensor(np.asarray(result[name], dtype=np.float64)) for name in MODELS)


@replaces("count_baselines")
def not_smoothed(train_ids, val_ids, vocab_size):
    unigram = np.bincount(train_ids, minlength=vocab_size).astype(float)
    pairs = np.zeros((vocab_size, vocab_size))
    np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
    rows = pairs.sum(axis=1, keepdims=True)
    return {"uniform": np.full(vocab_size, 1.0 / vocab_size), "unigram": unigram / unigram.sum(),
            "bigram": np.divide(pairs, rows, out=np.zeros_like(pairs), where=rows > 0)}


@replaces("count_baselines")
def normalised_over_columns(train_ids, val_ids, vocab_size):
    right = count_baselines(train_ids, val_ids, vocab_size)
    pairs = np.zeros((vocab_size, vocab_size))
    np.add.at(pairs, (train_ids[:-1], train_ids[1:]), 1.0)
    pairs += 1.0
    return {**right, "bigram": pairs / pairs.sum(axis=0, keepdims=True)}


@replaces("counted_val_loss")
def table_read_backwards(name, probs, val_ids):
    if name != "bigram":
        return counted_val_loss(name, probs, val_ids)
    return float(-np.log(probs[val_ids[1:], val_ids[:-1]]).mean())


@replaces("bits_per_char")
def multiplied_by_ln2(total_nats, num_chars):
    return total_nats / num_chars * math.log(2)


MISTAKES = (
    Mistake("count without add-one smoothing",
            "a pair never seen in training gets probability 0, and -ln 0 is infinite: add 1 to every count "
            "(and vocab_size to every total) before dividing", not_smoothed,
            "Jurafsky & Martin, Speech and Language Processing, ch. 3 (Laplace smoothing)"),
    Mistake("normalise the bigram table over its columns instead of its rows",
            "row a is the distribution of the token after a, so each row must sum to 1: divide by the row's "
            "total (sum over axis 1), not the column's", normalised_over_columns),
    Mistake("read the table as probs[next, previous]",
            "the bigram's p(b | a) is probs[a, b]: the previous token picks the row, the target the column",
            table_read_backwards),
    Mistake("multiply by ln 2 instead of dividing by it",
            "bits = nats / ln 2 (one bit is ln 2 nats), so bits are the larger number", multiplied_by_ln2),
)


def check(module: ModuleType) -> None:
    """count_baselines, counted_val_loss and bits_per_char agree with the ladder's and the tokenizer's."""
    count = require(module, "count_baselines", signature="(train_ids, val_ids, vocab_size)")
    score = require(module, "counted_val_loss", signature="(name, probs, val_ids)")
    to_bits = require(module, "bits_per_char", signature="(total_nats, num_chars)")
    train_ids, val_ids = ids(300, seed=1), ids(80, seed=2)
    train_ids[train_ids == 5] = 4  # token 5 is never seen either: two rows of pairs never counted
    expected = tables(count_baselines(train_ids, val_ids, VOCAB))
    result = call(count, train_ids.copy(), val_ids.copy(), VOCAB)
    if not isinstance(result, dict) or set(MODELS) - set(result):
        raise Failure(f"count_baselines should return a dict with the keys {', '.join(MODELS)}")
    got = tables(result)
    for name, table, want in zip(MODELS, got, expected, strict=True):
        if table.shape != want.shape:
            raise Failure(f"count_baselines(...)[{name!r}]: expected shape {tuple(want.shape)}, "
                          f"got {tuple(table.shape)}")
    recognise(got, expected, mistakes_for(MISTAKES, "count_baselines"),
              lambda m: tables(m.wrong(train_ids.copy(), val_ids.copy(), VOCAB)), what="the tables")
    for name, table in zip(MODELS, got, strict=True):
        sums = table.sum(-1)
        if not torch.isclose(sums, torch.ones_like(sums)).all():
            raise Failure(f"{name!r} is not a distribution: each row should sum to 1, but one sums to "
                          f"{sums[~torch.isclose(sums, torch.ones_like(sums))].flatten()[0].item():.6g}")
    for name, table, want in zip(MODELS, got, expected, strict=True):
        compare(table, want, f"count_baselines(...)[{name!r}]")
    probs = count_baselines(train_ids, val_ids, VOCAB)
    for name in MODELS:
        loss = call(score, name, probs[name].copy(), val_ids.copy())
        if not isinstance(loss, (float, np.floating)) or not math.isfinite(loss):
            raise Failure(f"counted_val_loss({name!r}, ...) should return a finite float, got {loss!r}")
        diagnose(float(loss), counted_val_loss(name, probs[name], val_ids), mistakes_for(MISTAKES, "counted_val_loss"),
                 name, probs[name], val_ids, what=f"counted_val_loss({name!r}, ...)")
    bits = call(to_bits, 100.0, 40)
    if not isinstance(bits, (float, np.floating)):
        raise Failure(f"bits_per_char should return a float, got {bits!r}")
    diagnose(float(bits), bits_per_char(100.0, 40), mistakes_for(MISTAKES, "bits_per_char"), 100.0, 40,
             what="bits_per_char(100.0, 40)")
