"""Exercise 6's check: LayerNorm against torch.nn.LayerNorm (what model.py's make_norm builds), with and
without its bias, and the pre-norm Block against model.py's Block with the same weights."""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn as nn

from model import Block, BlockWithoutResidual
from workshop.checks.common import build, config, mistakes_for, randn, randomise, recognise, replaces, same_shape
from workshop.tutor import Failure, Mistake, call, compare, require

DIM = 8


def reference_norm(eps: float, bias: bool) -> nn.LayerNorm:
    return randomise(nn.LayerNorm(DIM, eps=eps, bias=bias)).double().eval()


class Norm(nn.Module):
    """The parameters of a LayerNorm, for the wrong variants to compute from."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def shift(self, y):
        return y if self.bias is None else y + self.bias


@replaces("LayerNorm")
class EpsilonOutsideTheRoot(Norm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return self.shift(centred / (centred.pow(2).mean(-1, keepdim=True).sqrt() + self.eps) * self.weight)


@replaces("LayerNorm")
class OverThePositions(Norm):
    def forward(self, x):
        centred = x - x.mean(-2, keepdim=True)
        return self.shift(centred / (centred.pow(2).mean(-2, keepdim=True) + self.eps).sqrt() * self.weight)


@replaces("LayerNorm")
class UnbiasedVariance(Norm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return self.shift(centred / (x.var(-1, keepdim=True) + self.eps).sqrt() * self.weight)


@replaces("LayerNorm")
class WithoutBias(Norm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return centred / (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt() * self.weight


@replaces("LayerNorm")
class WithoutGain(Norm):
    def forward(self, x):
        centred = x - x.mean(-1, keepdim=True)
        return self.shift(centred / (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())


@replaces("Block")
class PostNorm(Block):
    def forward(self, x, rope, kv_cache):
        x = self.ln_1(x + self.attn(x, rope, kv_cache))
        return self.ln_2(x + self.mlp(x))


@replaces("Block")
class ResidualFromTheNormed(Block):
    def forward(self, x, rope, kv_cache):
        x = self.ln_1(x)
        x = x + self.attn(x, rope, kv_cache)
        x = self.ln_2(x)
        return x + self.mlp(x)


@replaces("Block")
class OneNormForBoth(Block):
    def forward(self, x, rope, kv_cache):
        x = x + self.attn(self.ln_1(x), rope, kv_cache)
        return x + self.mlp(self.ln_1(x))


@replaces("Block")
class WithoutResidual(BlockWithoutResidual):
    """model.py's learning-path block without residual connections."""


MISTAKES = (
    Mistake("put epsilon outside the square root", "the formula is (x - mean) / sqrt(var + eps): eps goes inside "
            "the root, as torch.nn.LayerNorm has it", EpsilonOutsideTheRoot,
            "PyTorch docs, torch.nn.LayerNorm: https://pytorch.org/docs/stable/generated/torch.nn.LayerNorm.html"),
    Mistake("normalise over the positions (dim -2) instead of the channels (dim -1)",
            "each token's vector is normalised on its own: mean and variance over the last dimension",
            OverThePositions, "Ba, Kiros & Hinton 2016, Layer Normalization, arXiv:1607.06450 (section 3)"),
    Mistake("use the unbiased variance (divide by n - 1)",
            "torch.var divides by n - 1 unless told otherwise: use x.var(-1, unbiased=False), or the mean of "
            "the squared deviations", UnbiasedVariance,
            "PyTorch docs, torch.nn.LayerNorm (the variance is the biased estimator, "
            "torch.var(input, unbiased=False))"),
    Mistake("leave out the bias (beta)", "after the gain, add self.bias (when bias is True)", WithoutBias),
    Mistake("leave out the gain (weight)", "multiply the normalised x by self.weight before adding the bias",
            WithoutGain),
    Mistake("normalise after adding the residual (post-norm)",
            "the block is pre-norm: x + attn(ln_1(x)); post-norm, ln(x + attn(x)), is the original Transformer's",
            PostNorm, "Xiong et al. 2020, On Layer Normalization in the Transformer Architecture, arXiv:2002.04745"),
    Mistake("add the sublayer's output to the normed x instead of to x",
            "keep the stream as it is: x = x + attn(ln_1(x)), not h = ln_1(x); x = h + attn(h)",
            ResidualFromTheNormed),
    Mistake("use ln_1 before the MLP as well as before attention",
            "each sublayer has its own norm, with its own gain and bias: ln_2 before the MLP", OneNormForBoth),
    Mistake("leave out the residual connections",
            "each sublayer's output is added to its input: x = x + attn(...), not x = attn(...)", WithoutResidual,
            "He et al. 2016, Deep Residual Learning for Image Recognition, arXiv:1512.03385"),
)


def check_layernorm(module: ModuleType) -> None:
    cls = require(module, "LayerNorm", kind="class", signature="(dim, eps=1e-5, bias=True)")
    x = randn(2, 5, DIM, seed=8, scale=3.0) + 2.0
    x[0, 0] = x[0, 0] * 1e-3  # a row of tiny variance, where eps matters
    mine = mistakes_for(MISTAKES, "LayerNorm")
    for bias in (True, False):
        eps = 1e-5
        what = f"LayerNorm(dim={DIM}, eps={eps}, bias={bias})"
        norm = build(lambda d, e, b: cls(d, eps=e, bias=b), reference_norm(eps, bias), what, DIM, eps, bias)
        got = call(norm, x)
        expected = reference_norm(eps, bias)(x)
        same_shape(got, expected, f"the output of {what}")
        recognise(got, expected, mine,
                  lambda m, eps=eps, bias=bias: build(m.wrong, reference_norm(eps, bias), "", DIM, eps, bias)(x),
                  f"the output of {what}")
        compare(got, expected, f"the output of {what}")


def check_block(module: ModuleType) -> None:
    cls = require(module, "Block", kind="class", signature="(config, layer)")
    cfg = config()

    def reference():
        return randomise(Block(cfg, 0)).double().eval()

    learner = build(cls, reference(), "Block", cfg, 0)
    x = randn(2, 6, cfg.n_embd, seed=9)
    expected = reference()(x, None, None)
    got = call(learner, x, None, None)
    same_shape(got, expected, "the block's output")
    recognise(got, expected, mistakes_for(MISTAKES, "Block"),
              lambda m: build(m.wrong, reference(), "", cfg, 0)(x, None, None), "the block's output")
    if not torch.isfinite(got).all():
        raise Failure("the block's output is not finite")
    compare(got, expected, "the block's output")


def check(module: ModuleType) -> None:
    """LayerNorm is torch.nn.LayerNorm (with and without bias), then Block is model.py's pre-norm Block."""
    check_layernorm(module)
    check_block(module)
