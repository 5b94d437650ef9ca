"""Exercise 9's check: RMSNorm against model.py's RMSNorm with the same gain."""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn as nn

from model import RMSNorm
from workshop.checks.common import build, randn, randomise, recognise, same_shape
from workshop.tutor import Mistake, call, compare, require

DIM, EPS = 8, 1e-5
TOLERANCE = dict(atol=1e-6, rtol=1e-5)  # model.py's RMSNorm computes in float32


def reference() -> RMSNorm:
    return randomise(RMSNorm(DIM, EPS)).double().eval()


class Gain(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))


class EpsilonOutsideTheRoot(Gain):
    def forward(self, x):
        return x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.eps) * self.weight


class MeanSubtracted(Gain):
    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SumOfSquares(Gain):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + self.eps) * self.weight


class OverThePositions(Gain):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-2, keepdim=True) + self.eps) * self.weight


class WithoutGain(Gain):
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


MISTAKES = (
    Mistake("put epsilon outside the square root",
            "the formula is x / sqrt(mean(x^2) + eps): eps goes inside the root (torch.rsqrt(ms + eps))",
            EpsilonOutsideTheRoot, "Zhang & Sennrich 2019, Root Mean Square Layer Normalization, arXiv:1910.07467"),
    Mistake("subtract the mean (that makes it LayerNorm)",
            "RMSNorm leaves the mean alone and divides by the root mean square of x itself", MeanSubtracted,
            "Zhang & Sennrich 2019, Root Mean Square Layer Normalization, arXiv:1910.07467 (re-centering dropped)"),
    Mistake("use the sum of the squares instead of their mean",
            "mean(x^2) over the channels, so the scale does not depend on the width", SumOfSquares),
    Mistake("normalise over the positions (dim -2) instead of the channels (dim -1)",
            "each token's vector is normalised on its own: the mean over the last dimension", OverThePositions),
    Mistake("leave out the gain (weight)", "multiply the normalised x by self.weight", WithoutGain),
)


def check(module: ModuleType) -> None:
    """RMSNorm with model.py's gain computes model.py's RMSNorm, on rows of ordinary and of tiny scale."""
    cls = require(module, "RMSNorm", kind="class", signature="(dim, eps)")
    norm = build(cls, reference(), "RMSNorm", DIM, EPS)
    x = randn(2, 5, DIM, seed=11)
    x[0, 0] *= 1e-3  # a row whose mean square is near eps, where eps matters
    expected = reference()(x)
    got = call(norm, x)
    same_shape(got, expected, "the output")
    recognise(got, expected, MISTAKES, lambda m: build(m.wrong, reference(), "", DIM, EPS)(x), **TOLERANCE)
    compare(got, expected, "the output", **TOLERANCE)
