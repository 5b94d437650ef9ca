"""
The tinygpt model: one from-scratch GPT whose parts can be swapped one at a time.

Everything a forward pass does is written out here: token and position embeddings, causal
self-attention (the formula in `attention`, or PyTorch's fused kernel that computes the same), the
feed-forward network, the norms, the residual stream, the language-model head and the KV cache. The
file imports only torch: sampling and the generation loop live in generate.py, reading a model from a
checkpoint in machinery/checkpoint.py. Why some parts are written the way they are (the additive mask,
the written-out dropout, the written-out attention on a CPU) is measured in docs/model.md.

Architectural switches (fields of GPTConfig), each changeable on its own:
    norm  "layernorm" | "rmsnorm"         LayerNorm (Ba et al. 2016) or RMSNorm (Zhang & Sennrich 2019)
    mlp   "relu" | "gelu" | "swiglu"      4x FFN with ReLU/GELU, or SwiGLU (Shazeer 2020)
    pos   "learned" | "rope"              learned absolute positions (GPT-2) or rotary (Su et al. 2021)
    bias  True | False                    biases in linear layers and norms
Two named presets put them together: "vanilla" is GPT-2 style (Radford et al. 2019), "modern" is
LLaMA/Qwen style (Touvron et al. 2023). The attention math is Vaswani et al. 2017.

The learning path in docs/learn/ builds the model up one part at a time, so each part can also be left
out: norm "none", mlp "none" (AttentionOnlyBlock), pos "none" (no position information), residual False
(BlockWithoutResidual; He et al. 2016 for what the residual connection buys), and n_layer 0 (the
embedding straight into the head: a bigram model). Each is chosen once, when the model is built, so
the standard Block reads as its formula.

References: nanoGPT model.py (Karpathy), nanochat gpt.py and engine.py (Karpathy), HF transformers'
modeling_llama.py and modeling_gpt2.py for the naming that export.py maps to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

NORMS = ("layernorm", "rmsnorm", "none")
MLPS = ("relu", "gelu", "swiglu", "none")
POSITIONS = ("learned", "rope", "none")
ATTENTIONS = ("auto", "fused", "manual")


@dataclass
class GPTConfig:
    vocab_size: int = 65  # number of token ids (65 characters in Tiny Shakespeare)
    block_size: int = 256  # longest context the model is trained on, in tokens
    n_layer: int = 6  # number of transformer blocks; 0: the embedding feeds the head directly (a bigram model)
    n_head: int = 6  # attention heads per block
    n_embd: int = 384  # width of the residual stream
    dropout: float = 0.2  # dropout on the embeddings and on every residual branch's output (training only)
    # dropout on the attention weights; None (every preset): the same as dropout. 0 saves a CPU the masks over
    # every (T, T) attention matrix, at a cost in val loss measured in docs/results.md (attn_dropout)
    attn_dropout: float | None = None
    bias: bool = True  # biases in linear layers and norms
    norm: str = "layernorm"  # "layernorm" | "rmsnorm" | "none" (every norm an identity)
    mlp: str = "relu"  # "relu" | "gelu" | "swiglu" | "none" (no feed-forward sublayer: attention only)
    pos: str = "learned"  # "learned" | "rope" | "none" (no position information at all)
    residual: bool = True  # add each sublayer's output to its input; False: the output replaces it
    rope_theta: float = 10000.0  # RoPE base: wavelengths run from 2*pi to about 2*pi*rope_theta
    tie_embeddings: bool = True  # the output head reuses the token embedding matrix
    mlp_hidden: int | None = None  # FFN hidden width; None: 4*n_embd, or about 8/3*n_embd for SwiGLU
    norm_eps: float = 1e-5  # added inside the norm's square root to avoid dividing by zero
    # "fused" (scaled_dot_product_attention) | "manual" (the formula, written out) | "auto": fused where the
    # model is built on a GPU; on a CPU written out, but fused where it runs eagerly without gradients (docs/model.md)
    attention: str = "auto"

    def __post_init__(self) -> None:
        for name, value, choices in (("norm", self.norm, NORMS), ("mlp", self.mlp, MLPS),
                                     ("pos", self.pos, POSITIONS), ("attention", self.attention, ATTENTIONS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        for name in ("vocab_size", "block_size", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.n_layer < 0:
            raise ValueError(f"n_layer must be 0 (no blocks) or more, not {self.n_layer}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"RoPE needs an even head size, but n_embd/n_head = {self.n_embd // self.n_head}")
        for name in ("dropout", "attn_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), not {value}")

    @property
    def attention_dropout(self) -> float:
        """The dropout applied to the attention weights: attn_dropout, or dropout where it is None."""
        return self.dropout if self.attn_dropout is None else self.attn_dropout

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def ffn_hidden(self) -> int:
        """Hidden width of the FFN. SwiGLU has three matrices instead of two, so its default width
        is 2/3 of 4*n_embd (rounded to a multiple of 32) to keep the parameter count matched."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return max(32, round(8 * self.n_embd / 3 / 32) * 32)
        return 4 * self.n_embd

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GPTConfig:
        """Build a config from a named preset, with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS: dict[str, dict] = {
    # GPT-2 era: LayerNorm, ReLU FFN (4x), learned positions, biases. 10.77M parameters.
    "vanilla": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=True,
                    norm="layernorm", mlp="relu", pos="learned"),
    # LLaMA/Qwen style: RMSNorm, SwiGLU (384 -> 1024 -> 384), RoPE, no biases. 10.65M parameters.
    "modern": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=False,
                   norm="rmsnorm", mlp="swiglu", pos="rope"),
    # CPU-sized modern model that learns recognisable Shakespeare in a few minutes on a laptop.
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=256, dropout=0.0, bias=False,
                  norm="rmsnorm", mlp="swiglu", pos="rope"),
}


class RMSNorm(nn.Module):
    """RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight. LayerNorm without the mean subtraction or bias:
    cheaper, and as good in practice. Computed in float32 for stability, as LLaMA does."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.type_as(x) * self.weight.type_as(x)


