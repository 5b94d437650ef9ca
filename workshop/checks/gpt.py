"""Exercise 7's check: the whole GPT against model.py's GPT with the same weights (naming the first part
whose output differs, block by block), the tied head, and GPT-2's initialisation measured on a larger model."""

from __future__ import annotations

import math
from types import ModuleType

import torch
import torch.nn as nn
from torch.nn import functional as F

from model import GPT
from workshop.checks.common import build, config, named, randomise, recognise, same_shape
from workshop.tutor import Failure, Mistake, _mismatch, call, compare, require

CONFIG = config()
INIT_CONFIG = config(vocab_size=65, block_size=32, n_layer=4, n_head=4, n_embd=64)  # enough weights to measure


def reference() -> GPT:
    return randomise(GPT(CONFIG)).double().eval()


def loss_of(logits, targets):
    return None if targets is None else F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1),
                                                        ignore_index=-1)


class WithoutPositions(GPT):
    def forward(self, idx, targets=None, kv_cache=None):
        x = self.transformer.drop(self.transformer.wte(idx))
        for block in self.transformer.h:
            x = block(x, None, None)
        logits = self.lm_head(self.transformer.ln_f(x))
        return logits, loss_of(logits, targets)


class WithoutFinalNorm(GPT):
    def forward(self, idx, targets=None, kv_cache=None):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.size(1)))
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, None, None)
        logits = self.lm_head(x)
        return logits, loss_of(logits, targets)


class TiedByCopying(GPT):
    def __init__(self, config):
        super().__init__(config)
        self.lm_head.weight = nn.Parameter(self.transformer.wte.weight.detach().clone())


class ResidualProjectionsNotScaled(GPT):
    def init_weights(self):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)


class ScaledByTheNumberOfLayers(GPT):
    def init_weights(self):
        super().init_weights()
        for name, module in self.named_modules():
            if name.endswith("c_proj"):
                nn.init.normal_(module.weight, std=0.02 / math.sqrt(self.config.n_layer))


MISTAKES = (
    Mistake("leave out the position embeddings",
            "x = wte(idx) + wpe(torch.arange(T)): without wpe every position looks the same to attention",
            WithoutPositions),
    Mistake("leave out the final norm ln_f",
            "the blocks are pre-norm, so the stream leaving the last block is not normalised: lm_head(ln_f(x))",
            WithoutFinalNorm, "Radford et al. 2019, Language Models are Unsupervised Multitask Learners, "
            "section 2.3 (an additional layer normalization after the final self-attention block)"),
    Mistake("tie the head to the embedding by copying the matrix instead of sharing it",
            "self.lm_head.weight = self.transformer.wte.weight makes one Parameter with two uses; a copy "
            "starts equal and drifts apart in training (and doubles the parameters)", TiedByCopying,
            "Press & Wolf 2017, Using the Output Embedding to Improve Language Models, arXiv:1608.05859"),
    Mistake("leave the residual projections (c_proj) at std 0.02",
            "each c_proj adds to the residual stream, two per block: its std is 0.02 / sqrt(2 * n_layer)",
            ResidualProjectionsNotScaled,
            "Radford et al. 2019, Language Models are Unsupervised Multitask Learners, section 2.3"),
    Mistake("scale c_proj by 1/sqrt(n_layer) instead of 1/sqrt(2 * n_layer)",
            "every block adds to the residual stream twice (attention and MLP), so there are 2 * n_layer "
            "residual projections", ScaledByTheNumberOfLayers,
            "Radford et al. 2019, section 2.3: 1/sqrt(N) with N the number of residual layers, two per block"),
)


def parts(model: nn.Module) -> list[str]:
    """The names of the parts a forward pass runs through, in order."""
    return ["transformer.wte", "transformer.wpe", *(f"transformer.h.{i}" for i in range(CONFIG.n_layer)),
            "transformer.ln_f", "lm_head"]


def outputs_of(model: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each part of model outputs on idx (the parts it has)."""
    seen, hooks = {}, []
    for name in parts(model):
        try:
            part = model.get_submodule(name)
        except AttributeError:
            continue
        hooks.append(part.register_forward_hook(lambda m, i, out, name=name: seen.setdefault(name, out)))
    try:
        model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def first_divergence(learner: nn.Module, idx: torch.Tensor) -> None:
    """Raise a Failure naming the first part whose output differs from model.py's on the same weights."""
    got, expected = outputs_of(learner, idx), outputs_of(reference(), idx)
    for name in parts(learner):
        if name in got:
            reason = _mismatch(got[name], expected[name], f"the output of {name}", None, None)
            if reason:
                raise Failure(f"the first part whose output differs from model.py's is {name}: {reason}")


def check_init(cls: type) -> None:
    torch.manual_seed(0)
    model = call(cls, INIT_CONFIG)
    residual_std = 0.02 / math.sqrt(2 * INIT_CONFIG.n_layer)
    for name, p in model.named_parameters():
        p = p.detach().double()
        if p.dim() == 1:
            want = 1.0 if name.endswith("weight") and ".ln" in f".{name}" else 0.0
            if not torch.allclose(p, torch.full_like(p, want)):
                what = "norm's weight" if want else "bias"
                raise Failure(f"after init_weights, {name} should be all {want:g} (every {what}), but its mean "
                              f"is {p.mean().item():.4g}")
            continue
        want = residual_std if name.endswith("c_proj.weight") else 0.02
        std = p.std().item()
        if abs(std / want - 1) > 0.1 or abs(p.mean().item()) > 0.1 * want + 3 * want / math.sqrt(p.numel()):
            if name.endswith("c_proj.weight") and abs(std / 0.02 - 1) < 0.1:
                raise named(MISTAKES[3], f"the std of {name} after init_weights ({std:.4f})")
            if name.endswith("c_proj.weight") and abs(std / (0.02 / math.sqrt(INIT_CONFIG.n_layer)) - 1) < 0.1:
                raise named(MISTAKES[4], f"the std of {name} after init_weights ({std:.4f})")
            raise Failure(f"after init_weights, {name} should be N(0, {want:.4g}^2), but its std is {std:.4g} "
                          f"and its mean {p.mean().item():.3g}")


def check(module: ModuleType) -> None:
    """GPT with model.py's weights gives model.py's logits and loss (or the check names the first part that
    differs), its head shares the embedding's Parameter, and init_weights is GPT-2's."""
    cls = require(module, "GPT", kind="class", signature="(config)")
    if not callable(getattr(cls, "init_weights", None)):
        raise Failure("write the method GPT.init_weights(self): GPT-2's initialisation, called by __init__")
    learner = build(cls, reference(), "GPT", CONFIG)
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=generator)
    targets = torch.randint(0, CONFIG.vocab_size, (2, 9), generator=generator)
    targets[0, :3] = -1
    expected = reference()(idx, targets)
    got = call(learner, idx, targets, returns=tuple)
    if len(got) != 2:
        raise Failure(f"GPT.forward should return (logits, loss), got {len(got)} values")
    same_shape(got[0], expected[0], "the logits")
    recognise(got, expected, MISTAKES, lambda m: build(m.wrong, reference(), "", CONFIG)(idx, targets),
              "the logits and the loss")
    if _mismatch(got[0], expected[0], "", None, None):
        first_divergence(learner, idx)
    compare(got, expected, "(logits, loss)")
    if call(learner, idx)[1] is not None:
        raise Failure("without targets, GPT.forward should return (logits, None)")
    if learner.lm_head.weight is not learner.transformer.wte.weight:
        raise named(MISTAKES[2], "lm_head.weight, a Parameter of its own,")
    check_init(cls)
