"""Exercise 13's check: filter_logits and sample_next against generate.py's, comparing the distributions the
tokens are drawn from, then the draws themselves with the same generator."""

from __future__ import annotations

from types import ModuleType

import torch
from torch.nn import functional as F

from generate import filter_logits, sample_next
from workshop.checks.common import mistakes_for, randn, recognise, replaces
from workshop.tutor import Failure, Mistake, call, compare, require

SETTINGS = ((1.0, None, None), (0.7, None, None), (1.0, 3, None), (1.0, None, 0.6), (0.5, None, 0.8),
            (0.8, 4, 0.7), (0.0, None, None))


def top_k_of(k_shift):
    def filtered(logits, temperature=1.0, top_k=None, top_p=None):
        top_k = None if top_k is None else top_k + k_shift
        return filter_logits(logits, temperature, top_k, top_p)
    return filtered


keeps_one_fewer = replaces("filter_logits")(top_k_of(-1))
keeps_one_more = replaces("filter_logits")(top_k_of(+1))


@replaces("filter_logits")
def drops_the_crossing_token(logits, temperature=1.0, top_k=None, top_p=None):
    logits = filter_logits(logits, temperature, top_k, None)
    if top_p is not None and temperature > 0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        drop_sorted = F.softmax(sorted_logits, dim=-1).cumsum(-1) > top_p
        logits = logits.masked_fill(torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted), float("-inf"))
    return logits


@replaces("filter_logits")
def top_p_before_temperature(logits, temperature=1.0, top_k=None, top_p=None):
    if temperature == 0 or top_p is None:
        return filter_logits(logits, temperature, top_k, top_p)
    kept = filter_logits(logits, 1.0, top_k, top_p)
    return (logits / temperature).masked_fill(kept == float("-inf"), float("-inf"))


@replaces("sample_next")
def temperature_after_softmax(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = F.softmax(filter_logits(logits, 1.0, top_k, top_p), dim=-1) / temperature
    return torch.multinomial(probs, num_samples=1, generator=generator)


MISTAKES = (
    Mistake("keep k - 1 tokens for top-k", "top-k keeps exactly k tokens: the k largest, order[:, :top_k]",
            keeps_one_fewer),
    Mistake("keep k + 1 tokens for top-k",
            "top-k keeps exactly k tokens: a threshold at the k-th largest with > (not >=) or an index k "
            "instead of k - 1 keeps one more", keeps_one_more),
    Mistake("drop the token that crosses top_p",
            "keep a token while the probability ranked above it is below top_p: (cumsum - probs) < top_p, "
            "so the kept set reaches top_p", drops_the_crossing_token,
            "https://github.com/rasbt/reasoning-from-scratch/issues/164"),
    Mistake("choose the top-p set from the probabilities before the temperature",
            "the temperature comes first: top-p reads the tempered distribution, the one tokens are drawn from",
            top_p_before_temperature),
    Mistake("divide the probabilities by the temperature after the softmax",
            "multinomial renormalises, so dividing probabilities changes nothing: divide the logits before "
            "the softmax", temperature_after_softmax),
)


def probabilities(filtered: torch.Tensor) -> torch.Tensor:
    return F.softmax(filtered.double(), dim=-1)


def draws(fn, logits, temperature, top_k, top_p) -> torch.Tensor:
    return fn(logits, temperature, top_k, top_p, generator=torch.Generator().manual_seed(0))


def check(module: ModuleType) -> None:
    """filter_logits keeps generate.py's distribution for every setting; sample_next draws generate.py's
    tokens with the same generator."""
    filter_fn = require(module, "filter_logits", signature="(logits, temperature=1.0, top_k=None, top_p=None)")
    sample_fn = require(module, "sample_next",
                        signature="(logits, temperature=1.0, top_k=None, top_p=None, generator=None)")
    logits = randn(4, 10, seed=18, scale=2.0)
    mine = mistakes_for(MISTAKES, "filter_logits")
    for temperature, top_k, top_p in SETTINGS:
        what = f"the probabilities after filter_logits(temperature={temperature}, top_k={top_k}, top_p={top_p})"
        filtered = call(filter_fn, logits, temperature, top_k, top_p, allow_inf=True)
        if not isinstance(filtered, torch.Tensor) or filtered.shape != logits.shape:
            raise Failure(f"filter_logits should return logits of shape {tuple(logits.shape)}")
        got = probabilities(filtered)
        expected = probabilities(filter_logits(logits, temperature, top_k, top_p))
        recognise(got, expected, mine, lambda m, s=(temperature, top_k, top_p): probabilities(m.wrong(logits, *s)),
                  what)
        compare(got, expected, what)
    many = randn(256, 10, seed=19, scale=2.0)
    mine = mistakes_for(MISTAKES, "sample_next")
    for temperature, top_k, top_p in ((0.5, 5, None), (0.0, None, None)):
        what = f"the tokens sample_next draws (temperature={temperature}, top_k={top_k}) with a generator seeded 0"
        got = call(sample_fn, many, temperature, top_k, top_p, generator=torch.Generator().manual_seed(0))
        expected = draws(sample_next, many, temperature, top_k, top_p)
        if not isinstance(got, torch.Tensor) or got.shape != expected.shape or got.dtype != expected.dtype:
            raise Failure(f"sample_next should return int64 token ids of shape {tuple(expected.shape)}")
        recognise(got, expected, mine, lambda m, s=(temperature, top_k, top_p): draws(m.wrong, many, *s), what)
        compare(got, expected, what)
