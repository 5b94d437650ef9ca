"""
Exercise 3: one head of causal self-attention.

Read first: [chapter 3, one attention head](../../docs/learn/03-attention.md). Check with
`uv run workshop.py check 3`.

Write scaled dot-product attention as model.py's `attention`: the scores, the 1/sqrt(head size) scale, the
causal mask, the softmax and the weighted sum of the values.
"""

import torch
import torch.nn as nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              dropout: nn.Module | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + M) v, where M is 0 where the mask allows and -inf where it forbids.

    q (B, nh, T, hs); k (B, nh, Tk, hs); v (B, nh, Tk, hv). mask (T, Tk) bool, True where query t may see
    key j; None means the causal triangle of a sequence from position 0 (key j visible to query t when
    j <= t). Returns (B, nh, T, hv), the input's dtype: each query's weighted sum of the values. What must
    hold: each query's weights sum to 1 over the keys it may see and are exactly 0 elsewhere, so a later
    token never changes an earlier output. dropout, if given, is applied to the weights (after the softmax).
    """
    raise NotImplementedError("write the scores, the scale, the mask, the softmax and the weighted sum")
