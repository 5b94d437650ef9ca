"""
Export a tinygpt checkpoint as a Hugging Face model folder, so other tools can run it.

    uv run export.py --ckpt out/best.pt --out hf-model

The folder holds config.json and model.safetensors (float32), which
transformers.AutoModelForCausalLM.from_pretrained("hf-model") loads, tinygpt_tokenizer.json when
the checkpoint records its tokenizer, and README.md, a Hugging Face model card written from the
checkpoint and its run (model_card). Two layouts map exactly onto a Hugging Face architecture, so the
exported model computes the same logits as ours:

    norm     mlp          pos      bias        exported as
    rmsnorm  swiglu       rope     either      LlamaForCausalLM  (the "modern" and "small" presets)
    layernorm relu|gelu   learned  True        GPT2LMHeadModel   (the "vanilla" preset)

Any other combination is refused with an error. tests/test_export.py proves the equivalence and
docs/export.md has the name-by-name mapping. Needs `pip install safetensors`, not transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from machinery.checkpoint import check_finite_weights, load_checkpoint
from model import GPT, GPTConfig

TOKENIZER_FILE = "tinygpt_tokenizer.json"
MODEL_CARD_FILE = "README.md"
EXPORT_FILES = ("config.json", "model.safetensors", TOKENIZER_FILE, MODEL_CARD_FILE)
TINY_SHAKESPEARE_HF_DATASET = "karpathy/tiny_shakespeare"
MODEL_CARD_SAMPLE_TOKENS = 200

# The library defaults (Llama: bos 1, eos 2; GPT-2: 50256) would name real characters of a small
# vocabulary, and generate() would stop whenever it sampled the "end" character. We have none.
NO_SPECIAL_TOKENS = {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}


# Our names inside transformer.h.{i} -> Llama's inside model.layers.{i}. A matrix of ours that is several
# of Llama's (stacked along the output features) is split into them, in this order.
LLAMA_LAYER_NAMES = {
    "ln_1": ("input_layernorm",),
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.c_proj": ("self_attn.o_proj",),
    "ln_2": ("post_attention_layernorm",),
    "mlp.w_gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.c_proj": ("mlp.down_proj",),
}
LLAMA_OUTER_NAMES = {
    "transformer.wte.weight": "model.embed_tokens.weight",
    "transformer.ln_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
# GPT-2 uses our names (model.py borrowed them), but these layers are HF Conv1D modules, which store
# the weight as (in, out): the transpose of nn.Linear's (out, in).
GPT2_CONV1D_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def hf_architecture(config: GPTConfig) -> str:
    """Name the Hugging Face class whose computation matches this config exactly, or raise ValueError."""
    if not config.residual:
        raise ValueError("a model without residual connections has no Hugging Face equivalent")
    if (config.norm, config.mlp, config.pos) == ("rmsnorm", "swiglu", "rope"):
        return "LlamaForCausalLM"
    if config.norm == "layernorm" and config.mlp in ("relu", "gelu") and config.pos == "learned" and config.bias:
        return "GPT2LMHeadModel"
    raise ValueError(
        f"norm={config.norm}, mlp={config.mlp}, pos={config.pos}, bias={config.bias} has no exact Hugging Face "
        "equivalent; export.py writes rmsnorm+swiglu+rope as LlamaForCausalLM and layernorm+relu|gelu+learned "
        "with bias=True as GPT2LMHeadModel (its layers always have biases)")


def llama_config(config: GPTConfig) -> dict:
    """config.json for LlamaForCausalLM with the same shapes and constants as our model."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.ffn_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,  # every head has its own keys and values (no grouped-query)
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        # transformers 5 reads rope_parameters; older versions and llama.cpp's converter read rope_theta.
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": config.bias,
        "mlp_bias": config.bias,
        "attention_dropout": config.attention_dropout,
        "tie_word_embeddings": config.tie_embeddings,
        **NO_SPECIAL_TOKENS,
        "torch_dtype": "float32",
    }


