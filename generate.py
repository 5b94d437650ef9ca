"""
Generate with a tinygpt model: from logits to the next token, from a prompt to a continuation.

    uv run generate.py                                     # out/best.pt, starting from a newline
    uv run generate.py --prompt "ROMEO:" --temperature 0.8 --top-k 40
    uv run generate.py --prompt-file scene.txt --max-new-tokens 1000 --seed 1 --num-samples 3
    uv run generate.py --demo                              # a few scenes, with tokens/s for each
    uv run generate.py --no-kv-cache --seed 1 --dtype float32  # the same text as with the cache, slower
    uv run generate.py --compile                           # the decode step compiled once; later runs load it

From Python (a notebook, or train.py at the end of training):

    from generate import generate, load, sample
    model, tokenizer = load("out")                         # out/best.pt, on the best device
    print(sample(model, tokenizer, prompt="ROMEO:", max_new_tokens=200, temperature=0.8, seed=1))
    ids = generate(model, prompt_ids, max_new_tokens=100, temperature=0)  # token ids (B, T) in and out

The file reads top to bottom: filter_logits and sample_next pick the next token (temperature, top-k,
top-p); decode_step is the one-token step through the KV cache; generate_tokens repeats it, sliding the
context window once it holds block_size tokens. Then loading a checkpoint, sample() for text, and the
command line. Its flags and the compiling of the decode step live in machinery/. docs/generation.md
explains the rules, what the cache saves and when compiling pays off.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.nn import functional as F

from machinery.checkpoint import load_checkpoint, load_model
from machinery.compiling import compiled_before, compiled_step, step_key
from machinery.device import describe_device, pick_decode_dtype, pick_device
from machinery.generation import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    DEMO_PROMPTS,
    EMPTY_PROMPT,
    build_parser,
    check_command_line,
    check_prompt,
    compile_for_generation,
    compile_pays_off,
    read_prompt_file,
    stream_text,
)
from machinery.guards import run_command
from model import GPT, KVCache
from tokenizer import Tokenizer, tokenizer_from_state

# ----------------------------------------------------------------------------------------------------
# Inference: from logits to the next token, and from a prompt to a continuation


def check_sampling_settings(temperature: float, top_k: int | None, top_p: float | None,
                            max_new_tokens: int | None = None) -> None:
    """Raise ValueError, saying which and why, if a sampling setting is out of range."""
    # Written as `not (allowed)` so that NaN, which fails every comparison, is refused too.
    if not 0 <= temperature < float("inf"):
        raise ValueError(f"temperature must be a number >= 0 (0 picks the most likely token), not {temperature}")
    if top_k is not None and not top_k >= 1:
        raise ValueError(f"top-k must be at least 1 (the number of candidates kept), not {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top-p must be in (0, 1] (1 keeps every token), not {top_p}")
    if max_new_tokens is not None and not max_new_tokens >= 1:
        raise ValueError(f"max-new-tokens must be at least 1, not {max_new_tokens}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """The logits (B, vocab) the next token is drawn from: less their maximum, divided by the temperature,
    with -inf on every token the rules drop. (Subtracting the maximum leaves the softmax as it was, and
    keeps every temperature the check accepts finite: at 1e-40 the most likely token stays at 0 and the
    others go to -inf, which is greedy, where plain division would give inf - inf = NaN.)

    top_k keeps exactly the k most likely tokens (ties at the boundary go to the lower token id); top_p
    keeps the smallest set of most likely tokens whose probability reaches top_p. Temperature 0 is
    greedy: only the most likely token is kept, whatever top_k and top_p say.
    """
    check_sampling_settings(temperature, top_k, top_p)
    if temperature == 0:
        best = logits.argmax(dim=-1, keepdim=True)
        return torch.full_like(logits, float("-inf")).scatter_(-1, best, logits.gather(-1, best))
    # In float64, where the smallest temperature the check accepts (5e-324) is not 0.
    logits = ((logits.double() - logits.amax(dim=-1, keepdim=True)) / temperature).to(logits.dtype)
    if top_k is not None and top_k < logits.size(-1):
        order = torch.sort(logits, dim=-1, descending=True, stable=True).indices
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order[:, :top_k], True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        probs = F.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = before >= top_p  # the set already reached top_p without this token
        drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token (B, 1) from logits (B, vocab): the argmax at temperature 0, else one draw
    from what filter_logits keeps."""
    logits = filter_logits(logits, temperature, top_k, top_p)
    if temperature == 0:  # no draw, so the generator's state is left as it was
        return logits.argmax(dim=-1, keepdim=True)
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)


