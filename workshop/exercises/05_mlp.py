"""
Exercise 5: the feed-forward network.

Read first: [chapter 5, the feed-forward network](../../docs/learn/05-ffn.md). Check with
`uv run workshop.py check 5`.

Write MLP as model.py's, with its parameter names: c_fc, the activation (ReLU or GELU as config.mlp says),
c_proj, and dropout on the output.
"""

import torch
import torch.nn as nn

from model import GPTConfig


class MLP(nn.Module):
    """y = dropout(c_proj(act(c_fc(x)))), x and y (B, T, n_embd).

    c_fc = Linear(n_embd, config.ffn_hidden, bias=config.bias) (4 * n_embd by default); act = ReLU when
    config.mlp == "relu", else GELU; c_proj = Linear(ffn_hidden, n_embd, bias=config.bias); dropout with
    p = config.dropout (nn.Dropout, or model.py's Dropout). What must hold: in eval mode dropout is the
    identity; in training it zeroes each element with probability p and scales the rest by 1/(1-p), so
    every element keeps its expected value.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        raise NotImplementedError("write c_fc, act, c_proj and dropout, then forward")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("c_fc, the activation, c_proj, dropout")
