"""
The capstone: train a GPT made of the learner's parts with the project's own training loop, and say how its
val loss compares with the band the project's own parts reach on the same recipe.

How the learner's parts get into the model: model.py's code looks its parts up by name when a model is built
and run (Block.__init__ calls CausalSelfAttention, MLP, SwiGLU and make_norm; make_norm builds RMSNorm;
CausalSelfAttention.forward calls attention and apply_rotary_emb; GPT.__init__ calls rope_tables...). An
exercise whose reference names one of those ("model.py:attention") supplies the learner's version of it,
and `patched` puts every one in place of model.py's (and of any copy another module imported by name, such
as train.py's GPT) for the length of the run, then puts the originals back. The run is train.main itself, with
the flags of `uv run train.py`, so it writes the same best.pt, metrics.jsonl and loss.png.

    uv run workshop.py capstone                        # the cpu recipe into out/workshop/
    uv run workshop.py capstone --max-iters 100        # any train.py flag
    uv run workshop.py band                            # the band: the project's parts, 3 seeds (a few minutes),
                                                       # into workshop_band.json and docs/workshop.md

When the learner's best val loss is outside the band, `find_culprits` builds the reference model once per
learner part, with only that part the learner's, loads the same float64 weights into it and the reference,
and compares the logits and the gradients of the loss on one batch: a part whose model differs is named.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import model
from machinery import settings
from machinery.results import RESULTS_DIR, display_path, provenance, write_results
from workshop.tutor import Exercise, Failure, matches

# The names model.py looks up while it builds and runs a model: what a learner's part can stand in for.
PARTS = ("attention", "causal_mask", "CausalSelfAttention", "MLP", "SwiGLU", "RMSNorm", "Dropout", "make_norm",
         "rope_tables", "apply_rotary_emb", "KVCache", "Block", "make_block", "GPT")
OUT_DIR = "out/workshop"
# The written-out attention everywhere: on a GPU "auto" would take the fused kernel, not the learner's attention.
RECIPE_FLAGS = ("--recipe", "cpu", "--attention", "manual")
BAND_FILE = RESULTS_DIR / "workshop_band.json"
DOCS = Path(model.__file__).resolve().parent / "docs" / "workshop.md"
DOCS_BAND = re.compile(r"(<!-- band:start -->\n)(.*?)(<!-- band:end -->)", re.S)
BAND_SEEDS = (1337, 1338, 1339)
BAND_WIDTH_STDS = 3  # the band is mean +- 3 standard deviations of the seeds' best val losses...
BAND_MIN_HALF_WIDTH = 0.02  # ...and never narrower than +- 0.02 nats (three seeds can agree by chance)


@dataclass(frozen=True)
class Band:
    """The best val losses the project's own parts reach on a recipe, over seeds."""

    mean: float
    std: float
    losses: tuple[float, ...]

    @property
    def half_width(self) -> float:
        return max(BAND_WIDTH_STDS * self.std, BAND_MIN_HALF_WIDTH)

    def contains(self, loss: float) -> bool:
        return abs(loss - self.mean) <= self.half_width

    @classmethod
    def of(cls, losses: Sequence[float]) -> Band:
        return cls(statistics.fmean(losses), statistics.stdev(losses) if len(losses) > 1 else 0.0, tuple(losses))


def learner_parts(modules: Mapping[Exercise, Any]) -> dict[str, Any]:
    """{model.py name: the learner's object} for every PARTS name an exercise's reference names
    ("model.py:attention") and the learner's module defines."""
    parts = {}
    for exercise, module in modules.items():
        for reference in exercise.reference:
            file, _, name = reference.partition(":")
            if file == "model.py" and name in PARTS and hasattr(module, name):
                parts[name] = getattr(module, name)
    return parts


@contextlib.contextmanager
def patched(parts: Mapping[str, Any]) -> Iterator[None]:
    """model.py's parts replaced by `parts` (name -> object) while the block runs, in model and in every
    project module that imported the same object by name (train.py's `from model import GPT`); restored after."""
    root = Path(model.__file__).resolve().parent
    replaced = []
    try:
        for name, part in parts.items():
            if name not in PARTS:
                raise ValueError(f"{name} is not a part model.py looks up by name: one of {', '.join(PARTS)}")
            original = getattr(model, name)
            for module in list(sys.modules.values()):
                file = getattr(module, "__file__", None)
                if file and Path(file).resolve().is_relative_to(root) and getattr(module, name, None) is original:
                    replaced.append((module, name, original))
                    setattr(module, name, part)
        yield
    finally:
        for module, name, original in reversed(replaced):
            setattr(module, name, original)