class Dropout(nn.Module):
    """Dropout (Srivastava et al. 2014): in training, zero each element with probability p and scale the
    rest by 1/(1-p), so every element keeps its expected value; in eval mode, the identity. What
    nn.Dropout does, written out because its mask is slower to draw on a CPU (docs/model.md).

    Each element's draw is a uniform integer u in [0, 2^15), dropped when u < p * 2^15: p is rounded to a
    multiple of 2^-15 (0.2 becomes 0.200012; at most 1 - 2^-15), and the kept ones are scaled by that
    rate's 1/(1-p). PyTorch's CPU generator is one sequential stream that costs the same per number
    whatever its width, so one int32 draw (31 random bits) serves two elements: bits 0-14 and bits 16-30,
    read as its two int16 halves once the others are cleared. The mask is made by int16 arithmetic, not as
    a bool tensor, whose conversion to the activations' dtype is slow on a CPU (docs/model.md)."""

    LEVELS = 2**15  # the 15 random bits each element gets
    BOTH_HALVES = 0x7FFF7FFF  # bits 0-14 and 16-30 of a draw: each int16 half uniform on [0, 2^15)

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {p}")
        self.threshold = min(round(p * self.LEVELS), self.LEVELS - 1)  # u < threshold: dropped
        self.scale = self.LEVELS / (self.LEVELS - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        draws = torch.empty((n + 1) // 2, dtype=torch.int32, device=x.device).random_()  # [0, 2^31)
        u = draws.bitwise_and_(self.BOTH_HALVES).view(torch.int16)[:n].view(x.shape)  # two elements a draw
        keep = (u - self.threshold).clamp_(-1, 0) + 1  # 1 where u >= threshold, 0 where dropped
        return x * (keep.to(x.dtype) * self.scale)


def make_norm(config: GPTConfig) -> nn.Module:
    """The norm chosen by config.norm."""
    if config.norm == "none":
        return nn.Identity()
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles pos * theta^(-2i/head_dim), each (length, head_dim/2), float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (length, head_dim/2)
    return angles.cos(), angles.sin()


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair of channels of x (B, nh, T, hs) by its position's angle.

    Pairing convention: channel i is paired with channel i + hs/2 (the "rotate half" layout used by
    LLaMA in Hugging Face transformers), so exported weights need no permutation. cos, sin: (T, hs/2).
    """
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class KVCache:
    """Keys and values of every layer for the tokens seen so far, so each new token costs one step.

    Storage for max_len positions is allocated on the first update (with the dtype and device of the
    keys, so it follows autocast), zeroed, and its shape never changes: an update writes the new keys
    and values at their positions and returns the whole storage, with the mask that hides every
    position a query may not see (later ones, and those not written yet). So every decode step runs
    the same shapes, which is what lets generate.py compile it once (the approach of PyTorch's gpt-fast).
    `pos` is how many positions are filled, a 0-d tensor on the model's device (a compiled step reads
    it without being compiled again for each value); GPT.forward advances it after the last layer.
    """

    def __init__(self, n_layer: int, max_len: int, device: torch.device | str = "cpu"):
        self.n_layer = n_layer
        self.max_len = max_len
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.k: list[torch.Tensor] = []  # n_layer tensors (B, nh, max_len, hs)
        self.v: list[torch.Tensor] = []

    def positions(self, n_new: int) -> torch.Tensor:
        """The positions (n_new,) the next n_new tokens go to."""
        return self.pos + torch.arange(n_new, device=self.pos.device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values (B, nh, T, hs) at positions pos .. pos+T-1; return the whole
        storage (B, nh, max_len, hs) for keys and values, and the (T, max_len) mask of what each new
        query may see."""
        if not self.k:
            shape = (*k.shape[:2], self.max_len, k.size(3))
            # zeros: the positions not written yet are masked, and must not hold NaN, which masking keeps
            self.k = [torch.zeros(shape, dtype=k.dtype, device=k.device) for _ in range(self.n_layer)]
            self.v = [torch.zeros(shape, dtype=v.dtype, device=v.device) for _ in range(self.n_layer)]
        positions = self.positions(k.size(2))
        self.k[layer].index_copy_(2, positions, k)
        self.v[layer].index_copy_(2, positions, v)
        return self.k[layer], self.v[layer], causal_mask(positions, self.max_len)

    def reset(self) -> None:
        """Forget every stored position (the storage is kept for reuse; what it holds is masked)."""
        self.pos.zero_()


def causal_mask(positions: torch.Tensor, n_key: int) -> torch.Tensor:
    """Boolean (len(positions), n_key) mask, True where attention is allowed: the query at position p
    may see keys 0 .. p.

    (SDPA's is_causal=True aligns the triangle top-left, which is only right when the queries start at
    position 0: wrong for tokens added after a cached prefix.)
    """
    return torch.arange(n_key, device=positions.device) <= positions[:, None]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              dropout: nn.Module | None = None) -> torch.Tensor:
    """Scaled dot-product attention, written out: softmax(q k^T / sqrt(hs) + M) v, where M is 0 where the
    mask allows and -inf where it forbids (softmax then gives those keys weight exactly 0).

    q (B, nh, T, hs); k, v (B, nh, Tk, hs); mask (T, Tk), True where query t may see key j, or None for
    the causal triangle of a sequence from position 0. Returns (B, nh, T, hs): each query's weighted sum
    of the values. dropout, if given, drops attention weights.
    """
    if mask is None:
        mask = causal_mask(torch.arange(q.size(2), device=q.device), k.size(2))
    scores = (q / math.sqrt(q.size(-1))) @ k.transpose(-2, -1)  # (B, nh, T, Tk); q scaled: fewer numbers than scores
    # + M, added rather than filled in: an addition's backward passes the gradient through at no cost
    scores = scores + torch.zeros_like(mask, dtype=scores.dtype).masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)  # each row sums to 1 over the keys it may see
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v  # (B, nh, T, hs)


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                    dropout_p: float) -> torch.Tensor:
    """What attention() computes, by PyTorch's fused kernel (scaled_dot_product_attention); mask None: the
    causal triangle. One query over bf16 or float16 keys on a CPU (an eager decode step) is computed in
    float32, which that kernel runs faster there, the casts included (docs/generation.md)."""
    dtype = q.dtype
    if q.device.type == "cpu" and q.size(2) == 1 and dtype in (torch.bfloat16, torch.float16):
        q, k, v = q.float(), k.float(), v.float()
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=mask is None)
    return y.to(dtype)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: softmax(q k^T / sqrt(hs) + mask) v, all heads batched."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = Dropout(config.attention_dropout)
        self.resid_dropout = Dropout(config.dropout)
        # The fused kernel computes the same as attention(). "auto" takes it where the model is built on a GPU,
        # as train.py and generate.py build it; on a CPU only where it runs eagerly without gradients
        # (evaluation, generation): the written-out formula trains faster there, and compiled it fuses with
        # what is around it (docs/model.md).
        on_gpu = torch.get_default_device().type != "cpu"
        self.fused = config.attention == "fused" or (config.attention == "auto" and on_gpu)
        self.fused_in_eager_inference = self.fused or config.attention == "auto"

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None,
                kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if rope is not None:
            q, k = apply_rotary_emb(q, *rope), apply_rotary_emb(k, *rope)
        mask = None  # without a cache: the causal triangle
        if kv_cache is not None:  # keys and values of every position so far; mask (T, max_len)
            k, v, mask = kv_cache.update(self.layer, k, v)
        eager_inference = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        fused = self.fused_in_eager_inference if eager_inference else self.fused
        if fused:
            dropout_p = self.attn_dropout.p if self.training else 0.0
            y = fused_attention(q, k, v, mask, dropout_p)
        else:
            y = attention(q, k, v, mask, self.attn_dropout)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The classic feed-forward network: Linear -> ReLU or GELU -> Linear, hidden width 4*n_embd."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ffn_hidden, bias=config.bias)
        self.act = nn.ReLU() if config.mlp == "relu" else nn.GELU()
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class SwiGLU(nn.Module):
    """SwiGLU feed-forward: y = W_proj (silu(W_gate x) * (W_up x)). A learned gate on the hidden units.

    W_gate and W_up are one matrix, w_gate_up (W_gate's rows first), as c_attn holds q, k and v: one
    product instead of two, which decodes one token at a time faster on a CPU (fewer, larger reads)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.w_gate_up = nn.Linear(config.n_embd, 2 * config.ffn_hidden, bias=config.bias)
        self.c_proj = nn.Linear(config.ffn_hidden, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)  # (B, T, ffn_hidden) each
        return self.dropout(self.c_proj(F.silu(gate) * up))


class Block(nn.Module):
    """One transformer block, pre-norm: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.mlp = None  # mlp "none": AttentionOnlyBlock, no feed-forward sublayer
        if config.mlp != "none":
            self.ln_2 = make_norm(config)
            self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x: torch.Tensor, rope, kv_cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class AttentionOnlyBlock(Block):
    """The learning path's block without a feed-forward network (mlp "none"): x + attn(ln_1(x))."""

    def forward(self, x: torch.Tensor, rope, kv_cache: KVCache | None) -> torch.Tensor:
        return x + self.attn(self.ln_1(x), rope, kv_cache)


