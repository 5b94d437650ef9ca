"""
Exercise 6: LayerNorm and the pre-norm residual block.

Read first: [chapter 6, residual connections](../../docs/learn/06-residual.md) and
[chapter 7, normalisation](../../docs/learn/07-norm.md). Check with `uv run workshop.py check 6`.

Write LayerNorm (what torch.nn.LayerNorm computes, which model.py uses) and Block as model.py's: two
sublayers, each with its norm before it and the residual connection around it.
"""

import torch
import torch.nn as nn

from model import MLP, CausalSelfAttention, GPTConfig, KVCache  # noqa: F401  (or yours from exercises 4 and 5)


class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, the mean and the (biased, 1/n) variance taken
    over the last dimension (the channels) of x (..., dim).

    Parameters: weight (dim,) initialised to ones (the gain), and bias (dim,) initialised to zeros, only
    when bias is True (with bias False there is no bias parameter at all). Returns the shape and dtype of x.
    """

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        raise NotImplementedError("write the weight and bias parameters, then forward")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("subtract the mean, divide by sqrt(var + eps), scale by weight, add bias")


class Block(nn.Module):
    """One pre-norm transformer block: x = x + attn(ln_1(x), rope, kv_cache), then x = x + mlp(ln_2(x)).

    __init__(config, layer): ln_1 and ln_2 (LayerNorm(n_embd, eps=config.norm_eps, bias=config.bias)), attn
    (CausalSelfAttention(config, layer)), mlp (MLP(config)). forward(x, rope, kv_cache): x (B, T, n_embd)
    -> the same shape. Each sublayer reads a normalised copy of the stream and adds its output to the
    stream itself: the residual stream is never normalised in place.
    """

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        raise NotImplementedError("write ln_1, attn, ln_2 and mlp, then forward")

    def forward(self, x: torch.Tensor, rope, kv_cache: KVCache | None) -> torch.Tensor:
        raise NotImplementedError("x + attn(ln_1(x)), then x + mlp(ln_2(x))")
