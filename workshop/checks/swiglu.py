"""Exercise 10's check: SwiGLU against model.py's SwiGLU with the same weights (gate rows first)."""

from __future__ import annotations

from types import ModuleType

import torch
from torch.nn import functional as F

from model import SwiGLU
from workshop.checks.common import build, config, randn, randomise, recognise, same_shape
from workshop.tutor import Mistake, call, compare, require

CONFIG = config(mlp="swiglu", bias=False, mlp_hidden=20)


def reference() -> SwiGLU:
    return randomise(SwiGLU(CONFIG)).double().eval()


class UpRowsFirst(SwiGLU):
    def forward(self, x):
        up, gate = self.w_gate_up(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate) * up))


class SigmoidGate(SwiGLU):
    def forward(self, x):
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(torch.sigmoid(gate) * up))


class SiluOfTheProduct(SwiGLU):
    def forward(self, x):
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.dropout(self.c_proj(F.silu(gate * up)))


MISTAKES = (
    Mistake("take the up rows first and the gate rows second from w_gate_up",
            "w_gate_up's first ffn_hidden outputs are the gate: gate, up = self.w_gate_up(x).chunk(2, dim=-1)",
            UpRowsFirst),
    Mistake("gate with a sigmoid instead of silu",
            "sigmoid(gate) * up is the original GLU; SwiGLU's gate is silu(gate) = gate * sigmoid(gate)",
            SigmoidGate, "Shazeer 2020, GLU Variants Improve Transformer, arXiv:2002.05202"),
    Mistake("apply silu to the product instead of to the gate alone",
            "only the gate goes through silu; the up projection multiplies it as it is: silu(gate) * up",
            SiluOfTheProduct, "Shazeer 2020, GLU Variants Improve Transformer, arXiv:2002.05202 (equation 5)"),
)


def check(module: ModuleType) -> None:
    """SwiGLU with model.py's weights computes model.py's SwiGLU."""
    cls = require(module, "SwiGLU", kind="class", signature="(config)")
    learner = build(cls, reference(), "SwiGLU", CONFIG)
    x = randn(2, 6, CONFIG.n_embd, seed=12)
    expected = reference()(x)
    got = call(learner, x)
    same_shape(got, expected, "the output")
    recognise(got, expected, MISTAKES, lambda m: build(m.wrong, reference(), "", CONFIG)(x))
    compare(got, expected, "the output")