def gpt2_config(config: GPTConfig) -> dict:
    """config.json for GPT2LMHeadModel with the same shapes and constants as our model."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_positions": config.block_size,
        "n_inner": config.ffn_hidden,
        "activation_function": config.mlp,  # HF's "gelu" is the exact erf GELU, as nn.GELU(); not "gelu_new"
        "layer_norm_epsilon": config.norm_eps,
        # Scores are divided by sqrt(head size) and nothing else, with the softmax in the usual order.
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attention_dropout,
        "tie_word_embeddings": config.tie_embeddings,
        **NO_SPECIAL_TOKENS,
        "torch_dtype": "float32",
    }


def llama_tensors(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our weights under Llama's names: c_attn split into q, k, v, w_gate_up into gate and up; the rest renamed."""
    tensors = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # the same matrix as wte; tie_word_embeddings makes HF reuse it
        if name in LLAMA_OUTER_NAMES:
            tensors[LLAMA_OUTER_NAMES[name]] = tensor
            continue
        _, _, layer, rest = name.split(".", 3)  # transformer.h.{layer}.{module}.{weight|bias}
        module, kind = rest.rsplit(".", 1)
        prefix = f"model.layers.{layer}."
        names = LLAMA_LAYER_NAMES[module]
        for llama_name, part in zip(names, tensor.chunk(len(names), dim=0), strict=True):
            tensors[f"{prefix}{llama_name}.{kind}"] = part
    # RoPE needs no permutation: model.py pairs channel i with i + hs/2, HF Llama's "rotate half".
    return tensors


