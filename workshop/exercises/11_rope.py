"""
Exercise 11: RoPE, rotary position embeddings.

Read first: [chapter 9, the modern swaps](../../docs/learn/09-modern.md). Check with
`uv run workshop.py check 11`.

Write model.py's rope_tables (the cos and sin of every position's angles) and apply_rotary_emb (each pair
of channels rotated by its angle), with model.py's pairing: channel i with channel i + hs/2.
"""

import torch


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles pos * theta^(-2i / head_dim), for positions pos = 0 .. length-1 and pairs
    i = 0 .. head_dim/2 - 1: two float32 tensors (length, head_dim/2)."""
    raise NotImplementedError("the inverse frequencies, their outer product with the positions, cos and sin")


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of channels of x (B, nh, T, hs) by its position's angle; cos, sin (T, hs/2).

    Pairing convention ("rotate half", LLaMA in Hugging Face transformers): channel i is paired with channel
    i + hs/2. With x1 = x[..., :hs/2] and x2 = x[..., hs/2:]:

        out = cat(x1 * cos - x2 * sin,  x2 * cos + x1 * sin)

    Returns x's shape and dtype (cast cos and sin to x's dtype). What must hold: each vector keeps its norm,
    and the dot product of a query rotated at position m with a key rotated at n depends only on m - n.
    """
    raise NotImplementedError("split x into halves, rotate each pair, join the halves")
