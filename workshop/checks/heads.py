"""Exercise 4's check: multi-head causal self-attention against model.py's CausalSelfAttention, with
model.py's weights loaded into the learner's class, without and with RoPE."""

from __future__ import annotations

import math
from types import ModuleType

import torch
from torch.nn import functional as F

from model import CausalSelfAttention, apply_rotary_emb, attention, rope_tables
from workshop.checks.common import build, config, randn, randomise, recognise, same_shape
from workshop.tutor import Failure, Mistake, call, compare, require

CONFIG = config()  # 3 heads of 4 channels
B, T = 2, 6


def reference() -> CausalSelfAttention:
    return randomise(CausalSelfAttention(CONFIG, 0)).double().eval()


class ScaledByWidth(CausalSelfAttention):
    def forward(self, x, rope, kv_cache):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        scores = q @ k.transpose(-2, -1) / math.sqrt(C)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        y = F.softmax(scores, dim=-1) @ v
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class HeadsSplitInTheWrongOrder(CausalSelfAttention):
    def forward(self, x, rope, kv_cache):
        B, T, C = x.shape
        hs = C // self.n_head
        # (B, T, hs, nh): head h gets every nh-th channel instead of a block of hs neighbours
        q, k, v = (t.view(B, T, hs, self.n_head).transpose(2, 3).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        y = attention(q, k, v).transpose(1, 2).transpose(2, 3).reshape(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class HeadsJoinedWithoutTranspose(CausalSelfAttention):
    def forward(self, x, rope, kv_cache):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        y = attention(q, k, v).reshape(B, T, C)  # (B, nh, T, hs) read as (B, T, C): positions and heads mixed
        return self.resid_dropout(self.c_proj(y))


class KeysAndQueriesSwapped(CausalSelfAttention):
    def forward(self, x, rope, kv_cache):
        B, T, C = x.shape
        k, q, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        return self.resid_dropout(self.c_proj(attention(q, k, v).transpose(1, 2).reshape(B, T, C)))


class RopeOnValues(CausalSelfAttention):
    def forward(self, x, rope, kv_cache):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in self.c_attn(x).split(C, 2))
        if rope is not None:
            q, k, v = (apply_rotary_emb(t, *rope) for t in (q, k, v))
        return self.resid_dropout(self.c_proj(attention(q, k, v).transpose(1, 2).reshape(B, T, C)))


MISTAKES = (
    Mistake("scale the scores by 1/sqrt(n_embd), the model width, instead of 1/sqrt(head size)",
            "each head's dot product runs over its own hs channels, so the scale is 1/sqrt(C // n_head)",
            ScaledByWidth, "Vaswani et al. 2017, Attention Is All You Need, section 3.2.2 (d_k = d_model / h)"),
    Mistake("split the channels as (head size, heads) instead of (heads, head size)",
            "head h owns the block of channels h*hs .. (h+1)*hs - 1: view(B, T, n_head, hs), then transpose(1, 2)",
            HeadsSplitInTheWrongOrder),
    Mistake("join the heads with a reshape but no transpose back",
            "y is (B, nh, T, hs): transpose(1, 2) to (B, T, nh, hs) first, then view(B, T, C); a reshape alone "
            "mixes positions with heads", HeadsJoinedWithoutTranspose),
    Mistake("take k before q from c_attn's output",
            "c_attn's output is q, k, v side by side in that order (model.py's weights are laid out so)",
            KeysAndQueriesSwapped),
    Mistake("rotate v with RoPE as well as q and k",
            "RoPE encodes positions in the scores q . k only; the values are what is averaged and stay as they are",
            RopeOnValues, "Su et al. 2021, RoFormer: Enhanced Transformer with Rotary Position Embedding, "
            "arXiv:2104.09864"),
)


def check(module: ModuleType) -> None:
    """CausalSelfAttention with model.py's weights computes what model.py's does, without and with RoPE,
    and a later token never changes an earlier output."""
    cls = require(module, "CausalSelfAttention", kind="class", signature="(config, layer)")
    learner = build(cls, reference(), "CausalSelfAttention", CONFIG, 0)
    x = randn(B, T, CONFIG.n_embd, seed=5)
    expected = reference()(x, None, None)
    got = call(learner, x, None, None)
    same_shape(got, expected, "the output")
    recognise(got, expected, MISTAKES, lambda m: build(m.wrong, reference(), "", CONFIG, 0)(x, None, None))
    later = x.clone()
    later[:, -1] += 3.0
    if not torch.allclose(call(learner, later, None, None)[:, :-1], got[:, :-1], atol=1e-12):
        raise Failure("changing the last token changed the output at an earlier position: a later token must "
                      "never change an earlier output (is the causal mask applied in every head?)")
    compare(got, expected, "the output")
    cos, sin = (t.double() for t in rope_tables(CONFIG.head_dim, T, 10000.0))
    expected = reference()(x, (cos, sin), None)
    got = call(learner, x, (cos, sin), None)
    what = "the output with RoPE"
    recognise(got, expected, MISTAKES, lambda m: build(m.wrong, reference(), "", CONFIG, 0)(x, (cos, sin), None),
              what)
    compare(got, expected, what)