def decode_step(model: GPT, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """The logits (B, vocab) for what follows one new token (B, 1), fed through the cache: the step that
    generation repeats for every token after the prompt."""
    logits, _ = model(token, kv_cache=cache)
    return logits[:, -1, :].float()


@torch.no_grad()
def generate_tokens(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                    top_k: int | None = None, top_p: float | None = None, use_kv_cache: bool = True,
                    generator: torch.Generator | None = None,
                    compile_step: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (next_token (B, 1), logits (B, vocab)) for each new token after the prompt idx (B, T).

    The model never sees more than block_size tokens. When the context is full, the oldest quarter
    is dropped: the model then reads the newest 3/4 * block_size tokens (with the cache: they are
    prefilled into a fresh cache) and grows the window again one token at a time. With and without
    the cache the model sees exactly the same context at every step, so the logits agree.
    compile_step (with the cache only): each one-token step runs decode_step compiled; the prompt and
    each refill of the window still run the model as it is.
    """
    if compile_step and not use_kv_cache:
        raise ValueError("a compiled decode step needs the KV cache")
    step = compiled_step(decode_step, model, idx.size(0)) if compile_step else decode_step  # machinery/compiling.py
    block_size = model.config.block_size
    keep = max(1, block_size - block_size // 4)
    seq = idx
    start = max(0, seq.size(1) - block_size)  # first token of the context window
    cache = model.new_kv_cache() if use_kv_cache else None
    fed = 0  # with the cache: how many tokens of the window are already in it
    next_token = seq[:, -1:]  # the token the next step feeds in, once the cache holds the rest
    for _ in range(max_new_tokens):
        if seq.size(1) - start > block_size:  # window full: slide it
            start = seq.size(1) - keep
            fed = 0
        if cache is not None and fed > 0:  # one new token: the step every later token repeats
            logits = step(model, next_token, cache)  # not seq[:, -1:], whose strides change every step
        elif cache is not None:  # the prompt, or a refilled window, into an empty cache
            cache.reset()
            logits = model(seq[:, start:], kv_cache=cache)[0][:, -1, :].float()
        else:
            logits = model(seq[:, start:])[0][:, -1, :].float()
        fed = seq.size(1) - start
        next_token = sample_next(logits, temperature, top_k, top_p, generator)
        seq = torch.cat((seq, next_token), dim=1)
        yield next_token, logits


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, use_kv_cache: bool = True,
             generator: torch.Generator | None = None, compile_step: bool = False) -> torch.Tensor:
    """The prompt idx (B, T) followed by max_new_tokens sampled tokens, (B, T + max_new_tokens)."""
    steps = generate_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, use_kv_cache, generator,
                            compile_step)
    return torch.cat([idx, *(token for token, _ in steps)], dim=1)


def warm_up_compiled_step(model: GPT) -> float:
    """Compile the decode step for this model at batch 1 now (or load what an earlier run compiled), by
    generating two tokens, and return the seconds it took. Raises what torch raises when it cannot
    compile (no C++ compiler, say)."""
    device = next(model.parameters()).device
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in generate_tokens(model, prompt, 2, temperature=0, compile_step=True):
            pass
    return time.perf_counter() - started


# ----------------------------------------------------------------------------------------------------
# Loading a checkpoint, and text in, text out


def load(ckpt_or_out_dir: str | Path = "out", device: str | torch.device = "auto",
         dtype: str = "auto") -> tuple[GPT, Tokenizer]:
    """Load a model (in eval mode, on `device`, weights in `dtype`) and its tokenizer from a checkpoint file,
    or an out dir's best.pt. dtype "auto" is device.pick_decode_dtype's choice for the device and the model.

    Raises FileNotFoundError or ValueError with a message that says what is wrong with the file.
    """
    if isinstance(device, str):
        device = pick_device(device)
    path = Path(ckpt_or_out_dir)
    if path.is_dir():
        path = path / "best.pt"
    checkpoint = load_checkpoint(path, device)  # read once: it holds both the weights and the tokenizer
    if "tokenizer" not in checkpoint:
        raise ValueError(f"{path} has no tokenizer inside, so its token ids cannot be turned into text")
    try:
        model = load_model(checkpoint, device)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    try:
        tokenizer = tokenizer_from_state(checkpoint["tokenizer"])
    except (KeyError, RuntimeError) as error:  # an incomplete tokenizer state, or tiktoken missing for "gpt2"
        raise ValueError(f"cannot rebuild the tokenizer of {path}: {error}") from error
    return model.to(pick_decode_dtype(model, device, dtype)).eval(), tokenizer  # load_model built it on device


def default_prompt(tokenizer: Tokenizer) -> str:
    """A newline (the model starts a fresh line of a play), or the vocabulary's first token without one."""
    return "\n" if not tokenizer.unknown_chars("\n") else tokenizer.decode([0])


def sample(model: GPT, tokenizer: Tokenizer, prompt: str | None = None, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
           temperature: float = DEFAULT_TEMPERATURE, top_k: int | None = None, top_p: float | None = None,
           seed: int | None = None, use_kv_cache: bool = True, stream: Callable[[str], object] | None = None,
           drop_unknown: bool = False, compile_step: bool = False) -> str:
    """Continue `prompt` with max_new_tokens sampled tokens; return the prompt and the continuation as text.

    prompt None means default_prompt(tokenizer). temperature 0 is greedy; top_k and top_p narrow the
    candidates (see filter_logits). The same seed gives the same text; None draws fresh randomness.
    stream, if given, is called with each piece of text as soon as it is complete, the prompt first,
    so the pieces joined are the returned text. Characters the tokenizer does not know raise ValueError,
    or are left out with drop_unknown. The model samples in eval mode (no dropout), then gets its mode back.
    compile_step: run each one-token step compiled (generate_tokens; warm_up_compiled_step compiles it first).
    """
    check_sampling_settings(temperature, top_k, top_p, max_new_tokens)
    if prompt is None:
        prompt = default_prompt(tokenizer)
    prompt_ids = tokenizer.encode(prompt, drop_unknown=drop_unknown)
    if not prompt_ids:
        raise ValueError(EMPTY_PROMPT)
    device = next(model.parameters()).device
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T): a batch of one
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            steps = generate_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, use_kv_cache,
                                    generator, compile_step)
            if stream is None:  # no per-token .item(): the device runs ahead, the ids are copied back once
                new_ids = torch.cat([token for token, _ in steps], dim=1)[0].tolist()
            else:
                new_ids = stream_text(steps, tokenizer, prompt_ids, stream)
    finally:
        model.train(was_training)
    return tokenizer.decode(prompt_ids + new_ids)


