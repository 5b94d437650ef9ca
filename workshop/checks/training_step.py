"""Exercise 8's check: get_lr against train.py's, clipping against torch.nn.utils.clip_grad_norm_ (what
train.py's train_step calls), and one AdamW update against torch.optim.AdamW (what make_optimizer builds)."""

from __future__ import annotations

import math
from types import ModuleType

import torch

from train import get_lr
from workshop.checks.common import mistakes_for, randn, recognise, replaces
from workshop.tutor import Failure, Mistake, call, compare, diagnose, require

SCHEDULE = dict(lr=1e-3, min_lr=1e-4, warmup_iters=5, max_iters=20)
ADAMW = dict(lr=0.1, betas=(0.9, 0.99), eps=1e-3, weight_decay=0.5)  # eps and decay large enough to show


def torch_adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """The update torch.optim.AdamW makes, for one tensor, as a function of its state: the reference."""
    p = torch.nn.Parameter(param.detach().clone())
    optimizer = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False)
    optimizer.state[p] = {"step": torch.tensor(float(step - 1)), "exp_avg": exp_avg.detach().clone(),
                          "exp_avg_sq": exp_avg_sq.detach().clone()}
    p.grad = grad.detach().clone()
    optimizer.step()
    state = optimizer.state[p]
    return p.detach(), state["exp_avg"], state["exp_avg_sq"]


def cosine(step, lr, min_lr, warmup_iters, max_iters, floor, start):
    progress = min(1.0, (step - start) / max(1, max_iters - start))
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - floor)


@replaces("get_lr")
def warmup_from_zero(step, lr, min_lr, warmup_iters, max_iters):
    if step < warmup_iters:
        return lr * step / warmup_iters
    return get_lr(step, lr, min_lr, warmup_iters, max_iters)


@replaces("get_lr")
def decays_to_zero(step, lr, min_lr, warmup_iters, max_iters):
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    return cosine(step, lr, min_lr, warmup_iters, max_iters, 0.0, warmup_iters)


@replaces("get_lr")
def cosine_from_step_zero(step, lr, min_lr, warmup_iters, max_iters):
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    return cosine(step, lr, min_lr, warmup_iters, max_iters, min_lr, 0)


@replaces("clip_grad_norm_")
def clipped_one_by_one(parameters, max_norm):
    norms = []
    for p in parameters:
        norm = p.grad.norm()
        norms.append(norm)
        if norm > max_norm:
            p.grad.mul_(max_norm / (norm + 1e-6))
    return torch.stack(norms).norm()


@replaces("clip_grad_norm_")
def scaled_even_below(parameters, max_norm):
    total = torch.stack([p.grad.norm() for p in parameters]).norm()
    for p in parameters:
        p.grad.mul_(max_norm / (total + 1e-6))
    return total


@replaces("clip_grad_norm_")
def clamped_elementwise(parameters, max_norm):
    total = torch.stack([p.grad.norm() for p in parameters]).norm()
    for p in parameters:
        p.grad.clamp_(-max_norm, max_norm)
    return total


def adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, decay_factor, correct=True, eps_inside=False):
    beta1, beta2 = betas
    param = param * decay_factor
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad**2
    m_hat = exp_avg / (1 - beta1**step) if correct else exp_avg
    v_hat = exp_avg_sq / (1 - beta2**step) if correct else exp_avg_sq
    denominator = (v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps
    return param - lr * m_hat / denominator, exp_avg, exp_avg_sq


@replaces("adamw_step")
def decay_added_to_the_gradient(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=0.01):
    return adam(param, grad + weight_decay * param, exp_avg, exp_avg_sq, step, lr, betas, eps, 1.0)


@replaces("adamw_step")
def without_bias_correction(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.01):
    return adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, 1 - lr * weight_decay, correct=False)


@replaces("adamw_step")
def eps_inside_the_root(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8,
                        weight_decay=0.01):
    return adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, 1 - lr * weight_decay, eps_inside=True)


@replaces("adamw_step")
def decay_not_scaled_by_lr(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8,
                           weight_decay=0.01):
    return adam(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, 1 - weight_decay)


