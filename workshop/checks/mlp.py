"""Exercise 5's check: the feed-forward network against model.py's MLP with the same weights, for ReLU and
GELU, and its dropout: the identity in eval mode, and in training the expected value kept."""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn as nn

from model import MLP
from workshop.checks.common import build, config, named, randn, randomise, recognise, same_shape
from workshop.tutor import Failure, Mistake, call, compare, require

P = 0.5  # dropout probability in the check: half the outputs zeroed in training


def reference(cfg) -> MLP:
    return randomise(MLP(cfg)).double().eval()


class DropsWithoutRescaling(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return x * (torch.rand(x.shape) >= self.p) if self.training else x


class DropsAlways(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return x * (torch.rand(x.shape) >= self.p) / (1 - self.p)


class DropoutNotRescaled(MLP):
    def __init__(self, config):
        super().__init__(config)
        self.dropout = DropsWithoutRescaling(config.dropout)


class DropoutLeftOnInEval(MLP):
    def __init__(self, config):
        super().__init__(config)
        self.dropout = DropsAlways(config.dropout)


class WithoutActivation(MLP):
    def forward(self, x):
        return self.dropout(self.c_proj(self.c_fc(x)))


class GeluWhateverAsked(MLP):
    def __init__(self, config):
        super().__init__(config)
        self.act = nn.GELU()


MISTAKES = (
    Mistake("drop units in training without scaling the rest by 1/(1-p)",
            "dropout keeps each element's expected value: the kept ones are divided by (1 - p), or the "
            "network sees smaller activations in training than in eval", DropoutNotRescaled,
            "Srivastava et al. 2014, Dropout: A Simple Way to Prevent Neural Networks from Overfitting, JMLR 15 "
            "(the expected output kept equal in training and at test time)"),
    Mistake("keep dropping units in eval mode",
            "dropout is the identity when the module is not training: check self.training (nn.Dropout does)",
            DropoutLeftOnInEval),
    Mistake("leave out the activation between c_fc and c_proj",
            "two linear layers with nothing between them are one linear layer: put act between them",
            WithoutActivation),
    Mistake("use GELU whatever config.mlp asks",
            "config.mlp == 'relu' asks for nn.ReLU(); GELU is for 'gelu'", GeluWhateverAsked),
)


def check(module: ModuleType) -> None:
    """MLP computes model.py's MLP in eval mode for ReLU and GELU; in training its dropout zeroes about p of
    the outputs and scales the rest by 1/(1-p)."""
    cls = require(module, "MLP", kind="class", signature="(config)")
    x = randn(4, 16, 12, seed=6)
    for mlp in ("relu", "gelu"):
        cfg = config(mlp=mlp, dropout=P)
        learner = build(cls, reference(cfg), "MLP", cfg)
        expected = reference(cfg)(x)
        got = call(learner, x)
        what = f"the output ({mlp}, eval mode)"
        same_shape(got, expected, what)
        recognise(got, expected, MISTAKES, lambda m, cfg=cfg: build(m.wrong, reference(cfg), "", cfg)(x), what)
        if ((got == 0) & (expected != 0)).float().mean() > 0.1:
            raise named(MISTAKES[1], what)
        compare(got, expected, what)
    learner.train()
    torch.manual_seed(0)
    dropped = call(learner, x)
    kept = dropped != 0
    what = "the output in training mode"
    if kept.all():
        raise Failure(f"{what}: with dropout p = {P}, about half the outputs should be zeroed, and none were")
    if not 0.4 < kept.double().mean() < 0.6:
        raise Failure(f"{what}: with dropout p = {P}, {1 - kept.double().mean():.0%} of the outputs were zeroed")
    if torch.allclose(dropped[kept], expected[kept]):
        raise named(MISTAKES[0], what)
    if not torch.allclose(dropped[kept], expected[kept] / (1 - P)):
        raise Failure(f"{what}: the outputs dropout keeps should be the eval output divided by (1 - p); apply "
                      f"dropout once, to the output of c_proj")
