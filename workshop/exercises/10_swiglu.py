"""
Exercise 10: SwiGLU, the gated feed-forward network.

Read first: [chapter 9, the modern swaps](../../docs/learn/09-modern.md). Check with
`uv run workshop.py check 10`.

Write SwiGLU as model.py's, with its parameter names: the gate and up projections in one matrix
(w_gate_up), silu on the gate, the product, c_proj, dropout.
"""

import torch
import torch.nn as nn
from torch.nn import functional as F  # noqa: F401

from model import GPTConfig


class SwiGLU(nn.Module):
    """y = dropout(c_proj(silu(W_gate x) * (W_up x))), x and y (B, T, n_embd).

    w_gate_up = Linear(n_embd, 2 * config.ffn_hidden, bias=config.bias): its first ffn_hidden output rows
    are W_gate, the next ffn_hidden are W_up (gate first, then up). c_proj = Linear(ffn_hidden, n_embd,
    bias=config.bias); dropout with p = config.dropout. silu(z) = z * sigmoid(z).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        raise NotImplementedError("write w_gate_up, c_proj and dropout, then forward")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("split w_gate_up's output into gate and up, silu(gate) * up, c_proj, dropout")
