"""
Muon, written out: the optimizer train.py uses with --optimizer muon.

Muon (Jordan 2024, "Muon: An optimizer for hidden layers in neural networks") keeps a momentum of each
weight matrix's gradient, like SGD, but steps along the momentum *orthogonalised*: the matrix U V^T of its
SVD U S V^T, every singular value set to 1. A raw gradient is dominated by a few directions (its largest
singular values); the orthogonalised one moves the weights as far along every direction it has, so rare
directions learn as fast as common ones. orthogonalize finds U V^T without an SVD, with a few matrix
products (a Newton-Schulz iteration), cheap enough to run every step.

Only the 2-D matrices inside the blocks (attention and MLP weights) take Muon: orthogonalisation is about
a matrix mapping one hidden space to another. Embeddings are lookup tables (one row per token, each
updated only when its token appears), and the tied embedding is also the output head; vectors (norm gains,
biases) have no singular values. Those stay on AdamW, as in modded-nanogpt, nanochat and the paper.

Every orthogonalised update has the same RMS per element whatever its gradient's size, about
1/sqrt(max(rows, cols)), so Muon scales it by 0.2 * sqrt(max(rows, cols)): an RMS of about 0.2, what AdamW's
updates typically have (Liu et al. 2025, Moonshot AI, "Muon is Scalable for LLM Training"). That is what
lets one learning rate and one weight decay serve both kinds of parameters.

MuonAdamW is one torch.optim.Optimizer whose param groups each say which algorithm steps them, so the
learning-rate schedule, the gradient scaler and checkpoints (state_dict) treat it like any optimizer.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adamw import adamw  # the update torch.optim.AdamW makes, as a function

OPTIMIZERS = ("adamw", "muon")  # train.py --optimizer


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About U V^T for matrix = U S V^T: a quintic Newton-Schulz iteration, x <- a x + b (x x^T) x +
    c (x x^T)^2 x, which pushes every singular value of x towards 1. Its coefficients (Jordan 2024) make
    small singular values grow as fast as possible, at the price of landing anywhere from about 0.7 to 1.2
    rather than on 1: Muon trains as well with that (Jordan 2024), in 5 steps instead of dozens.
    matrix may also be a batch of same-shaped matrices (n, rows, cols), each orthogonalised on its own."""
    a, b, c = 3.4445, -4.7750, 2.0315
    # bfloat16, as modded-nanogpt does: the update needs singular values near 1, not exact ones, so the
    # rounding costs nothing that matters, and on a GPU bfloat16 matrix products run several times faster.
    x = matrix.bfloat16()
    tall = matrix.size(-2) > matrix.size(-1)
    if tall:  # work on the wide shape, so x @ x.T is the smaller of the two Gram matrices
        x = x.mT
    # The spectral norm is at most the Frobenius norm: dividing by it puts every singular value in [0, 1],
    # where the iteration converges.
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if tall:
        x = x.mT
    return x.to(matrix.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """Muon for the param groups with "algorithm": "muon" (2-D matrices only), AdamW for those with
    "algorithm": "adamw". Every group takes its own "lr" and "weight_decay" (as the schedule sets them);
    beta2 is AdamW's; fused asks for PyTorch's fused AdamW kernel."""

    def __init__(self, param_groups: list[dict], lr: float, weight_decay: float, beta2: float,
                 fused: bool = False):
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=0.95, betas=(0.9, beta2), eps=1e-8, fused=fused)
        super().__init__(param_groups, defaults)
        for group in self.param_groups:
            if group.get("algorithm") not in ("muon", "adamw"):
                raise ValueError(f"each param group needs \"algorithm\": \"muon\" or \"adamw\", not "
                                 f"{group.get('algorithm')!r}")
            if group["algorithm"] == "muon" and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon steps 2-D matrices only; put vectors in an \"adamw\" group")

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["algorithm"] == "muon":
                self.muon_step(params, group)
            else:
                self.adamw_step(params, group)

    def muon_step(self, params: list[torch.Tensor], group: dict) -> None:
        """Nesterov momentum, orthogonalised, scaled to AdamW's RMS; weight decay decoupled as AdamW's. The
        matrices of one shape (the same layer in every block) are orthogonalised together, as one batch: a
        few large products instead of many small ones."""
        momentum, lr = group["momentum"], group["lr"]
        by_shape: dict[torch.Size, list[torch.Tensor]] = {}
        for p in params:
            by_shape.setdefault(p.shape, []).append(p)
        for shape, same_shape in by_shape.items():
            nesterov = []
            for p in same_shape:
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)  # a moving average of the gradients
                nesterov.append(p.grad.lerp(buffer, momentum))  # Nesterov: a step further along the momentum
            updates = orthogonalize(torch.stack(nesterov))
            for p, update in zip(same_shape, updates, strict=True):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(shape)))

    def adamw_step(self, params: list[torch.Tensor], group: dict) -> None:
        """PyTorch's own AdamW, its state kept where torch.optim.AdamW keeps it (and as its kernels need it)."""
        for p in params:
            state = self.state[p]
            if not state:
                # The step count lives on the CPU unless the fused kernel reads it on the device.
                state["step"] = torch.zeros((), device=p.device if group["fused"] else "cpu")
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
              [s["step"] for s in states], fused=group["fused"], amsgrad=False, beta1=beta1, beta2=beta2,
              lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
