"""Exercise 11's check: rope_tables and apply_rotary_emb against model.py's (rotate-half pairing), with
RoPE's invariants: norms kept, and q . k a function of the distance between the positions only."""

from __future__ import annotations

from types import ModuleType

import torch

from model import apply_rotary_emb, rope_tables
from workshop.checks.common import mistakes_for, randn, recognise, replaces, same_shape
from workshop.tutor import Failure, Mistake, call, compare, diagnose, require

HEAD_DIM, LENGTH, THETA = 8, 12, 10000.0


@replaces("rope_tables")
def positions_from_one(head_dim, length, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(1, length + 1, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


@replaces("rope_tables")
def frequencies_without_the_two(head_dim, length, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(head_dim // 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


@replaces("apply_rotary_emb")
def interleaved_pairs(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)


@replaces("apply_rotary_emb")
def rotated_the_wrong_way(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


MISTAKES = (
    Mistake("number the positions from 1 instead of 0",
            "the first token sits at position 0, whose angles are all 0 (cos 1, sin 0): torch.arange(length)",
            positions_from_one),
    Mistake("use theta^(-i/head_dim) for pair i instead of theta^(-2i/head_dim)",
            "pair i's frequency is theta^(-2i/head_dim): torch.arange(0, head_dim, 2) / head_dim",
            frequencies_without_the_two, "Su et al. 2021, RoFormer, arXiv:2104.09864 (theta_i = 10000^(-2(i-1)/d))"),
    Mistake("pair neighbouring channels (2i, 2i+1) where the rotate-half pairing (i, i + hs/2) is asked",
            "model.py pairs channel i with channel i + hs/2: x1 = x[..., :hs//2], x2 = x[..., hs//2:]; the "
            "interleaved pairing is Meta's original LLaMA code, and the two need the weights permuted",
            interleaved_pairs, "https://github.com/huggingface/transformers/issues/25199"),
    Mistake("rotate by minus the angle",
            "the rotation is (x1 cos - x2 sin, x2 cos + x1 sin); swapping the signs rotates the other way",
            rotated_the_wrong_way),
)


def check(module: ModuleType) -> None:
    """rope_tables is model.py's; apply_rotary_emb keeps norms, makes q . k depend only on the distance,
    and is model.py's rotation with the rotate-half pairing."""
    tables = require(module, "rope_tables", signature="(head_dim, length, theta)")
    rotate = require(module, "apply_rotary_emb", signature="(x, cos, sin)")
    expected = rope_tables(HEAD_DIM, LENGTH, THETA)
    got = call(tables, HEAD_DIM, LENGTH, THETA, returns=tuple)
    for table, want, name in zip(got, expected, ("cos", "sin"), strict=False):
        same_shape(table, want, f"the {name} table")
    diagnose(got, expected, mistakes_for(MISTAKES, "rope_tables"), HEAD_DIM, LENGTH, THETA, what="(cos, sin)")

    cos, sin = (t.double() for t in expected)
    x = randn(2, 3, LENGTH, HEAD_DIM, seed=13)
    expected = apply_rotary_emb(x, cos, sin)
    got = call(rotate, x, cos, sin)
    same_shape(got, expected, "the rotated x")
    mine = mistakes_for(MISTAKES, "apply_rotary_emb")
    recognise(got, expected, mine, lambda m: m.wrong(x, cos, sin), "the rotated x")
    if not torch.allclose(got.norm(dim=-1), x.norm(dim=-1)):
        raise Failure("a rotation keeps each vector's length, but the rotated x's norms differ from x's")
    q = randn(1, 1, 1, HEAD_DIM, seed=14).expand(1, 1, LENGTH, HEAD_DIM)
    k = randn(1, 1, 1, HEAD_DIM, seed=15).expand(1, 1, LENGTH, HEAD_DIM)
    dots = call(rotate, q, cos, sin)[0, 0] @ call(rotate, k, cos, sin)[0, 0].T  # (LENGTH, LENGTH)
    for distance in range(LENGTH):
        diagonal = dots.diagonal(-distance)
        if not torch.allclose(diagonal, diagonal[:1].expand_as(diagonal)):
            raise Failure(f"the same query and key, {distance} positions apart, give different dot products at "
                          f"different positions: q . k must depend only on the distance")
    compare(got, expected, "the rotated x")
