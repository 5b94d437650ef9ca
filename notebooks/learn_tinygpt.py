# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # tinygpt: train a GPT, then build one up part by part
#
# This notebook runs on Colab (GPU or CPU) or on your own machine. It gets the code, trains the default model
# for the device it finds, plots the loss, generates text, and then walks the learning path's ladder at its
# smallest size: the counted baselines, then a GPT built up one part at a time, each part's worth measured.
# The chapters in `docs/learn/` explain every rung.
#
# It edits nothing in the repository: everything it trains and writes goes under `out/notebook/` (or the
# folder `$TINYGPT_NOTEBOOK_OUT` names).
# The `.ipynb` and the `.py` beside it are the same notebook (paired with jupytext); the `.py` is the one to
# review and edit.

# %% [markdown]
# ## 1. Get the code
#
# Inside a checkout (Jupyter started from the repository) nothing is fetched. On Colab, set `REPO_URL` to this
# repository's address: the cell clones it and moves into it. Only PyTorch and NumPy are needed to train and
# generate (Colab has both); matplotlib draws the plots.

# %%
import os
import subprocess
import sys
from pathlib import Path

REPO_URL = ""  # e.g. https://github.com/OWNER/tinygpt, when running outside a checkout


def find_checkout() -> Path | None:
    """The repository root: this folder or one above it that holds model.py and train.py."""
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "model.py").exists() and (folder / "train.py").exists():
            return folder
    return None


root = find_checkout()
if root is None:
    if not REPO_URL:
        raise SystemExit("set REPO_URL in this cell to the repository's address, then run it again")
    subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "tinygpt"], check=True)
    root = Path("tinygpt").resolve()
os.chdir(root)
sys.path.insert(0, str(root))
print(f"working in {root}")

# %% [markdown]
# ## 2. Train
#
# `train.main` takes the same flags as `uv run train.py` (see `uv run train.py --help`). With no flags it
# picks the device (CUDA, then Apple's MPS, then the CPU) and the recipe for it: on a GPU the 10M-parameter
# `modern` preset, on a CPU the `small` preset, sized for a few minutes. `TOY`, set by the tests that run this
# notebook, shrinks everything to seconds.

# %%
import torch  # noqa: E402

import train  # noqa: E402

TOY = os.environ.get("TINYGPT_NOTEBOOK_TOY") == "1"
OUT = Path(os.environ.get("TINYGPT_NOTEBOOK_OUT", "out/notebook"))
toy_flags = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--batch-size", "8",
             "--max-iters", "20", "--eval-interval", "10", "--eval-windows", "8", "--device", "cpu"]
print("GPU:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none, training on the CPU")
summary = train.main(["--out-dir", str(OUT / "train"), "--overwrite", "--sample-tokens", "0",
                      *(toy_flags if TOY else [])])
print(f"best val loss {summary['best_val_loss']:.4f} after {summary['steps']} steps, {summary['params']:,} parameters")

# %% [markdown]
# ## 3. The loss curve
#
# train.py writes one line of JSON per evaluation to `metrics.jsonl`: the mean training loss since the last
# evaluation and the loss on the validation text, which the model never trains on.

# %%
import json  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402

records = [json.loads(line) for line in (OUT / "train" / "metrics.jsonl").read_text().splitlines()]
trained = [r for r in records if r["train_loss"] is not None]
plt.plot([r["step"] for r in trained], [r["train_loss"] for r in trained], label="train")
plt.plot([r["step"] for r in records], [r["val_loss"] for r in records], marker="o", label="val")
plt.xlabel("step")
plt.ylabel("loss (nats per character)")
plt.legend()
plt.show()

# %% [markdown]
# ## 4. Generate
#
# `generate.load` rebuilds the model from its checkpoint; `generate.sample` continues a prompt. Temperature
# below 1 makes the text safer, above 1 wilder (chapter 11 measures it).

# %%
from generate import load, sample  # noqa: E402

model, tokenizer = load(OUT / "train")
print(sample(model, tokenizer, prompt="ROMEO:\n", max_new_tokens=300, temperature=0.8, seed=0))

# %% [markdown]
# ## 5. The ladder, at its smallest size
#
# The learning path's experiment: the floor counted from the training text (uniform, unigram, bigram), then
# a network built up one part at a time (the bigram network, one attention head, several heads, the FFN,
# residual connections, pre-norm, stacked blocks, and the modern swaps), each trained by train.py with the
# other parts switched off. Here with one seed per rung (the committed results use three); on a CPU it takes a
# while (the CPU-minutes it used are in the table), on a GPU a few minutes.
# The results go to `out/notebook/`, not over the committed ones in `experiments/results/`.

# %%
from experiments import ladder  # noqa: E402

ladder_flags = ["--seeds", "1", "--results-dir", str(OUT / "results"), "--docs-dir", str(OUT / "docs"),
                "--runs-dir", str(OUT / "runs")]
if TOY:  # two rungs, 10 steps each, at width 16 (the size flags of the rungs themselves are left alone)
    ladder_flags += ["--rungs", "one-head", "--device", "cpu", "--train-args",
                     "--n-embd 16 --block-size 16 --batch-size 4 --max-iters 10 --eval-interval 5 --eval-windows 8"]
ladder.main(ladder_flags)

# %% [markdown]
# The table and the plot, as `experiments/report.py` writes them:

# %%
from IPython.display import Image, Markdown, display  # noqa: E402

display(Markdown((OUT / "docs" / "results.md").read_text()))
ladder_name = next((OUT / "results").glob("ladder*.json")).stem  # ladder_partial when only some rungs ran
display(Image(filename=str(OUT / "docs" / "plots" / f"{ladder_name}.png")))

# %% [markdown]
# ## Where next
#
# Read the chapters in `docs/learn/` in order: each one explains a rung (the idea, the formula, the lines of
# `model.py`, the test that proves it) and shows its measured row. Chapter 12 breaks things on purpose:
# the lessons in `lessons/` run from here too, e.g. `!python -m lessons.float16`.