MISTAKES = (
    Mistake("start the warmup at 0 (lr * step / warmup_iters)",
            "step counts from 0, so the first step would not learn at all: lr * (step + 1) / warmup_iters",
            warmup_from_zero),
    Mistake("decay to 0 instead of min_lr",
            "the cosine runs from lr down to min_lr: min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr)",
            decays_to_zero),
    Mistake("run the cosine from step 0 instead of from the end of the warmup",
            "progress = (step - warmup_iters) / (max_iters - warmup_iters): 0 when the warmup ends, 1 at max_iters",
            cosine_from_step_zero),
    Mistake("clip each gradient by its own norm instead of the global norm",
            "one norm over every gradient together, and one scale for all of them, keeps the update's direction",
            clipped_one_by_one, "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural "
            "networks, arXiv:1211.5063 (clipping the norm of the whole gradient)"),
    Mistake("scale the gradients to max_norm even when their norm is already below it",
            "clipping only ever shrinks: scale by max_norm / (total + 1e-6) only when total > max_norm",
            scaled_even_below),
    Mistake("clamp each gradient element to max_norm",
            "clipping by norm scales every gradient by the same factor; clamping elements changes the direction",
            clamped_elementwise),
    Mistake("add the weight decay to the gradient (Adam's L2) instead of decaying the weights",
            "AdamW decouples the decay: param * (1 - lr * weight_decay), apart from the Adam step; added to the "
            "gradient it is divided by sqrt(v_hat) like the rest", decay_added_to_the_gradient,
            "Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization, arXiv:1711.05101"),
    Mistake("leave out the bias correction",
            "both moments start at 0, so early on they are too small: divide by (1 - beta ** step)",
            without_bias_correction, "Kingma & Ba 2015, Adam: A Method for Stochastic Optimization, "
            "arXiv:1412.6980 (section 3, initialization bias correction)"),
    Mistake("put eps inside the square root",
            "Adam's denominator is sqrt(v_hat) + eps, as torch.optim.AdamW has it", eps_inside_the_root,
            "PyTorch docs, torch.optim.AdamW (the algorithm): "
            "https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html"),
    Mistake("decay the weights by weight_decay instead of lr * weight_decay",
            "torch.optim.AdamW multiplies param by (1 - lr * weight_decay), so the decay follows the schedule",
            decay_not_scaled_by_lr),
)


def schedule_of(fn) -> torch.Tensor:
    return torch.tensor([fn(step, **SCHEDULE) for step in range(SCHEDULE["max_iters"] + 5)], dtype=torch.float64)


def gradients(scale: float) -> list[torch.nn.Parameter]:
    params = []
    for i, shape in enumerate(((3, 4), (4,), (2, 2))):
        p = torch.nn.Parameter(randn(*shape, seed=20 + i))
        p.grad = randn(*shape, seed=30 + i, scale=scale)
        params.append(p)
    return params


def clipped_by(fn, scale: float, max_norm: float):
    params = gradients(scale)
    total = fn(params, max_norm)
    return torch.as_tensor(total, dtype=torch.float64), *(p.grad for p in params)


def check(module: ModuleType) -> None:
    """get_lr is train.py's schedule at every step, clip_grad_norm_ is torch's on gradients above and below
    the threshold, and adamw_step is torch.optim.AdamW's update over three steps."""
    schedule = require(module, "get_lr", signature="(step, lr, min_lr, warmup_iters, max_iters)")
    clip = require(module, "clip_grad_norm_", signature="(parameters, max_norm)")
    step_fn = require(module, "adamw_step",
                      signature="(param, grad, exp_avg, exp_avg_sq, step, lr, betas, eps, weight_decay)")

    expected = schedule_of(get_lr)
    got = torch.tensor([float(call(schedule, step, **SCHEDULE)) for step in range(len(expected))], dtype=torch.float64)
    what = "the learning rates at steps 0 .. 24"
    recognise(got, expected, mistakes_for(MISTAKES, "get_lr"), lambda m: schedule_of(m.wrong), what)
    compare(got, expected, what)

    for scale, max_norm, what in ((1.0, 1.0, "gradients of norm about 4 clipped to 1"),
                                  (0.01, 1.0, "gradients of norm about 0.04 (below max_norm 1)")):
        expected = clipped_by(torch.nn.utils.clip_grad_norm_, scale, max_norm)
        params = gradients(scale)
        total = call(clip, params, max_norm)
        if not isinstance(total, (torch.Tensor, float)):
            raise Failure(f"clip_grad_norm_ should return the total norm before clipping, got {total!r}")
        got = (torch.as_tensor(total, dtype=torch.float64), *(p.grad for p in params))
        what = f"(total norm, each gradient) for {what}"
        recognise(got, expected, mistakes_for(MISTAKES, "clip_grad_norm_"),
                  lambda m, scale=scale, max_norm=max_norm: clipped_by(m.wrong, scale, max_norm), what, rtol=1e-5)
        compare(got, expected, what, rtol=1e-5)

    param, state = randn(3, 4, seed=40), (torch.zeros(3, 4, dtype=torch.float64),) * 2
    mine = mistakes_for(MISTAKES, "adamw_step")
    for step in (1, 2, 3):
        grad = randn(3, 4, seed=40 + step, scale=0.01)
        expected = torch_adamw_step(param, grad, *state, step, **ADAMW)
        got = call(step_fn, param, grad, *state, step, **ADAMW, returns=tuple)
        diagnose(got, expected, mine, param, grad, *state, step, **ADAMW,
                 what=f"(param, exp_avg, exp_avg_sq) after update {step}")
        param, state = expected[0], expected[1:]
