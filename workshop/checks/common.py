"""What every exercise's check shares beyond the tutor: a small float64 model config, the project's weights
loaded into the learner's module, naming a known mistake before an invariant's own message, and which part
of a multi-part exercise a mistake replaces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from model import GPTConfig
from workshop.tutor import Failure, Mistake, _mistake_failure, call, compare, matches


def config(**overrides: Any) -> GPTConfig:
    """A model small enough to check in milliseconds: 2 layers, 3 heads of 4 channels, 16 positions, written-out
    attention (the formula the exercises write), no dropout unless asked."""
    fields = dict(vocab_size=11, block_size=16, n_layer=2, n_head=3, n_embd=12, dropout=0.0, bias=True,
                  norm="layernorm", mlp="relu", pos="learned", attention="manual")
    return GPTConfig(**{**fields, **overrides})


def replaces(part: str) -> Callable[[Callable], Callable]:
    """Mark a wrong variant with the name of the part it stands in for (in a multi-part exercise)."""
    def mark(wrong: Callable) -> Callable:
        wrong.replaces = part
        return wrong
    return mark


def part_of(mistake: Mistake) -> str | None:
    """The name of the learner's function or class a mistake's wrong variant stands in for."""
    return getattr(mistake.wrong, "replaces", None)


def mistakes_for(mistakes: tuple[Mistake, ...], part: str) -> tuple[Mistake, ...]:
    """The mistakes of one part of an exercise."""
    return tuple(m for m in mistakes if part_of(m) == part)


def named(mistake: Mistake, what: str = "the output") -> Failure:
    """The Failure that names a known mistake, worded as every exercise words it (the tutor's one way)."""
    return _mistake_failure(mistake, what)


def recognise(got: Any, expected: Any, mistakes: tuple[Mistake, ...], produce: Callable[[Mistake], Any],
              what: str = "the output", atol: float | None = None, rtol: float | None = None) -> None:
    """Raise the Failure naming the first mistake whose output (produce(mistake)) got matches, when got is
    wrong: run before an invariant's own message, so that a known mistake is named rather than described."""
    if matches(got, expected, atol, rtol):
        return
    for mistake in mistakes:
        try:
            wrong = produce(mistake)
        except Exception:  # a variant that cannot run on these inputs does not match
            continue
        if matches(got, wrong, atol, rtol) and not matches(expected, wrong, atol, rtol):
            raise named(mistake, what)


def call_or_name(fn: Callable, mistakes: tuple[Mistake, ...], *args: Any, what: str = "the output",
                 **kwargs: Any) -> Any:
    """call(fn, ...), except that output with NaN or inf (which call refuses) is first matched against the
    mistakes that produce the same NaN or inf, so that a mask hiding a whole row, say, is named."""
    try:
        return call(fn, *args, **kwargs)
    except Failure as failure:
        if "NaN" not in str(failure) and " inf " not in str(failure):
            raise
        try:
            got = fn(*clone(args), **clone(kwargs))
        except Exception:
            raise failure from None
        for mistake in mistakes:
            try:
                wrong = mistake.wrong(*clone(args), **clone(kwargs))
            except Exception:
                continue
            if matches(got, wrong):
                raise named(mistake, what) from None
        raise


def clone(value: Any) -> Any:
    """A deep copy of tensors (and tuples, lists and dicts of them), so a variant cannot touch the inputs."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (tuple, list)):
        return type(value)(clone(v) for v in value)
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    return value


def same_shape(got: Any, expected: torch.Tensor, what: str) -> None:
    """The contract before the values: a tensor of the expected shape and dtype."""
    if not isinstance(got, torch.Tensor):
        compare(got, expected, what)
    if got.shape != expected.shape:
        raise Failure(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}")
    if got.dtype != expected.dtype:
        raise Failure(f"{what}: expected dtype {expected.dtype}, got {got.dtype} (keep the input's dtype)")


def load_weights(module: nn.Module, reference: nn.Module, what: str) -> nn.Module:
    """module with reference's weights, in float64 and eval mode. Failure if its parameters are not named
    and shaped as the reference's (which is what lets model.py's weights load into it)."""
    if not isinstance(module, nn.Module):
        raise Failure(f"{what} should be a torch.nn.Module (subclass nn.Module and call super().__init__())")
    got = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    want = {name: tuple(t.shape) for name, t in reference.state_dict().items()}
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise Failure(f"{what}'s parameters are not named as model.py's: missing {', '.join(missing) or 'none'}; "
                      f"not in model.py: {', '.join(extra) or 'none'} (model.py's names let its weights load)")
    for name, shape in want.items():
        if got[name] != shape:
            raise Failure(f"{what}.{name} has shape {got[name]}, but model.py's has {shape}")
    module.load_state_dict(reference.state_dict())
    return module.double().eval()


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter drawn from N(0, 0.5) (norm gains around 1): weights where a forgotten bias, gain or
    scale shows, unlike GPT-2's init, where biases are 0 and gains 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype) * 0.5
            p.copy_(noise + 1 if name.endswith("weight") and p.dim() == 1 else noise)
    return module


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    """A float64 tensor of N(0, scale^2) values, the same for the same seed."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def build(cls: type, reference: nn.Module, what: str, *args: Any) -> nn.Module:
    """cls(*args) with the reference's weights, in float64 and eval mode (the learner's class through call,
    so that an exception in its __init__ is one Failure naming it)."""
    return load_weights(call(cls, *args), reference, what)