def train_with(parts: Mapping[str, Any], argv: list[str]) -> dict:
    """train.main(argv) with the given parts in place of model.py's; its summary (best_val_loss, ...)."""
    import train

    with patched(parts):
        return train.main(argv)


def find_culprits(parts: Mapping[str, Any], config: model.GPTConfig, seed: int = 0) -> list[str]:
    """The names of the parts that make a model compute something else than model.py's: for each part, the
    reference model with only that part swapped in, loaded with the reference's float64 weights (moved off
    their initial values; dropout off), must give the same logits and the same gradients of the loss on one
    fixed batch. A part that cannot be built, loaded with the reference's weights or run is named too."""
    config = model.GPTConfig(**{**asdict(config), "dropout": 0.0, "attn_dropout": 0.0, "attention": "manual"})
    generator = torch.Generator().manual_seed(seed)
    length = min(config.block_size, 64)
    idx = torch.randint(config.vocab_size, (2, length), generator=generator)
    targets = torch.randint(config.vocab_size, (2, length), generator=generator)

    def logits_and_grads(built: model.GPT) -> tuple[torch.Tensor, ...]:
        built.train()
        logits, loss = built(idx, targets)
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in sorted(built.named_parameters())]
        return (logits.detach(), *grads)

    torch.manual_seed(seed)
    reference = model.GPT(config).double()
    with torch.no_grad():  # off their initial values, so a norm that ignores its all-ones weight is seen
        for parameter in reference.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
    weights = reference.state_dict()
    expected = logits_and_grads(reference)
    culprits = []
    for name, part in parts.items():
        try:
            with patched({name: part}):
                torch.manual_seed(seed)
                candidate = model.GPT(config).double()
                candidate.load_state_dict(weights)
                got = logits_and_grads(candidate)
        except Exception:  # a part that cannot be built, loaded or run is as much a culprit as a wrong one
            culprits.append(name)
            continue
        if not matches(got, expected):
            culprits.append(name)
    return culprits


def read_band(path: Path = BAND_FILE) -> Band | None:
    """The band in the committed results file, or None where it has not been measured."""
    if not path.exists():
        return None
    results = json.loads(path.read_text(encoding="utf-8"))
    return Band.of(results["best_val_losses"])


def band_section(results: dict) -> str:
    """docs/workshop.md's band block, written from workshop_band.json's contents."""
    band = Band.of(results["best_val_losses"])
    runs = ", ".join(f"{run['best_val_loss']:.4f} (seed {run['seed']})" for run in results["runs"])
    where = results["provenance"]
    return (f"Measured on {where['device']}, commit {where['git_commit'][:7]}, by `{where['command']}`: "
            f"best val losses {runs}; the band is {band.mean:.4f} ± {band.half_width:.4f} "
            f"(standard deviation {band.std:.4f}).\n")


def write_band_section(results: dict, docs: Path = DOCS) -> None:
    """Put band_section(results) between docs/workshop.md's band markers."""
    text = docs.read_text(encoding="utf-8")
    docs.write_text(DOCS_BAND.sub(lambda m: m.group(1) + band_section(results) + m.group(3), text),
                    encoding="utf-8")


def describe_band(band: Band) -> str:
    return (f"{band.mean:.4f} ± {band.half_width:.4f} (mean of {len(band.losses)} seeds, standard deviation "
            f"{band.std:.4f})")


# ----------------------------------------------------------------------------------------------------
# The commands


def _passing_modules(folder: Path, catalogue: str) -> dict[Exercise, Any] | str:
    """The learner's imported modules of every exercise that supplies a model part, or why not (a sentence)."""
    from workshop import runner, worker

    bench = runner.Workbench.open(folder, runner.load_catalogue(catalogue), runner.BLANKS)
    supplying = [e for e in bench.exercises if any(r.partition(":")[2] in PARTS for r in e.reference
                                                   if r.startswith("model.py:"))]
    checker = runner.Checker(catalogue)
    try:
        failing = [e for e in supplying if not runner.passed_now(bench, checker, e)]
    finally:
        checker.stop()
    if failing:
        first = failing[0]
        return (f"the capstone trains your parts, and exercise {first.number} ({first.title}) does not pass yet: "
                f"uv run workshop.py check {first.number}")
    try:
        return {e: worker.import_learner_file(bench.path(e), e) for e in supplying}
    except Failure as failure:
        return str(failure)


