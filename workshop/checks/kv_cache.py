"""Exercise 12's check: causal_mask and KVCache against model.py's, then the claim a cache must keep: decoding
with it through model.py's GPT gives the full forward's logits at every step, after a prefill of several
tokens and one token at a time."""

from __future__ import annotations

from types import ModuleType

import torch

from model import GPT, KVCache, causal_mask
from workshop.checks.common import config, mistakes_for, randn, randomise, recognise, replaces
from workshop.tutor import Failure, Mistake, call, compare, diagnose, require

CONFIG = config(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)
PREFILL, STEPS = 4, 6


@replaces("causal_mask")
def aligned_top_left(positions, n_key):
    return torch.arange(n_key) <= torch.arange(len(positions))[:, None]


@replaces("causal_mask")
def strictly_before(positions, n_key):
    return torch.arange(n_key) < positions[:, None]


@replaces("KVCache")
class IgnoresItsOffset(KVCache):
    def update(self, layer, k, v):
        self.pos, pos = torch.zeros_like(self.pos), self.pos
        try:
            return super().update(layer, k, v)
        finally:
            self.pos = pos


@replaces("KVCache")
class WritesOnePositionLate(KVCache):
    def update(self, layer, k, v):
        self.pos = self.pos + 1
        try:
            return super().update(layer, k, v)
        finally:
            self.pos = self.pos - 1


@replaces("KVCache")
class SeesUnwrittenSlots(KVCache):
    def update(self, layer, k, v):
        keys, values, mask = super().update(layer, k, v)
        return keys, values, torch.ones_like(mask)


@replaces("KVCache")
class AdvancesInUpdate(KVCache):
    def update(self, layer, k, v):
        result = super().update(layer, k, v)
        self.pos = self.pos + k.size(2)
        return result


MISTAKES = (
    Mistake("align the triangle top-left, as if the queries started at position 0",
            "a query at position p sees keys 0 .. p: compare the keys with the positions given, not with "
            "arange(T) (SDPA's is_causal=True has the same top-left alignment)", aligned_top_left,
            "PyTorch docs, scaled_dot_product_attention (is_causal aligns top-left for non-square masks): "
            "https://pytorch.org/docs/stable/generated/torch.nn.functional.scaled_dot_product_attention.html"),
    Mistake("hide each query's own position (j < p instead of j <= p)",
            "a query sees itself: j <= p (with < the first query sees nothing, and its softmax is NaN)",
            strictly_before),
    Mistake("write every update at positions 0 .. T-1, ignoring the cache's position",
            "new keys go to positions pos .. pos+T-1 (self.positions(T)): written at 0, each token overwrites "
            "the first and the mask no longer describes what is stored", IgnoresItsOffset),
    Mistake("write the new keys one position too late (from pos + 1)",
            "the first token goes to position 0: positions are pos + torch.arange(T), and the mask uses the same",
            WritesOnePositionLate),
    Mistake("let the queries see every slot of the storage",
            "the storage is preallocated and zeroed: return causal_mask(positions, max_len), which hides the "
            "later positions and the slots not written yet", SeesUnwrittenSlots),
    Mistake("advance the position in update, once per layer",
            "GPT.forward adds T to pos after the last layer; advanced in update, every layer after the first "
            "writes at the wrong place", AdvancesInUpdate, "https://github.com/skyzh/tiny-llm/pull/46 "
            "(a cache offset advanced by the wrong amount)"),
)


def reference_model() -> GPT:
    return randomise(GPT(CONFIG)).double().eval()


def decode(cls: type, model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The logits at every position of idx, computed with a cache of class cls: a prefill, then one token
    at a time."""
    cache = cls(CONFIG.n_layer, CONFIG.block_size, "cpu")
    with torch.no_grad():
        rows = [model(idx[:, :PREFILL], kv_cache=cache)[0]]
        for t in range(PREFILL, idx.size(1)):
            rows.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    return torch.cat(rows, dim=1)


def check(module: ModuleType) -> None:
    """causal_mask is model.py's at an offset; KVCache.update stores and returns what model.py's does; and
    decoding through the cache gives the full forward's logits at every step."""
    mask_fn = require(module, "causal_mask", signature="(positions, n_key)")
    cls = require(module, "KVCache", kind="class", signature="(n_layer, max_len, device='cpu')")
    for positions, n_key in ((torch.tensor([3, 4, 5]), 8), (torch.arange(4), 4)):
        diagnose(call(mask_fn, positions, n_key), causal_mask(positions, n_key), mistakes_for(MISTAKES, "causal_mask"),
                 positions, n_key, what=f"causal_mask({positions.tolist()}, {n_key})")

    mine = mistakes_for(MISTAKES, "KVCache")
    k, v = randn(1, 2, 3, 4, seed=16), randn(1, 2, 3, 4, seed=17)

    def first_updates(kind):
        cache = kind(2, 8, "cpu")
        first = cache.update(0, k, v)
        cache.pos += 3  # as GPT.forward does after the last layer
        return first, cache.update(0, k[:, :, :1], v[:, :, :1])

    cache = call(cls, 2, 8, "cpu")
    got = (call(cache.update, 0, k, v, returns=tuple),)
    cache.pos += 3
    got = (*got, call(cache.update, 0, k[:, :, :1], v[:, :, :1], returns=tuple))
    expected = first_updates(KVCache)
    what = "(keys, values, mask) from update, for 3 tokens and then 1"
    recognise(got, expected, mine, lambda m: first_updates(m.wrong), what)
    compare(got, expected, what)

    model = reference_model()
    idx = torch.randint(0, CONFIG.vocab_size, (2, PREFILL + STEPS), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(idx)[0]
    got = call(decode, cls, model, idx)
    what = f"the logits decoded with the cache (a prefill of {PREFILL} tokens, then one at a time)"
    recognise(got, expected, mine, lambda m: decode(m.wrong, reference_model(), idx), what)
    wrong = ~torch.isclose(got, expected, atol=1e-10, rtol=1e-8).all(-1)[0]
    if wrong.any():
        raise Failure(f"{what} differ from the full forward's from position {int(wrong.nonzero()[0])}: cached "
                      f"decoding must equal the full forward at every step")
