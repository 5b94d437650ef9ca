"""
Exercise 7: the whole GPT, and GPT-2's initialisation.

Read first: [chapter 8, stacked blocks: the vanilla GPT](../../docs/learn/08-stack.md). Check with
`uv run workshop.py check 7`.

Write GPT as model.py's for the vanilla switches (learned positions, LayerNorm, ReLU or GELU MLP), with
model.py's parameter names: the embeddings, the stack of blocks, the final norm, the head tied to the
token embedding, and init_weights.
"""

import math  # noqa: F401

import torch
import torch.nn as nn
from torch.nn import functional as F  # noqa: F401

from model import Block, Dropout, GPTConfig, KVCache  # noqa: F401  (or yours from exercise 6)


class GPT(nn.Module):
    """A decoder-only transformer: logits = lm_head(ln_f(blocks(wte[idx] + wpe[positions]))).

    __init__(config): self.config = config; self.transformer = nn.ModuleDict with wte (Embedding(vocab_size,
    n_embd)), wpe (Embedding(block_size, n_embd)), drop (dropout p = config.dropout), h (nn.ModuleList of
    n_layer Blocks, Block(config, layer)) and ln_f (LayerNorm(n_embd, bias=config.bias)); lm_head =
    Linear(n_embd, vocab_size, bias=False) whose weight IS wte's weight (one shared Parameter, not a copy);
    then self.init_weights().

    forward(idx, targets=None, kv_cache=None): idx (B, T) int64 ids, T <= block_size, at positions 0 .. T-1
    (this exercise leaves kv_cache aside: pass None to every block). Returns (logits (B, T, vocab_size),
    loss), loss the mean cross-entropy of logits against targets (B, T) with ignore_index=-1, or None
    without targets.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        raise NotImplementedError("write the embeddings, the blocks, ln_f and the tied head, then init_weights()")

    def init_weights(self) -> None:
        """GPT-2's initialisation: every Linear and Embedding weight from N(0, 0.02), except each residual
        projection (every module named ...c_proj), whose std is 0.02 / sqrt(2 * n_layer) so that the residual
        stream's variance does not grow with depth (two additions per block); every bias 0; every norm's
        weight 1 and bias 0."""
        raise NotImplementedError("loop over self.named_modules() and initialise each Linear, Embedding and norm")

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError("embed, add positions, run the blocks, ln_f, lm_head, and the loss")