def main(argv: list[str], folder: Path, catalogue: str) -> int:
    """`uv run workshop.py capstone [train.py flags]`: train the learner's GPT, sample it, compare with the band."""
    import generate

    modules = _passing_modules(folder, catalogue)
    if isinstance(modules, str):
        print(f"workshop.py: {modules}", file=sys.stderr)
        return 1
    parts = learner_parts(modules)
    print(f"Training a GPT made of your {', '.join(parts)} with the project's training loop.", flush=True)
    args = [*RECIPE_FLAGS, "--out-dir", OUT_DIR, "--overwrite", "--sample-tokens", "0", *argv]
    summary = train_with(parts, args)
    if not summary:
        return 1
    out_dir = Path(next((v for f, v in zip(args, args[1:], strict=False) if f == "--out-dir"), OUT_DIR))
    with patched(parts):
        gpt, tokenizer = generate.load(out_dir)
        print("\nYour GPT writes:\n" + generate.sample(gpt, tokenizer, max_new_tokens=300, seed=0), flush=True)
    loss = summary["best_val_loss"]
    band = read_band()
    default_run = not argv
    print(f"\nYour best val loss: {loss:.4f}")
    if band is None or not default_run:
        print("(the band is measured for the default capstone run only: uv run workshop.py capstone)"
              if band else "(no band measured yet: uv run workshop.py band)")
    elif band.contains(loss):
        print(f"Inside the band the project's own parts reach on this recipe, {describe_band(band)}: well done.")
    else:
        print(f"Outside the band the project's own parts reach on this recipe, {describe_band(band)}.")
        culprits = find_culprits(parts, gpt.config)
        print("The part that computes something else than model.py's: " + ", ".join(culprits) if culprits else
              "Each of your parts computes what model.py's does in float64: look at how it behaves in float32 "
              "(an exp without the maximum subtracted overflows there).")
    print(f"\nCompare it with the project's model in the inspector (train one with uv run train.py first):\n"
          f"  uv run inspect_model.py --out-dir {display_path(out_dir)} --out-dir out")
    return 0


def band_main(argv: list[str], folder: Path | None = None, catalogue: str | None = None) -> int:
    """`uv run workshop.py band`: the capstone's recipe with the project's own parts, one run per seed; writes
    experiments/results/workshop_band.json (device, commit, command, seeds, each best val loss)."""
    if argv:
        print("workshop.py: band takes no flags: it measures the default capstone run", file=sys.stderr)
        return 2
    losses, runs = [], []
    for seed in BAND_SEEDS:
        summary = train_with({}, [*RECIPE_FLAGS, "--out-dir", f"{OUT_DIR}-band", "--overwrite",
                                  "--sample-tokens", "0", "--seed", str(seed)])
        if summary.get("steps") != settings.RECIPES["cpu"]["max_iters"]:  # a band from a cut-short run is no band
            print(f"workshop.py: the seed {seed} run did not finish its steps, so no band is written", file=sys.stderr)
            return 1
        losses.append(summary["best_val_loss"])
        runs.append({"seed": seed, "best_val_loss": summary["best_val_loss"], "steps": summary["steps"],
                     "train_seconds": round(summary["train_seconds"], 1)})
    band = Band.of(losses)
    from machinery.device import pick_device

    results = {"name": "workshop_band", "kind": "workshop_band",
               "title": "the band the project's own parts reach on the capstone's recipe",
               "provenance": provenance(pick_device("auto"), ["uv", "run", "workshop.py", "band"]),
               "train_flags": list(RECIPE_FLAGS), "seeds": list(BAND_SEEDS), "runs": runs,
               "best_val_losses": losses, "mean": band.mean, "std": band.std, "half_width": band.half_width}
    write_results(results, BAND_FILE)
    write_band_section(results)
    print(f"band: {describe_band(band)}; {display_path(DOCS)}'s band section is rewritten from it")
    return 0
