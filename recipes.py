"""
Named recipes: every training setting that is chosen together, written once and read by name by
train.py, bench.py and the experiments.

    python train.py                        # the recipe for this device: "gpu" (CUDA, MPS) or "cpu"
    python train.py --recipe swaps-cpu     # another by name; any flag still overrides its values

A recipe fills the settings a command line leaves unset: the model preset, model fields where they
differ from the preset's (sizes, dropout), the batch, the schedule and the evaluation. Settings that
are the same for every recipe (weight decay, gradient clipping, the seed) have one default, in
train.py's flags; the architectures themselves are model.py's PRESETS.
"""

from __future__ import annotations

from dataclasses import fields

from model import PRESETS, GPTConfig

# The small preset's size, for recipes that train other presets at that size (the swap experiments).
SMALL_SIZE = {name: PRESETS["small"][name] for name in ("n_layer", "n_head", "n_embd", "dropout")}

RECIPES: dict[str, dict] = {
    # One GPU: the 10M modern model, trained to its best validation loss (eval_windows 0: the whole val split).
    "gpu": dict(preset="modern", batch_size=64, lr=1e-3, min_lr=1e-4, warmup_iters=100, max_iters=5000,
                eval_interval=250, eval_windows=0, beta2=0.99),
    # A laptop CPU: the small model, a few minutes, still recognisable Shakespeare.
    "cpu": dict(preset="small", batch_size=16, lr=4e-3, min_lr=4e-4, warmup_iters=50, max_iters=600,
                eval_interval=100, eval_windows=50, beta2=0.99),
    # The swap and tokenizer experiments on a CPU: any preset at the small size with a 128-token context,
    # about 1.5 minutes a run on two cores, so the 15 runs of the swaps suite fit in well under an hour, yet
    # long enough for the variants to separate. No dropout: 300 steps of 2,048 tokens (about 0.6 epochs)
    # cannot overfit. 64 fixed val windows (8,192 tokens) keep each evaluation cheap.
    "swaps-cpu": dict(preset="small", **SMALL_SIZE, block_size=128, batch_size=16, lr=3e-3, min_lr=3e-4,
                      warmup_iters=30, max_iters=300, eval_interval=25, eval_windows=64, beta2=0.99),
    # The 10M presets on a CPU (experiments.final): at about 1,400 tokens/s on two cores the gpu recipe's 20M
    # tokens would take days. 800 steps of 16 × 256 tokens are 3.3M tokens, about 3 epochs of the train
    # split: too few to overfit 10M parameters, so dropout is off, and a higher peak lr than the gpu
    # recipe's suits the short run. 100 fixed val windows (25,600 tokens) keep each evaluation short.
    "full-size-cpu": dict(preset="modern", dropout=0.0, batch_size=16, lr=2e-3, min_lr=2e-4, warmup_iters=50,
                          max_iters=800, eval_interval=100, eval_windows=100, beta2=0.99),
}


def default_recipe(device_type: str) -> str:
    """The recipe train.py uses when none is named: "cpu" on a CPU, "gpu" on CUDA and MPS."""
    return "cpu" if device_type == "cpu" else "gpu"


def model_fields(name: str) -> dict:
    """The GPTConfig fields a recipe sets on top of its preset, e.g. {"n_layer": 4, "block_size": 128}."""
    config_fields = {field.name for field in fields(GPTConfig)}
    return {key: value for key, value in RECIPES[name].items() if key in config_fields}