def gpt2_tensors(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our weights under GPT-2's names (the same ones), with the Conv1D weights transposed."""
    tensors = {}
    for name, tensor in state.items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue
        if name.endswith(".weight") and name.removesuffix(".weight").endswith(GPT2_CONV1D_LAYERS):
            tensor = tensor.t()
        tensors[name] = tensor
    return tensors


def best_val_bpc(metrics_path: Path, best_val_loss: float) -> float | None:
    """The bits per character logged with the best val loss in the run's metrics.jsonl, if it is there."""
    if not metrics_path.is_file():
        return None
    for line in metrics_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("val_loss") == best_val_loss:
            return record.get("val_bpc")
    return None


def model_card(checkpoint: dict, model: GPT, architecture: str, val_bpc: float | None) -> str:
    """A Hugging Face README.md for the exported folder, every fact read from the checkpoint and its run:
    YAML metadata, then the architecture, data, recipe, results, tokenizer, use, a sample, how to load."""
    from data import DEFAULT_CORPUS, VAL_FRACTION
    from generate import default_prompt, sample
    from tokenizer import tokenizer_from_state

    config, run = model.config, checkpoint.get("args") or {}
    corpus = Path(run["data"]).name if run.get("data") else DEFAULT_CORPUS.name
    shakespeare = corpus == DEFAULT_CORPUS.name
    metadata = ["---", "library_name: transformers", "pipeline_tag: text-generation", "license: unknown",
                *(["datasets:", f"- {TINY_SHAKESPEARE_HF_DATASET}"] if shakespeare else []),
                "tags:", "- tinygpt", f"- {architecture}", "---"]
    lines = [*metadata, "", f"# tinygpt: {model.num_params():,} parameters, {architecture}", "",
             "A small GPT trained from scratch with tinygpt (model.py, train.py) and exported with export.py.", "",
             "## Architecture", "", "| field | value |", "|---|---|",
             *(f"| {name} | {value} |" for name, value in asdict(config).items()), "",
             "## Data", "", f"Trained on `{corpus}`: the first {1 - VAL_FRACTION:.0%} of its characters train, "
             f"the last {VAL_FRACTION:.0%} validate.", ""]
    if run:
        recipe = ("recipe", "preset", "batch_size", "grad_accum", "max_iters", "lr", "min_lr", "warmup_iters",
                  "weight_decay", "beta2", "grad_clip", "seed", "eval_interval", "eval_windows", "dtype")
        lines += ["## Recipe", "", f"{checkpoint.get('step', '?')} optimizer steps of train.py with:", "",
                  "| setting | value |", "|---|---|", *(f"| {name} | {run.get(name)} |" for name in recipe), ""]
    if "best_val_loss" in checkpoint:
        bpc = f", {val_bpc:.3f} bits per character" if val_bpc is not None else ""
        lines += ["## Results", "", f"Best validation loss {checkpoint['best_val_loss']:.4f} nats per token{bpc}.", ""]
    tokenizer = None
    if "tokenizer" in checkpoint:
        try:
            tokenizer = tokenizer_from_state(checkpoint["tokenizer"])
        except (KeyError, RuntimeError):
            tokenizer = None
    if tokenizer is not None:
        lines += ["## Tokenizer", "", f"tinygpt's {tokenizer.name} tokenizer, {tokenizer.vocab_size} tokens, saved in "
                  f"`{TOKENIZER_FILE}`. It is not a Hugging Face tokenizer: encode and decode with tinygpt's "
                  "`tokenizer.tokenizer_from_state`.", ""]
    lines += ["## Intended use and limitations", "",
              "A teaching model: for learning how a GPT is trained and for experiments at small scale. It "
              f"imitates the style of its training text only, has a context of {config.block_size} tokens, "
              "knows nothing beyond that text and is not fit for any real use.", ""]
    if tokenizer is not None:
        prompt = default_prompt(tokenizer)
        text = sample(model, tokenizer, prompt=prompt, max_new_tokens=MODEL_CARD_SAMPLE_TOKENS, seed=0)
        lines += ["## A sample", "", f"{MODEL_CARD_SAMPLE_TOKENS} tokens after the prompt {prompt!r}, temperature 0.8, "
                  "seed 0:", "",
                  "```", text.strip("\n"), "```", ""]
    lines += ["## How to load", "", "```python", "import json, torch",
              "from transformers import AutoModelForCausalLM", "from tokenizer import tokenizer_from_state  # tinygpt",
              'model = AutoModelForCausalLM.from_pretrained("PATH")',
              f'tokenizer = tokenizer_from_state(json.load(open("PATH/{TOKENIZER_FILE}")))',
              'ids = torch.tensor([tokenizer.encode("\\n")])',
              "print(tokenizer.decode(model.generate(ids, max_new_tokens=100, do_sample=True)[0].tolist()))",
              "```", ""]
    return "\n".join(lines)


def written_by_an_export(out: Path) -> bool:
    """Whether the folder holds a previous export: a model.safetensors whose metadata records the tinygpt
    config it was exported from (export_to_hf writes it)."""
    try:
        with open(out / "model.safetensors", "rb") as file:
            header_bytes = int.from_bytes(file.read(8), "little")  # the safetensors format: length, JSON header
            header = json.loads(file.read(header_bytes)) if header_bytes < 2**24 else {}
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and "tinygpt_config" in (header.get("__metadata__") or {})


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse to overwrite anything but an empty folder, or (with force) a previous export."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another --out")
    existing = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    if existing and not force:
        raise FileExistsError(f"{out} is not empty; pass --force to replace it, or choose another --out")
    foreign = [name for name in existing if name not in EXPORT_FILES]
    if foreign:  # --force deletes the folder, so it must hold nothing the user could miss
        raise FileExistsError(f"{out} holds files an export does not write ({', '.join(foreign[:5])}); "
                              "--force only replaces a previous export: choose another --out")
    if existing and not written_by_an_export(out):  # a README.md of the user's own has an export's name
        raise FileExistsError(f"{out} holds {', '.join(existing)} but no previous export (no model.safetensors "
                              "written by export.py); --force only replaces a previous export: choose another --out")
    try:  # the folder beside it must take the export (see export_to_hf) before the work starts
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as error:
        raise ValueError(f"cannot write the export to {out} ({error.strerror or error}); choose another --out") \
            from None


def export_to_hf(checkpoint: dict | str | Path, out_dir: str | Path, force: bool = False) -> str:
    """Write a checkpoint (a file or its loaded dict) as a Hugging Face folder with its model card; return
    the architecture name. The card's bits per character come from the metrics.jsonl beside a file."""
    try:
        from safetensors.torch import save
    except ImportError:
        raise ImportError("export needs safetensors: pip install safetensors") from None
    metrics_path = None if isinstance(checkpoint, dict) else Path(checkpoint).parent / "metrics.jsonl"
    if isinstance(checkpoint, dict):
        check_finite_weights(checkpoint["model"], "the checkpoint")
    else:
        checkpoint = load_checkpoint(checkpoint)  # checks the weights are finite
    try:
        config = GPTConfig(**checkpoint["config"])
    except TypeError as error:  # a field this model.py does not know
        raise ValueError(f"the checkpoint's config does not fit this model.py: {error}") from error
    architecture = hf_architecture(config)
    out = Path(out_dir).resolve()  # so that "." has a real parent to hold the staging folder
    check_out_dir(out, force)

    model = GPT(config)  # loading into the model checks every name and shape against the config
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"the checkpoint's weights do not fit its config: {' '.join(str(error).split())}") from None
    state = model.state_dict()
    if architecture == "LlamaForCausalLM":
        hf_config, tensors = llama_config(config), llama_tensors(state, config)
    else:
        hf_config, tensors = gpt2_config(config), gpt2_tensors(state, config)
    # Own contiguous float32 copies: safetensors refuses views that share memory (the q/k/v split) and
    # strided tensors (the transposes), and float32 keeps the exported model computing what ours does.
    tensors = {name: t.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
               for name, t in tensors.items()}

    # Everything is written into a hidden folder beside the target and renamed into place at the end,
    # so a failed export never leaves a half-written model where a loader would find it.
    # (Not tempfile.mkdtemp: its folder is private to the user, and the rename would keep that.)
    staging = out.parent / f".{out.name}.{os.getpid()}.partial"
    try:
        staging.mkdir()
        (staging / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        # Our own config rides along in the metadata, so the file records what it was exported from.
        metadata = {"format": "pt", "tinygpt_config": json.dumps(asdict(config))}
        # Serialised in memory and written by Python, so the file gets the usual permissions (0666 less
        # the umask): safetensors' save_file makes it private to the user (0600).
        (staging / "model.safetensors").write_bytes(save(tensors, metadata=metadata))
        if "tokenizer" in checkpoint:
            (staging / TOKENIZER_FILE).write_text(json.dumps(checkpoint["tokenizer"], indent=2) + "\n")
        val_bpc = best_val_bpc(metrics_path, checkpoint["best_val_loss"]) if metrics_path and "best_val_loss" in \
            checkpoint else None
        (staging / MODEL_CARD_FILE).write_text(model_card(checkpoint, model, architecture, val_bpc))
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except OSError as error:  # named for the target: the hidden staging folder means nothing to the user
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"cannot write the export to {out} ({error.strerror or error}); nothing was changed "
                         "there") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return architecture


def main(argv: list[str] | None = None) -> None:
    """Command line: export --ckpt to --out; errors are one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(
        description="Export a tinygpt checkpoint as a Hugging Face folder (config.json, model.safetensors, README.md) "
                    "that transformers.AutoModelForCausalLM.from_pretrained loads. rmsnorm+swiglu+rope models "
                    "become LlamaForCausalLM, layernorm+relu|gelu+learned models with biases GPT2LMHeadModel; "
                    "other combinations have no exact equivalent and are refused.",
        epilog="A Llama folder is the input of llama.cpp's convert_hf_to_gguf.py; that script also needs a "
               "Hugging Face tokenizer, which is not written for tinygpt's own tokenizers (see docs/export.md).")
    parser.add_argument("--ckpt", required=True, help="checkpoint file written by train.py")
    parser.add_argument("--out", required=True, help="folder to create (must not exist, or be empty)")
    parser.add_argument("--force", action="store_true", help="replace --out if it holds a previous export")
    args = parser.parse_args(argv)
    try:
        architecture = export_to_hf(args.ckpt, args.out, force=args.force)
    except (OSError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {architecture} to {args.out}; load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(args.out)!r})")


if __name__ == "__main__":
    main()
