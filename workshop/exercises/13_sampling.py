"""
Exercise 13: sampling the next token: temperature, top-k, top-p.

Read first: [chapter 11, sampling](../../docs/learn/11-sampling.md). Check with `uv run workshop.py check 13`.

Write generate.py's filter_logits (what the rules keep, as logits) and sample_next (one draw from it).
"""

import torch
from torch.nn import functional as F  # noqa: F401


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """The logits (B, vocab) the next token is drawn from: divided by the temperature, with -inf on every
    token the rules drop. (generate.py subtracts each row's maximum first: the softmax is unchanged.)

    In this order: temperature (logits / temperature; 0 means greedy: keep only the most likely token);
    top_k keeps exactly the k most likely tokens; top_p keeps the smallest set of the most likely tokens
    whose probability (after the temperature) reaches top_p: a token is kept when the probability of the
    tokens ranked above it is still below top_p, so the token that crosses the threshold stays.
    """
    raise NotImplementedError("divide by the temperature, then drop what top-k and top-p leave out")


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token (B, 1) int64 for logits (B, vocab): the argmax at temperature 0, else one draw,
    torch.multinomial(softmax(filter_logits(...)), 1, generator=generator)."""
    raise NotImplementedError("filter the logits, then the argmax or one draw from their softmax")
