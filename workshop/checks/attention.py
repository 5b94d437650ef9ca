"""Exercise 3's check: one head of causal self-attention against model.py's `attention`, with its invariants
(weights that sum to 1, a future that stays hidden) checked before the values."""

from __future__ import annotations

import math
from types import ModuleType

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import attention, causal_mask
from workshop.checks.common import call_or_name, randn, recognise, same_shape
from workshop.tutor import Failure, Mistake, diagnose, require

B, NH, T, HS = 2, 3, 5, 4


def triangle(q, k, mask):
    """The causal mask or the one given, as model.attention reads it."""
    if mask is None:
        return causal_mask(torch.arange(q.size(2)), k.size(2))
    return mask


def masked_softmax(scores, mask, dropout):
    weights = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return dropout(weights) if dropout is not None else weights


def not_scaled(q, k, v, mask=None, dropout=None):
    return masked_softmax(q @ k.transpose(-2, -1), triangle(q, k, mask), dropout) @ v


def scaled_by_head_size(q, k, v, mask=None, dropout=None):
    return masked_softmax(q @ k.transpose(-2, -1) / q.size(-1), triangle(q, k, mask), dropout) @ v


def softmax_over_queries(q, k, v, mask=None, dropout=None):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).masked_fill(~triangle(q, k, mask), float("-inf"))
    weights = F.softmax(scores, dim=-2)
    return (dropout(weights) if dropout is not None else weights) @ v


def hides_the_diagonal(q, k, v, mask=None, dropout=None):
    mask = torch.ones(q.size(2), k.size(2), dtype=torch.bool).tril(-1) if mask is None else mask
    return masked_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), mask, dropout) @ v


def sees_the_next_one(q, k, v, mask=None, dropout=None):
    mask = torch.ones(q.size(2), k.size(2), dtype=torch.bool).tril(1) if mask is None else mask
    return masked_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), mask, dropout) @ v


def masked_with_zero(q, k, v, mask=None, dropout=None):
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))) * triangle(q, k, mask)
    weights = F.softmax(scores, dim=-1)
    return (dropout(weights) if dropout is not None else weights) @ v


def masked_after_softmax(q, k, v, mask=None, dropout=None):
    weights = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1) * triangle(q, k, mask)
    return (dropout(weights) if dropout is not None else weights) @ v


def mask_argument_ignored(q, k, v, mask=None, dropout=None):
    top_left = torch.ones(q.size(2), k.size(2), dtype=torch.bool).tril()
    return masked_softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), top_left, dropout) @ v


MISTAKES = (
    Mistake("leave out the 1/sqrt(head size) scale",
            "without it the scores grow with the head size and the softmax saturates: divide q k^T by "
            "sqrt(q.size(-1))", not_scaled, "Vaswani et al. 2017, Attention Is All You Need, section 3.2.1"),
    Mistake("divide the scores by the head size instead of its square root",
            "the scale is 1/sqrt(hs): the dot product of two random unit-variance vectors has variance hs, "
            "so its standard deviation is sqrt(hs)", scaled_by_head_size,
            "Vaswani et al. 2017, Attention Is All You Need, section 3.2.1 (footnote 4)"),
    Mistake("take the softmax over the queries (dim -2) instead of over the keys",
            "each query's weights are a distribution over the keys: softmax over the last dimension",
            softmax_over_queries),
    Mistake("hide each position from itself (j < t instead of j <= t)",
            "query t may see keys 0 .. t, itself included; hiding the diagonal leaves the first query no key "
            "at all, and a row of -inf scores gives softmax 0/0 = NaN", hides_the_diagonal),
    Mistake("let each position see the next one (j <= t + 1)",
            "the mask is the lower triangle with the diagonal (torch.tril with diagonal 0): a query that sees "
            "the next token can copy the answer it is trained to predict", sees_the_next_one),
    Mistake("mask the scores with 0 instead of -inf",
            "exp(0) = 1, so a score set to 0 (or multiplied by a False mask) still gets weight: set the "
            "forbidden scores to -inf before the softmax", masked_with_zero),
    Mistake("zero the future weights after the softmax",
            "masking after the softmax leaves rows that no longer sum to 1: mask the scores before it",
            masked_after_softmax),
    Mistake("ignore the mask argument and always use the triangle from position 0",
            "with a KV cache the queries start at a later position than the keys: use the mask you are given "
            "(SDPA's is_causal=True makes the same mistake, aligning the triangle top-left)", mask_argument_ignored,
            "PyTorch docs, scaled_dot_product_attention (is_causal aligns top-left for non-square masks): "
            "https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html"),
)


