"""Exercise 2's check: cross-entropy from logits against F.cross_entropy(..., ignore_index=-1), the loss
model.GPT.forward computes, at ordinary logits and at logits of 1e4."""

from __future__ import annotations

from types import ModuleType

import torch
from torch.nn import functional as F

from workshop.checks.common import call_or_name, randn, same_shape
from workshop.tutor import Mistake, diagnose, require

IGNORE = -1


def reference(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """model.GPT.forward's loss."""
    return F.cross_entropy(logits, targets, ignore_index=ignore_index)


def ignored_targets_scored(logits, targets, ignore_index=IGNORE):
    logp = torch.log_softmax(logits, dim=-1)
    return -logp[torch.arange(len(targets)), targets].mean()  # -1 picks the last column


def divided_by_every_target(logits, targets, ignore_index=IGNORE):
    keep = targets != ignore_index
    logp = torch.log_softmax(logits, dim=-1)
    return -logp[keep, targets[keep]].sum() / len(targets)


def exp_without_the_maximum(logits, targets, ignore_index=IGNORE):
    keep = targets != ignore_index
    probs = logits.exp() / logits.exp().sum(-1, keepdim=True)
    return -probs[keep, targets[keep]].log().mean()


def summed(logits, targets, ignore_index=IGNORE):
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="sum")


def softmax_over_the_batch(logits, targets, ignore_index=IGNORE):
    keep = targets != ignore_index
    return -torch.log_softmax(logits, dim=0)[keep, targets[keep]].mean()


MISTAKES = (
    Mistake("score the ignored targets (-1) as if they were tokens",
            "a target of ignore_index (-1) marks a position with nothing to predict; indexing with -1 quietly "
            "picks the last column: keep only the rows where targets != ignore_index", ignored_targets_scored,
            "PyTorch docs, torch.nn.functional.cross_entropy (ignore_index): "
            "https://pytorch.org/docs/stable/generated/torch.nn.functional.cross_entropy.html"),
    Mistake("divide by the number of all targets instead of the targets kept",
            "the mean is over the kept rows: divide the sum by (targets != ignore_index).sum()",
            divided_by_every_target),
    Mistake("exponentiate the logits without subtracting their maximum first",
            "exp(1e4) overflows to inf and inf / inf is NaN: subtract each row's maximum before exp, or use "
            "z - m - log(sum exp(z - m))", exp_without_the_maximum,
            "Goodfellow, Bengio & Courville, Deep Learning, section 4.1 (overflow and underflow in softmax)"),
    Mistake("sum the losses instead of averaging them",
            "the loss is the mean over the kept rows, so it does not grow with the batch", summed),
    Mistake("take the log-softmax over the batch (dim 0) instead of over the vocabulary",
            "each row is one position's distribution over the vocabulary: normalise over dim -1",
            softmax_over_the_batch),
)


def check(module: ModuleType) -> None:
    """cross_entropy is F.cross_entropy with ignore_index -1, at ordinary logits and at logits of 1e4."""
    fn = require(module, "cross_entropy", signature="(logits, targets, ignore_index=-1)")
    targets = torch.tensor([3, 0, IGNORE, 4, 4, 1, IGNORE, 2])
    for scale, what in ((1.0, "the loss"), (1e4, "the loss at logits of about 1e4")):
        logits = randn(8, 5, seed=3, scale=scale)
        got = call_or_name(fn, MISTAKES, logits, targets, ignore_index=IGNORE, what=what)
        expected = reference(logits, targets)
        same_shape(got, expected, what)
        diagnose(got, expected, MISTAKES, logits, targets, ignore_index=IGNORE, what=what)