class BlockWithoutResidual(Block):
    """The learning path's block without residual connections (residual False): each sublayer's output
    replaces the stream instead of being added to it, attn(ln_1(x)), then mlp(ln_2(x)) if there is one."""

    def forward(self, x: torch.Tensor, rope, kv_cache: KVCache | None) -> torch.Tensor:
        x = self.attn(self.ln_1(x), rope, kv_cache)
        if self.mlp is not None:
            x = self.mlp(self.ln_2(x))
        return x


def make_block(config: GPTConfig, layer: int) -> Block:
    """The block config asks for: the standard Block, or a learning-path variant with a part removed."""
    if not config.residual:
        return BlockWithoutResidual(config, layer)
    if config.mlp == "none":
        return AttentionOnlyBlock(config, layer)
    return Block(config, layer)


class GPT(nn.Module):
    """A decoder-only transformer language model; its parts are chosen by a GPTConfig."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=nn.ModuleList([make_block(config, layer) for layer in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        if config.pos == "learned":
            self.transformer.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos == "rope":  # RoPE tables: derived from the config, so not saved in checkpoints
            cos, sin = rope_tables(config.head_dim, config.block_size, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # one matrix, two uses
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 initialisation: N(0, 0.02) weights, zero biases, unit norms. Each residual projection
        (c_proj) is scaled down by 1/sqrt(2*n_layer) so the residual stream's variance does not grow
        with depth (two residual additions per block)."""
        residual_std = 0.02 / math.sqrt(max(1, 2 * self.config.n_layer))  # n_layer 0 has no residual projections
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith("c_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)):
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Number of parameters; a tied embedding/head matrix counts once."""
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self) -> KVCache:
        """An empty KV cache for this model, holding up to block_size positions, on the model's device."""
        return KVCache(self.config.n_layer, self.config.block_size, self.lm_head.weight.device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) for token ids idx (B, T), and the mean cross-entropy if targets are given.

        With a kv_cache, idx holds only the new tokens: they sit at positions kv_cache.pos onwards,
        attend to every cached position, and are added to the cache.
        """
        B, T = idx.shape
        # A compiled decode step checks only T: reading the cache's position back would break its graph
        # (generate.py never lets the cache overflow).
        start = 0 if kv_cache is None or torch.compiler.is_compiling() else int(kv_cache.pos)
        if start + T > self.config.block_size:
            raise ValueError(f"{start + T} positions exceed the model's block_size of {self.config.block_size}")
        positions = torch.arange(T, device=idx.device) if kv_cache is None else kv_cache.positions(T)
        x = self.transformer.wte(idx)  # (B, T, C)
        rope = None
        if self.config.pos == "learned":
            x = x + self.transformer.wpe(positions)
        elif self.config.pos == "rope":
            rope = (self.rope_cos[positions], self.rope_sin[positions])  # (T, hs/2) each
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, rope, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss
