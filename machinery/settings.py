"""
Every training setting, written once: train.py's command line (each flag, its default and its check)
and the named recipes that fill the flags a command line leaves unset. train.py, bench.py and the
experiments read them from here, by name.

    uv run train.py                        # the recipe for this device: "gpu" (CUDA, MPS) or "cpu"
    uv run train.py --recipe swaps-cpu     # another by name; any flag still overrides its values
    uv run train.py --help                 # every flag

A recipe holds the settings chosen together: the model preset, model fields where they differ from the
preset's (sizes, dropout), the batch, the schedule and the evaluation. Settings that are the same for
every recipe (gradient clipping, the seed) have one default, on their flag; weight decay's is in
SHARED_DEFAULTS, which a recipe may set otherwise. The values of
model fields are checked in one place, GPTConfig in model.py; the flags' own checks are in parse_args.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass

from data import DATA_ENV_VAR
from machinery.budget import parse_duration
from machinery.corpus_check import corpus_to_resume
from machinery.device import pick_device
from machinery.guards import ArgumentParser
from machinery.optim import OPTIMIZERS
from model import ATTENTIONS, MLPS, NORMS, POSITIONS, PRESETS, GPTConfig
from tokenizer import TOKENIZER_KINDS

# The small preset's size, for recipes that train other presets at that size (the swap experiments).
SMALL_SIZE = {name: PRESETS["small"][name] for name in ("n_layer", "n_head", "n_embd", "dropout")}

RECIPES: dict[str, dict] = {
    # One GPU: the 10M modern model, trained to its best validation loss (eval_windows 0: the whole val split).
    "gpu": dict(preset="modern", optimizer="adamw", batch_size=64, lr=1e-3, min_lr=1e-4, warmup_iters=100,
                max_iters=5000, eval_interval=250, eval_windows=0, beta2=0.99),
    # A laptop CPU: the small model in about a minute, still recognisable Shakespeare. Muon, at a learning
    # rate AdamW cannot take, reaches a lower val loss in the same time than AdamW at its best (4e-3):
    # experiments.choices optimizer measures it.
    "cpu": dict(preset="small", optimizer="muon", batch_size=16, lr=1e-2, min_lr=1e-3, warmup_iters=50,
                max_iters=600, eval_interval=100, eval_windows=50, beta2=0.99),
    # The tokenizer experiment on a CPU: any preset at the small size with a 128-token context, about 1.5
    # minutes a run on two cores. 300 steps of 2,048 tokens (about 0.6 epochs) are far from converged: it
    # compares early learning, not what a model can reach. No dropout: so short a run cannot overfit. 64
    # fixed val windows (8,192 tokens) keep each evaluation cheap.
    "swaps-cpu": dict(preset="small", optimizer="adamw", **SMALL_SIZE, block_size=128, batch_size=16, lr=3e-3,
                      min_lr=3e-4, warmup_iters=30, max_iters=300, eval_interval=25, eval_windows=64, beta2=0.99),
    # The swap experiments on a CPU (experiments.swaps), where every run must train until its val loss stops
    # improving (the suite adds --patience and checks the end of each run). 2 blocks, 64 wide, a
    # 128-token context: about 0.1M parameters, chosen so that the 15 runs of the suite (5 variants, 3 seeds)
    # and the RoPE-vs-learned runs at two smaller sizes fit in about an hour of a 2-core CPU, two runs at a
    # time (4 blocks × 96 wide was still falling fast three quarters into 8M tokens in a trial run); the
    # results say which runs converged. 6,000 steps of 32 × 128
    # tokens (25M tokens, about 25 passes over the training text) with no dropout; 128 fixed val windows
    # (16,384 tokens), the same for every run.
    "converge-cpu": dict(preset="vanilla", optimizer="adamw", n_layer=2, n_head=4, n_embd=64, block_size=128,
                         dropout=0.0, batch_size=32, lr=3e-3, min_lr=3e-4, warmup_iters=100, max_iters=6000,
                         eval_interval=200, eval_windows=128, beta2=0.99),
    # The 10M presets on a CPU (experiments.final): at about 1,400 tokens/s on two cores the gpu recipe's 20M
    # tokens would take days. 800 steps of 16 × 256 tokens are 3.3M tokens, about 3 epochs of the train
    # split: too few to overfit 10M parameters, so dropout is off, and a higher peak lr than the gpu
    # recipe's suits the short run. 100 fixed val windows (25,600 tokens) keep each evaluation short.
    "full-size-cpu": dict(preset="modern", optimizer="adamw", dropout=0.0, batch_size=16, lr=2e-3, min_lr=2e-4,
                          warmup_iters=50, max_iters=800, eval_interval=100, eval_windows=100, beta2=0.99),
    # Time budgets on a CPU (--time-budget, machinery/budget.py), chosen by experiments.budget (docs/results.md,
    # budget_cpu): cpu-10m reached the best val loss in 10 minutes on 2 cores, cpu (above) in 1 and 3. At 30
    # minutes only cpu-10m is measured (its val loss rises over the last third: it overfits), at an hour only
    # cpu-1h, a larger model (which overfits in its last minutes). Dropout only on the residual branches:
    # masks over every attention matrix cost a CPU more time than they buy in so short a run. cpu-10m's
    # model starts to memorise the text within its 10 minutes (train loss far below val), which a stronger
    # weight decay than the shared 0.1 holds back at no cost in speed (experiments.choices weight-decay, and
    # budget_cpu's rows, whose weight decay the table shows); cpu-1h, which sees the text more often still,
    # shares it.
    "cpu-10m": dict(preset="small", optimizer="muon", n_layer=6, n_head=6, n_embd=192, dropout=0.1,
                    attn_dropout=0.0, batch_size=32, lr=1e-2, min_lr=1e-3, warmup_iters=50, weight_decay=0.6,
                    eval_windows=100, beta2=0.99, time_budget=600.0),
    "cpu-1h": dict(preset="small", optimizer="muon", n_layer=6, n_head=8, n_embd=256, dropout=0.15,
                   attn_dropout=0.0, batch_size=32, lr=1e-2, min_lr=1e-3, warmup_iters=50, weight_decay=0.6,
                   eval_windows=100, beta2=0.99, time_budget=3600.0),
}

# --time-budget without --recipe: the recipe for the budget on this kind of device, the first whose bound
# (in seconds) the budget does not pass. A GPU trains the 10M model whatever the budget.
BUDGET_RECIPES: dict[str, tuple[tuple[float, str], ...]] = {
    "cpu": ((180.0, "cpu"), (1800.0, "cpu-10m"), (math.inf, "cpu-1h")),
    "gpu": ((math.inf, "gpu"),),
}
# Settings most recipes share, for those that do not set their own.
SHARED_DEFAULTS = {"weight_decay": 0.1}
# What a time budget replaces in a recipe made for a number of steps.
STEP_SETTINGS = ("max_iters", "eval_interval")

# The flags that are GPTConfig fields: they override the preset's values, and a resumed run keeps them.
ARCHITECTURE_FLAGS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "attn_dropout", "bias", "norm", "mlp",
                      "pos", "residual", "tie_embeddings", "attention")


@dataclass(frozen=True)
class Settings:
    """A training run's settings, resolved once (resolve): the flags given, then on --resume the saved run's,
    then the recipe's, then the model preset's (or, resumed, the saved model's) fields. What train.py reads.
    Each field is one of build_parser's flags, where its help says what it does."""

    recipe: str
    # data
    data: str | None
    tokenizer: str
    vocab_size: int | None
    # model: the preset, and the GPTConfig fields (ARCHITECTURE_FLAGS) as the model has them
    preset: str
    norm: str
    mlp: str
    pos: str
    residual: bool
    tie_embeddings: bool
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    dropout: float
    attn_dropout: float | None
    bias: bool
    attention: str
    # optimisation
    optimizer: str
    batch_size: int
    grad_accum: int
    max_iters: int | None  # None: no cap on the steps (a --time-budget run)
    time_budget: float | None  # seconds, the whole process counted (machinery/budget.py)
    lr: float
    min_lr: float
    warmup_iters: int
    weight_decay: float
    beta2: float
    grad_clip: float
    seed: int
    # evaluation, checkpoints and output
    eval_interval: int | None  # None: at each tenth of the --time-budget
    eval_windows: int
    patience: int
    out_dir: str
    resume: bool
    overwrite: bool
    corpus_changed_ok: bool
    stop_after_iters: int | None
    sample_tokens: int
    # hardware
    device: str
    dtype: str
    compile: bool


def finite_float(text: str) -> float:
    """argparse type for a float flag: a number, never NaN or infinity (which would train NaN weights)."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def build_parser(recipe: str | None = None, device_type: str = "cpu") -> ArgumentParser:
    """The command line; settings a recipe chooses are left as None here and filled by apply_recipe. The help
    shows the value each of them gets from the recipe (by default the one for device_type)."""
    parser = ArgumentParser(description="Train a tinygpt model.", formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--recipe", choices=list(RECIPES),
                        help="named settings for every flag below left unset (RECIPES in\n"
                             "machinery/settings.py): gpu, the 10M model to its best val loss; cpu, the\n"
                             "small model in minutes; swaps-cpu, converge-cpu, full-size-cpu, the\n"
                             "experiments' CPU runs (default: gpu on CUDA and MPS, cpu on a CPU)")
    group = parser.add_argument_group("data")
    group.add_argument("--data", help="UTF-8 text file to train on (default: Tiny Shakespeare, downloaded\n"
                                      f"to data/ if not found; ${DATA_ENV_VAR} also sets the path)")
    group.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="char",
                       help="char: one token per character (default); bpe: byte-level BPE learned from the\n"
                            "training split; gpt2: GPT-2's 50,257-token BPE (tiktoken, internet on first use)")
    group.add_argument("--vocab-size", type=int, help="BPE vocabulary, 256 bytes + merges (no default: bpe needs it)")
    add_model_flags(parser)
    group = parser.add_argument_group("optimisation")
    group.add_argument("--optimizer", choices=OPTIMIZERS,
                       help="adamw: AdamW for every parameter; muon: Muon (machinery/optim.py: momentum\n"
                            "whose update matrix is orthogonalised, every direction the same step) for\n"
                            "the blocks' matrices, AdamW for the embeddings and vectors, with the same\n"
                            "--lr and --weight-decay")
    group.add_argument("--batch-size", type=int, help="sequences per micro-batch (per process)")
    group.add_argument("--grad-accum", type=int, default=1,
                       help="micro-batches per optimizer step (default: %(default)s)")
    group.add_argument("--max-iters", type=int, help="optimizer steps in the whole run (with --time-budget: a cap)")
    group.add_argument("--time-budget", type=parse_duration, metavar="DURATION",
                       help="train for this wall-clock time instead of a number of steps: 30s, 10m,\n"
                            "1h or plain seconds, the whole process counted (start-up, evaluations,\n"
                            "saves, the final evaluation and sample); the schedule ends at the budget.\n"
                            "Without --recipe it picks the recipe measured for that budget on this\n"
                            "device (cpu up to 3m, cpu-10m up to 30m, then cpu-1h; gpu on a GPU)\n"
                            "(default: off, the run takes --max-iters steps)")
    group.add_argument("--lr", type=finite_float, help="peak learning rate")
    group.add_argument("--min-lr", type=finite_float, help="learning rate at the end of the cosine decay")
    group.add_argument("--warmup-iters", type=int, help="steps of linear warmup")
    group.add_argument("--weight-decay", type=finite_float,
                       help=f"weight decay on matrices (default: the recipe's, else {SHARED_DEFAULTS['weight_decay']})")
    group.add_argument("--beta2", type=finite_float, help="AdamW beta2")
    group.add_argument("--grad-clip", type=finite_float, default=1.0,
                       help="clip the gradient norm; 0: off (default: %(default)s)")
    group.add_argument("--seed", type=int, default=1337,
                       help="seed for weights, batches and dropout (default: %(default)s)")
    group = parser.add_argument_group("evaluation, checkpoints and output")
    group.add_argument("--eval-interval", type=int,
                       help="evaluate and checkpoint every this many steps (with --time-budget and no\n"
                            "--eval-interval: at each tenth of the budget)")
    group.add_argument("--eval-windows", type=int,
                       help="validate on this many fixed, evenly spaced windows of the val split\n"
                            "(the same ones every time, so evaluations compare; the log's \"val on N\n"
                            "fixed windows\"); 0: the whole val split")
    group.add_argument("--patience", type=int, default=0,
                       help="stop when val loss has not improved for this many evaluations; 0: off\n"
                            "(default: %(default)s)")
    group.add_argument("--out-dir", default="out",
                       help="where checkpoints, metrics and plots go (default: %(default)s)")
    group.add_argument("--resume", action="store_true",
                       help="continue the run saved in --out-dir/last.pt with its saved settings; flags\n"
                            "given again may move where it stops (--max-iters, --patience, ...)")
    group.add_argument("--overwrite", action="store_true", help="start afresh even if --out-dir holds a run")
    group.add_argument("--corpus-changed-ok", action="store_true",
                       help="with --resume: continue even though the corpus the run trained on has changed\n"
                            "since it was saved (or on another --data); without it such a resume is refused")
    group.add_argument("--stop-after-iters", type=int,
                       help="stop (saving last.pt) after this many steps of this invocation; the schedule\n"
                            "still follows --max-iters, so --resume continues the same run (default: off)")
    group.add_argument("--sample-tokens", type=int, default=300,
                       help="characters/tokens of text to print at the end; 0: none (default: %(default)s)")
    group = parser.add_argument_group("hardware")
    group.add_argument("--device", default="auto",
                       help="auto (CUDA, then MPS, then CPU), cuda, mps or cpu (default: %(default)s)")
    group.add_argument("--dtype", default="auto",
                       help="autocast precision: auto (CUDA: bfloat16, or float16 with a gradient scaler\n"
                            "on GPUs without bf16; MPS: float32; CPU: bfloat16 when the processor has\n"
                            "native bf16 units such as AMX, else float32), float32, bfloat16, float16\n"
                            "(default: %(default)s)")
    group.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the model (on for CUDA, off elsewhere)")
    show_defaults(parser, recipe or default_recipe(device_type), device_type)
    return parser


def effective_defaults(recipe: str, device_type: str) -> dict:
    """What each flag left unset becomes: the recipe's value, else its preset's, and torch.compile on CUDA only."""
    values = RECIPES[recipe]
    config = GPTConfig.from_preset(values["preset"], **model_flags(values))
    model = {name: value for name, value in asdict(config).items() if name in ARCHITECTURE_FLAGS}
    model["attn_dropout"] = config.attention_dropout  # unset, it follows dropout
    return {**SHARED_DEFAULTS, **model, **values, "recipe": recipe, "compile": device_type == "cuda"}


def show_defaults(parser: argparse.ArgumentParser, recipe: str, device_type: str) -> None:
    """Append "(default here: VALUE)" to the help of every flag left unset (None): what it becomes with this
    recipe on this kind of device (effective_defaults)."""
    parser.description += (f"\n\n\"default here\": what a flag left out becomes on this machine, from the {recipe} "
                           "recipe\nor its preset (--recipe and --device change it).")
    defaults = effective_defaults(recipe, device_type)
    for action in parser._actions:
        if action.default is None and action.dest in defaults:
            value = defaults[action.dest]
            shown = ("on" if value else "off") if isinstance(value, bool) else value
            action.help = f"{action.help}\n(default here: {shown})" if action.help else f"(default here: {shown})"


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The model: a preset, then any GPTConfig field overridden (ARCHITECTURE_FLAGS)."""
    group = parser.add_argument_group("model (a preset, then any field overridden; model.py checks the values)")
    group.add_argument("--preset", choices=list(PRESETS), help="model.py's named architecture")
    group.add_argument("--norm", choices=NORMS, help="none: every norm an identity")
    group.add_argument("--mlp", choices=MLPS, help="none: no feed-forward sublayer (attention only)")
    group.add_argument("--pos", choices=POSITIONS, help="none: no position information")
    group.add_argument("--residual", action=argparse.BooleanOptionalAction, default=None,
                       help="add each sublayer's output to its input")
    group.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
                       help="the output head reuses the token embedding matrix")
    group.add_argument("--n-layer", type=int, help="transformer blocks; 0: embedding straight into the head")
    group.add_argument("--n-head", type=int, help="attention heads per block; must divide --n-embd")
    group.add_argument("--n-embd", type=int, help="width: the size of each token's vector (the residual stream)")
    group.add_argument("--block-size", type=int, help="context length in tokens")
    group.add_argument("--dropout", type=finite_float, help="on the embeddings and every residual branch")
    group.add_argument("--attn-dropout", type=finite_float,
                       help="on the attention weights (unset: the same as --dropout); 0 trains faster on\n"
                            "a CPU, at a cost measured in docs/results.md (attn_dropout)")
    group.add_argument("--bias", action=argparse.BooleanOptionalAction, default=None,
                       help="biases in the linear layers and norms (GPT-2 has them; --no-bias: none)")
    group.add_argument("--attention", choices=ATTENTIONS, help="fused kernel or the written-out math")

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with the ones that are not model config fields checked (GPTConfig checks those)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(*recipe_asked(argv))
    args = parser.parse_args(argv)
    checks = [(name, lambda v: v >= 1, "at least 1") for name in ("batch_size", "grad_accum", "max_iters",
                                                                    "eval_interval", "stop_after_iters")]
    checks += [(name, lambda v: v > 0, "positive") for name in ("lr", "min_lr")]
    checks += [("beta2", lambda v: 0 < v < 1, "in (0, 1)")]
    checks += [(name, lambda v: v >= 0, "not negative") for name in ("weight_decay", "grad_clip", "patience",
                                                                      "sample_tokens", "warmup_iters", "eval_windows")]
    for name, allowed, requirement in checks:
        value = getattr(args, name)
        if value is not None and not allowed(value):  # `not allowed` refuses NaN too
            parser.error(f"--{name.replace('_', '-')} must be {requirement}, not {value}")
    if args.tokenizer == "bpe" and (args.vocab_size is None or args.vocab_size < 257):
        parser.error("--tokenizer bpe needs --vocab-size of at least 257 (256 bytes + merges)")
    return args


def given_flags(argv: list[str] | None = None) -> set[str]:
    """The settings named on the command line, as opposed to left to their defaults."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


# --resume continues the saved run with the settings it saved. A flag given again with another value is
# applied if it only moves where the run stops or what it prints (said so), and refused otherwise: a
# changed learning rate, batch or data would make another run, one no uninterrupted run could match.
# The hardware flags are among them: a run saved on a GPU can go on on a CPU when the flag says so.
CHANGEABLE_ON_RESUME = ("max_iters", "time_budget", "patience", "eval_interval", "sample_tokens", "device", "dtype",
                        "compile")
# What a run saved before these flags existed did: every run trained with AdamW before --optimizer.
BEFORE_THE_FLAG = {"optimizer": "adamw"}
# Where this invocation runs and when it stops, not what the run is: never taken from the saved run. The
# corpus is checked against the checkpoint's record of it instead (machinery/corpus_check.py).
NOT_SAVED_WITH_THE_RUN = ("resume", "overwrite", "out_dir", "stop_after_iters", "corpus_changed_ok", "data")


def resume_settings(values: dict, saved: dict, given: set[str], world: int = 1,
                    saved_world: int = 1) -> tuple[dict, list[str]]:
    """Continue the saved run's settings (values: the flags as parsed; saved: the checkpoint's "args"): every
    flag not given takes the saved value; a given one that differs is kept if CHANGEABLE_ON_RESUME (a line
    saying so is returned) or refused with ValueError. --batch-size may change with the number of processes
    (world; saved_world when the run was saved) as long as the global batch stays the same: the run moves
    between one process and several. Model fields are checked against the saved model by
    checkpoint.check_resumable. Returns the merged settings and the lines saying what changed.
"""
    # A flag added after the run was saved is read as what runs did before it existed: its own default, or
    # BEFORE_THE_FLAG's value where a recipe now chooses it, so giving it another value is refused like any.
    parser = build_parser()
    defaults = {name: parser.get_default(name) for name in values}
    saved = {name: value for name, value in defaults.items() if value is not None} | BEFORE_THE_FLAG | saved
    merged, changes = dict(values), []
    for name, saved_value in saved.items():
        if name in NOT_SAVED_WITH_THE_RUN or name in ARCHITECTURE_FLAGS or name not in values:
            continue
        value = values[name]
        if name not in given:
            if name == "batch_size" and world != saved_world:  # the same global batch over this many processes
                if saved_value * saved_world % world:
                    raise ValueError(f"the saved run's global batch of {saved_value * saved_world} sequences cannot "
                                     f"be split over {world} processes; resume with a number of processes that "
                                     "divides it")
                saved_value = saved_value * saved_world // world
            merged[name] = saved_value
        elif value != saved_value:
            flag = "--" + name.replace("_", "-")
            if name == "batch_size" and value * world == saved_value * saved_world:
                changes.append(f"{flag} {value} per process × {world} (the saved run had {saved_value} × "
                               f"{saved_world}: the same global batch)")
                continue
            if name not in CHANGEABLE_ON_RESUME:
                raise ValueError(f"{flag} {value} differs from the saved run's {saved_value}, and a resumed run keeps "
                                 f"it (otherwise it is another run); drop {flag} to continue the run, or use another "
                                 "--out-dir for a new one")
            changes.append(f"{flag} {value} (the saved run had {saved_value})")
    return merged, changes


def default_recipe(device_type: str) -> str:
    return "cpu" if device_type == "cpu" else "gpu"


def recipe_asked(argv: list[str]) -> tuple[str | None, str]:
    """(--recipe, the type of the --device) as argv gives them, for the help's defaults. A bad value is left
    for the real parser (a bad --recipe) or for train.py's set-up (a --device that is not here) to refuse."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--recipe")
    early.add_argument("--device", default="auto")
    asked, _ = early.parse_known_args(argv)
    try:
        device_type = pick_device(asked.device).type
    except ValueError:
        device_type = "cpu"
    return (asked.recipe if asked.recipe in RECIPES else None), device_type


def budget_recipe(seconds: float, device_type: str) -> str:
    """The recipe BUDGET_RECIPES picks for a --time-budget of this many seconds on this kind of device."""
    table = BUDGET_RECIPES["cpu" if device_type == "cpu" else "gpu"]
    return next(recipe for bound, recipe in table if seconds <= bound)


def with_recipe(values: dict, device_type: str) -> dict:
    """values with every setting left unset (None) filled from the named recipe (SHARED_DEFAULTS where it sets
    none), by default the one for this kind of device (with --time-budget: the one for that budget), and
    torch.compile decided for the device where no flag did. Under a time budget the recipe's step count and
    evaluation interval do not apply."""
    budget = values.get("time_budget")
    recipe = values["recipe"] or (budget_recipe(budget, device_type) if budget else default_recipe(device_type))
    filled = {**values, "recipe": recipe}
    timed = budget is not None or "time_budget" in RECIPES[recipe]
    for name, value in {**SHARED_DEFAULTS, **RECIPES[recipe]}.items():
        if filled.get(name) is None and not (timed and name in STEP_SETTINGS):
            filled[name] = value
    if filled["compile"] is None:
        filled["compile"] = device_type == "cuda"  # on a CPU compiling cost more than it saved (docs/training.md)
    filled["compile"] = filled["compile"] and device_type != "mps"  # torch.compile cannot train on MPS
    return filled


def model_flags(values: dict) -> dict:
    """The GPTConfig fields that values (settings, or a recipe) set, e.g. {"n_layer": 4, "block_size": 128}: the
    rest come from the preset."""
    return {name: values[name] for name in ARCHITECTURE_FLAGS if values.get(name) is not None}


def model_flags_given(args: argparse.Namespace, given: set[str]) -> dict:
    """The GPTConfig fields named on the command line, {field: value}."""
    return {name: getattr(args, name) for name in ARCHITECTURE_FLAGS if name in given}


def resolve(args: argparse.Namespace, given: set[str], saved: dict | None = None,
            world: int = 1) -> tuple[Settings, GPTConfig, list[str]]:
    """The run's settings and its model's config, resolved once from the parsed flags (given: the ones on
    the command line), on --resume the saved run (its checkpoint, which fixes the model), the recipe for
    the device, and the preset. Also returns the lines saying which flags a resume changed. Raises
    ValueError for a setting that cannot work (GPTConfig checks the model's)."""
    values, changes = vars(args), []
    if saved:
        values, changes = resume_settings(values, saved["args"], given, world, len(saved["rng"]["ranks"]))
        values["data"], corpus_note = corpus_to_resume(saved, args.data, args.corpus_changed_ok)
        changes += [corpus_note] if corpus_note else []
    values = with_recipe(values, pick_device(values["device"]).type)
    if values["min_lr"] > values["lr"]:
        raise ValueError(f"--min-lr {values['min_lr']:g} is above the peak --lr {values['lr']:g}, so the \"decay\" "
                         "would climb; give a --min-lr no larger than --lr")
    if saved:
        config = GPTConfig(**saved["config"])
    else:
        config = GPTConfig.from_preset(values["preset"], **model_flags(values))
    values |= {name: getattr(config, name) for name in ARCHITECTURE_FLAGS}
    return Settings(**values), config, changes