class FixedDrop(nn.Module):
    """A dropout whose mask is fixed, so that the learner's and the reference's outputs can be compared."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.keep = torch.rand(shape, generator=torch.Generator().manual_seed(7)) >= 0.3

    def forward(self, weights: torch.Tensor) -> torch.Tensor:
        return weights * self.keep / 0.7


def check(module: ModuleType) -> None:
    """attention is model.attention: the contract, weights that sum to 1 and never see the future, then
    the values, with an explicit mask at an offset and with dropout on the weights."""
    fn = require(module, "attention", signature="(q, k, v, mask=None, dropout=None)")
    q, k, v = randn(B, NH, T, HS, seed=1), randn(B, NH, T, HS, seed=2), randn(B, NH, T, HS, seed=3)
    expected = attention(q, k, v)
    got = call_or_name(fn, MISTAKES, q, k, v)
    same_shape(got, expected, "the output")
    recognise(got, expected, MISTAKES, lambda m: m.wrong(q, k, v), "the output")

    # v = the identity: each query's output is its row of attention weights
    eye = torch.eye(T, dtype=torch.float64).expand(B, NH, T, T)
    weights = call_or_name(fn, MISTAKES, q, k, eye)
    if weights.shape != (B, NH, T, T):
        raise Failure(f"with v of shape {(B, NH, T, T)} the output should be {(B, NH, T, T)}, "
                      f"got {tuple(weights.shape)}")
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    if weights[..., future].abs().max() > 1e-12:
        t, j = [int(i) for i in (weights[0, 0].abs() * future).nonzero()[0]]
        raise Failure(f"query {t} gives key {j} weight {weights[0, 0, t, j].item():.3g}: a query may see keys "
                      f"0 .. t only (the mask hides the future)")
    sums = weights.sum(-1)
    if not torch.allclose(sums, torch.ones_like(sums)):
        raise Failure(f"query {int((~torch.isclose(sums, torch.ones_like(sums)))[0, 0].nonzero()[0])}'s weights "
                      f"sum to {sums[~torch.isclose(sums, torch.ones_like(sums))][0].item():.6g}, not 1")
    changed = [x.clone() for x in (q, k, v)]
    for x in changed:
        x[:, :, -1] += 10.0
    later = call_or_name(fn, MISTAKES, *changed)
    if not torch.allclose(later[:, :, :-1], got[:, :, :-1], atol=1e-12):
        raise Failure("changing the last token changed the output at an earlier position: a later token must "
                      "never change an earlier output")
    diagnose(got, expected, MISTAKES, q, k, v, what="the output")

    # two queries at positions 3 and 4 of five keys, the mask a KV cache gives
    q2 = randn(B, NH, 2, HS, seed=4)
    mask = causal_mask(torch.tensor([3, 4]), T)
    diagnose(call_or_name(fn, MISTAKES, q2, k, v, mask), attention(q2, k, v, mask), MISTAKES, q2, k, v, mask,
             what="the output for queries at positions 3 and 4 (mask given)")
    drop = FixedDrop((T, T))
    diagnose(call_or_name(fn, MISTAKES, q, k, v, None, drop), attention(q, k, v, None, drop), (), q, k, v,
             what="the output with dropout on the weights (apply dropout to the weights, after the softmax)")
