"""
Exercise 4: several heads, the multi-head causal self-attention of model.py.

Read first: [chapter 4, several heads](../../docs/learn/04-heads.md). Check with `uv run workshop.py check 4`.

Write CausalSelfAttention as model.py's, with the same parameter names so that model.py's weights load into
it: c_attn (q, k and v in one matmul), the split into heads, attention, the heads joined again, c_proj.
Your attention from exercise 3 (or `from model import attention`) does the per-head work.
"""

import torch
import torch.nn as nn

from model import GPTConfig, KVCache, apply_rotary_emb, attention  # noqa: F401  (yours from exercise 3 will do)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: softmax(q k^T / sqrt(hs) + mask) v, all heads batched.

    __init__(config, layer): c_attn = Linear(n_embd, 3 * n_embd, bias=config.bias), whose output holds q, k
    and v side by side in that order; c_proj = Linear(n_embd, n_embd, bias=config.bias); dropouts
    attn_dropout (p = config.attention_dropout, on the weights) and resid_dropout (p = config.dropout, on the
    output); layer is this block's index (the KV cache's slot).

    forward(x, rope, kv_cache): x (B, T, C) -> (B, T, C), C = n_embd = n_head * hs. Head h owns channels
    h*hs .. (h+1)*hs - 1 of each of q, k, v: view (B, T, nh, hs), then transpose to (B, nh, T, hs). rope, if
    not None, is (cos, sin) for apply_rotary_emb, applied to q and k (never v). kv_cache, if not None:
    k, v, mask = kv_cache.update(self.layer, k, v). After attention, transpose back to (B, T, nh, hs) and
    join the heads into (B, T, C) before c_proj.
    """

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        raise NotImplementedError("write c_attn, c_proj and the two dropouts, then forward")

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv_cache: KVCache | None) -> torch.Tensor:
        raise NotImplementedError("split q, k, v into heads, attend, join the heads, project")
