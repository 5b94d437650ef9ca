"""
Exercise 8: the training step: the learning-rate schedule, gradient clipping and one AdamW update.

Read first: [chapter 12, what goes wrong](../../docs/learn/12-what-goes-wrong.md), and train.py's `get_lr`
and `train_step`. Check with `uv run workshop.py check 8`.

Write train.py's warmup-then-cosine schedule, clipping by the global norm of every gradient (what
torch.nn.utils.clip_grad_norm_ does), and one AdamW update written out (what torch.optim.AdamW does).
"""

import math  # noqa: F401

import torch


def get_lr(step: int, lr: float, min_lr: float, warmup_iters: int, max_iters: int) -> float:
    """The learning rate at step (0-based): linear warmup, then cosine decay to min_lr at max_iters.

        step < warmup_iters:  lr * (step + 1) / warmup_iters        (the first step already learns)
        otherwise:            min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr),
                              progress = min(1, (step - warmup_iters) / max(1, max_iters - warmup_iters))
    """
    raise NotImplementedError("the warmup line, then the cosine from lr down to min_lr")


def clip_grad_norm_(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale every parameter's .grad, in place, so that their global norm is at most max_norm; return the
    global norm before clipping (a 0-d tensor).

        total = sqrt(sum over every parameter p of sum(p.grad ** 2))
        if total > max_norm: every p.grad *= max_norm / (total + 1e-6)

    One norm for all gradients together, so clipping keeps the direction of the whole update.
    """
    raise NotImplementedError("the global norm of every gradient, then one scale for all of them")


def adamw_step(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
               step: int, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW update (Loshchilov & Hutter 2019) as torch.optim.AdamW makes it; step counts from 1 (the
    first update). Returns new tensors (param, exp_avg, exp_avg_sq); the inputs are left as they are.

        param    = param * (1 - lr * weight_decay)            decoupled weight decay, not added to grad
        exp_avg    = beta1 * exp_avg    + (1 - beta1) * grad
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad ** 2
        m_hat = exp_avg / (1 - beta1 ** step);  v_hat = exp_avg_sq / (1 - beta2 ** step)   bias correction
        param    = param - lr * m_hat / (sqrt(v_hat) + eps)
    """
    raise NotImplementedError("decay the weights, update both moments, correct their bias, take the step")
