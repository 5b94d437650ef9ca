"""
Exercise 2: cross-entropy from logits, the loss every network here is trained on.

Read first: [chapter 2, the bigram network](../../docs/learn/02-bigram.md). Check with `uv run workshop.py check 2`.

Write the mean cross-entropy of a batch of logits, with a numerically stable log-softmax (right at logits of
1e4, where exp overflows), skipping the targets marked ignore_index as model.py's loss does.
"""

import torch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """The mean of -log softmax(logits)[i, targets[i]] over the rows i whose target is not ignore_index.

    logits (N, vocab), float; targets (N,), int64 token ids or ignore_index. Returns a 0-d tensor of the
    logits' dtype, what F.cross_entropy(logits, targets, ignore_index=-1) returns (model.GPT.forward's loss).

        log_softmax(z)_j = z_j - m - log(sum_k exp(z_k - m)),   m = max_k z_k

    Subtracting the maximum m changes nothing mathematically and keeps every exp(.) at most 1.
    """
    raise NotImplementedError("write the stable log-softmax, pick each target's entry, and average the kept rows")