def print_sample(checkpoint_path: Path, device: torch.device, max_new_tokens: int) -> None:
    """Print a sample of the checkpoint's text from a newline, as train.py does at the end of a run to show
    what was learned: the default temperature, seed 0, printed as it is produced."""
    model, tokenizer = load(checkpoint_path, device=str(device.type))
    print(f"\n--- a sample from {checkpoint_path} ---", flush=True)
    sample(model, tokenizer, prompt="\n", max_new_tokens=max_new_tokens, seed=0,
           stream=lambda piece: print(piece, end="", flush=True))
    print("\n---", flush=True)


# ----------------------------------------------------------------------------------------------------
# The command line (its flags: machinery/generation.py)


def run(args: argparse.Namespace) -> None:
    """Load the checkpoint and print each requested sample, with its speed on stderr."""
    check_sampling_settings(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    check_command_line(args.num_samples, args.compile, args.use_kv_cache)
    device = pick_device(args.device)
    prompt = read_prompt_file(args.prompt_file) if args.prompt_file is not None else args.prompt
    scenes = len(DEMO_PROMPTS) if args.demo else 1
    path = Path(args.ckpt) if args.ckpt else Path(args.out_dir) / "best.pt"
    model, tokenizer = load(path, device, args.dtype)
    prompts = DEMO_PROMPTS if args.demo else (default_prompt(tokenizer) if prompt is None else prompt,)
    for prompt in prompts:
        check_prompt(prompt, tokenizer, args.drop_unknown)
    cached = compiled_before(step_key(model))  # an earlier run's compiled step is kept on disk: machinery/compiling.py
    tokens = args.max_new_tokens * args.num_samples * scenes
    if compile_pays_off(args.compile, args.use_kv_cache, tokens, cached):
        compile_step = compile_for_generation(lambda: warm_up_compiled_step(model), bool(args.compile), cached)
    else:
        compile_step = False
    dtype = next(model.parameters()).dtype
    step = "compiled" if compile_step else "eager"
    if not compile_step and not cached and args.compile is None and args.use_kv_cache:
        step += " (run once with --compile, half a minute: later runs load it compiled)"
    print(f"{path}: {model.num_params() / 1e6:.2f}M parameters, {tokenizer.name} tokenizer "
          f"({tokenizer.vocab_size} tokens), {describe_device(device)}, {str(dtype).removeprefix('torch.')}, "
          f"KV cache {'on' if args.use_kv_cache else 'off'}, decode step {step}", file=sys.stderr)
    for scene, prompt in enumerate(prompts):
        for i in range(args.num_samples):
            labels = [f"scene {scene + 1} of {len(prompts)}"] if args.demo else []
            labels += [f"sample {i + 1} of {args.num_samples}"] if args.num_samples > 1 else []
            if labels:
                print(f"--- {', '.join(labels)} ---", flush=True)
            started = time.perf_counter()
            text = sample(model, tokenizer, prompt, args.max_new_tokens, args.temperature, args.top_k,
                          args.top_p, None if args.seed is None else args.seed + i, args.use_kv_cache,
                          stream=lambda piece: print(piece, end="", flush=True),
                          drop_unknown=args.drop_unknown, compile_step=compile_step)
            seconds = time.perf_counter() - started
            print("" if text.endswith("\n") else "\n", end="", flush=True)
            print(f"[{args.max_new_tokens} tokens in {seconds:.2f} s: {args.max_new_tokens / seconds:.0f} tokens/s]",
                  file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code: 0, or 2 with one `error:` line for anything to fix."""
    return run_command(lambda: run(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
