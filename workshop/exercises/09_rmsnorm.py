"""
Exercise 9: RMSNorm, the modern swap for LayerNorm.

Read first: [chapter 9, the modern swaps](../../docs/learn/09-modern.md). Check with `uv run workshop.py check 9`.

Write RMSNorm as model.py's: LayerNorm without the mean subtraction and without the bias.
"""

import torch
import torch.nn as nn


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight, the mean over the last dimension (the channels) of x (..., dim).

    One parameter, weight (dim,), initialised to ones. Returns the shape and dtype of x. (model.py computes
    in float32 and casts back, as LLaMA does; in float64 you may compute in float64.)
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        raise NotImplementedError("write the weight parameter and keep eps, then forward")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("divide x by the root of the mean of its squares (+ eps), times weight")
