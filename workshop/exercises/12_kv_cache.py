"""
Exercise 12: the KV cache.

Read first: [chapter 10, the KV cache](../../docs/learn/10-kv-cache.md). Check with
`uv run workshop.py check 12`.

Write model.py's causal_mask (which keys each query may see, wherever the queries start) and KVCache
(preallocated keys and values of every layer, written at the cache's position). model.py's GPT.forward
uses your cache as it uses its own: it asks positions(T), calls update in every layer, and advances pos.
"""

import torch


def causal_mask(positions: torch.Tensor, n_key: int) -> torch.Tensor:
    """Boolean (len(positions), n_key), True where the query at position p may see key j: j <= p.

    positions (T,) int64 are the queries' positions, which start at the cache's position, not at 0 (so the
    triangle is not torch.tril's top-left one unless T == n_key and the queries start at 0).
    """
    raise NotImplementedError("compare every key index with every query's position")


class KVCache:
    """Keys and values of n_layer layers for up to max_len positions.

    __init__(n_layer, max_len, device="cpu"): pos = torch.zeros((), dtype=torch.long, device=device), how
    many positions are filled (GPT.forward adds T to it after the last layer: update never changes it);
    the storage is allocated on the first update: for each layer, zeros (B, nh, max_len, hs) for k and v.

    positions(n_new) -> (n_new,) the positions pos .. pos + n_new - 1 the next tokens go to.
    update(layer, k, v): k, v (B, nh, T, hs); write them at positions pos .. pos+T-1 of that layer's storage
    and return (all keys (B, nh, max_len, hs), all values, causal_mask(positions, max_len)): the mask hides
    later positions and the slots not written yet.
    reset(): forget every position (pos back to 0).
    """

    def __init__(self, n_layer: int, max_len: int, device: torch.device | str = "cpu"):
        raise NotImplementedError("keep n_layer and max_len, pos as a 0-d long tensor, empty lists k and v")

    def positions(self, n_new: int) -> torch.Tensor:
        raise NotImplementedError("pos + torch.arange(n_new)")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError("allocate on the first call, write k and v at their positions, return the mask")

    def reset(self) -> None:
        raise NotImplementedError("pos back to 0")
