"""
generate.py's command line: its flags and defaults, the prompts it reads and checks, and the choice to
compile the decode step (on where it pays off, machinery/compiling.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from machinery.compiling import caching_compiled_code, without_cuda_runtime_notice
from machinery.device import DEVICES, DTYPES
from machinery.guards import ArgumentParser
from tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_NEW_TOKENS = 500
DEFAULT_TEMPERATURE = 0.8
# Compiling the decode step takes half a minute once, loading what an earlier run compiled milliseconds, then
# each token is faster: from this many tokens on each pays for itself. bench.py generate measures the two
# break-evens (bench_generate_cpu_bf16_epyc and its float32 twin in docs/generation.md, a first run and a
# later one); these are the largest measured, rounded up.
COMPILE_PAYS_OFF_AFTER = 30_000
COMPILE_PAYS_OFF_AFTER_CACHED = 20
# The openings --demo continues: a speaker's name, as every speech in Tiny Shakespeare begins.
DEMO_PROMPTS = (
    "ROMEO:\n",
    "JULIET:\nO Romeo, Romeo!",
    "KING RICHARD III:\nNow is the winter of our discontent",
    "First Citizen:\n",
)
REPLACEMENT_CHAR = "\ufffd"  # what UTF-8 decoding puts where the bytes of a character are incomplete
EMPTY_PROMPT = "the prompt is empty (or nothing is left of it): the model needs a token to start from"


def build_parser() -> ArgumentParser:
    """The command line; its --help is the manual."""
    parser = ArgumentParser(
        description="Sample text from a trained tinygpt checkpoint, printed as it is produced.",
        epilog="Errors are one line on stderr, exit code 2. Sampling rules: docs/generation.md.",
    )
    parser.add_argument("--out-dir", default="out", metavar="DIR",
                        help="training output directory: its best.pt is used (default: out)")
    parser.add_argument("--ckpt", metavar="PATH", help="checkpoint file to use instead of OUT_DIR/best.pt")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt", metavar="TEXT",
                        help="text to continue (default: a newline, a fresh line of the play)")
    source.add_argument("--prompt-file", metavar="PATH", help="read the text to continue from a UTF-8 file")
    source.add_argument("--demo", action="store_true",
                        help="continue a few built-in Shakespeare openings, one after another")
    parser.add_argument("--drop-unknown", action="store_true",
                        help="leave out prompt characters the model's vocabulary lacks (default: refuse them)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                        help=f"tokens to generate per sample, >= 1 (default: {DEFAULT_MAX_NEW_TOKENS})")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, metavar="T",
                        help="divide the logits by this, >= 0: below 1 is safer, above 1 wilder, "
                             f"0 always picks the most likely token (default: {DEFAULT_TEMPERATURE})")
    parser.add_argument("--top-k", type=int, metavar="K",
                        help="sample only from the k most likely tokens, >= 1 (default: all)")
    parser.add_argument("--top-p", type=float, metavar="P",
                        help="sample only from the fewest most likely tokens whose probability reaches p, "
                             "in (0, 1] (default: all)")
    parser.add_argument("--seed", type=int, metavar="SEED",
                        help="random seed, to repeat a run; sample i of --num-samples uses SEED + i "
                             "(default: different text every run)")
    parser.add_argument("--num-samples", type=int, default=1, metavar="N",
                        help="how many samples to draw, >= 1 (default: 1)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where to run (default: auto, the best found)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="auto",
                        help="precision the weights are stored in for generation (default: auto: bfloat16 on "
                             "CUDA (float16 on GPUs without it); on a CPU with native bf16 units whichever of "
                             "bfloat16 and float32 is measured faster there, once; float32 elsewhere; see "
                             "device.py)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile the one-token decode step ahead of time (torch.export and AOTInductor): "
                             "half a minute once, then faster tokens; what it builds is kept in "
                             "~/.cache/tinygpt/compiled, and later runs load it in milliseconds (default: on "
                             f"when the run generates at least {COMPILE_PAYS_OFF_AFTER:,} tokens, or "
                             f"{COMPILE_PAYS_OFF_AFTER_CACHED:,} once an earlier run compiled the same step, "
                             "where it was measured to pay off; docs/generation.md)")
    parser.add_argument("--no-kv-cache", dest="use_kv_cache", action="store_false",
                        help="recompute every past token at every step, slower: the same text in float32; "
                             "in bfloat16 the logits agree to bf16 precision (docs/generation.md)")
    return parser


def check_command_line(num_samples: int, compile_step: bool | None, use_kv_cache: bool) -> None:
    """Refuse flags that cannot work together (the sampling settings are generate.py's own check)."""
    if num_samples < 1:
        raise ValueError(f"num-samples must be at least 1, not {num_samples}")
    if compile_step and not use_kv_cache:
        raise ValueError("--compile compiles the step that reads the KV cache: leave out --no-kv-cache")


def read_prompt_file(path: str) -> str:
    """The text of a prompt file, with a one-line ValueError if it cannot be read as UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"--prompt-file {path} is not UTF-8 text (bad byte at offset {error.start})") from error
    except OSError as error:
        raise ValueError(f"cannot read --prompt-file {path}: {error.strerror}") from error


def check_prompt(prompt: str, tokenizer: Tokenizer, drop_unknown: bool) -> None:
    """Refuse an empty prompt or one with characters outside the vocabulary, or say which will be dropped."""
    unknown = tokenizer.unknown_chars(prompt)
    shown = ", ".join(repr(c) for c in unknown)
    if unknown and not drop_unknown:
        raise ValueError(f"the prompt has {len(unknown)} character(s) that are not in the model's "
                         f"{tokenizer.vocab_size}-token vocabulary: {shown}; remove them or pass --drop-unknown")
    if all(c in unknown for c in prompt):  # true of "" too
        raise ValueError(EMPTY_PROMPT)
    if unknown:
        print(f"dropping {len(unknown)} character(s) not in the vocabulary from the prompt: {shown}",
              file=sys.stderr)


def compile_pays_off(asked: bool | None, use_kv_cache: bool, tokens: int, cached: bool) -> bool:
    """Whether to compile the decode step: as --compile says, or, unset, when the run generates through the
    cache at least COMPILE_PAYS_OFF_AFTER tokens, or COMPILE_PAYS_OFF_AFTER_CACHED where an earlier run
    compiled the same step (cached: compiling.compiled_before)."""
    if asked is not None:
        return asked
    return use_kv_cache and tokens >= (COMPILE_PAYS_OFF_AFTER_CACHED if cached else COMPILE_PAYS_OFF_AFTER)


def compile_for_generation(warm_up: Callable[[], float], asked: bool, cached: bool) -> bool:
    """Compile the decode step before the first sample (warm_up, which returns the seconds it took), or load
    it where an earlier run built it (cached), saying how long it took; return whether it is compiled. If
    compiling fails (it needs a C++ compiler on a CPU), it is an error where --compile asked for it
    (asked), while the automatic choice says so and generates eagerly."""
    if not cached:  # half a minute: said before it starts, not after a silent wait (loading takes milliseconds)
        print("compiling the decode step (half a minute, once: later runs load it)...", file=sys.stderr, flush=True)
    try:
        # a CPU-only machine needs no CUDA: torch's line about it only alarms
        with without_cuda_runtime_notice(), caching_compiled_code():
            seconds = warm_up()
    except Exception as error:  # compiling's failures come in many types (a compiler missing, ...)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if asked:
            raise ValueError(f"torch could not compile the decode step ({reason}); run without --compile") from error
        print(f"torch could not compile the decode step ({reason}): generating without it", file=sys.stderr)
        return False
    done = "loaded the compiled decode step an earlier run built" if cached else "compiled the decode step"
    print(f"[{done} in {seconds:.1f} s]", file=sys.stderr, flush=True)
    return True


class StreamDecoder:
    """Turns token ids into text one token at a time, never printing half a character.

    With byte-level BPE one character can span several tokens: until its last byte arrives, decoding
    ends in U+FFFD. Such text is held back and decoded again with the next token. Each returned piece
    starts where the last one ended, so the pieces joined equal tokenizer.decode(all ids).
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.pending: list[int] = []  # ids whose text is not complete yet

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now complete ("" while a character is unfinished)."""
        self.pending.append(token_id)
        text = self.tokenizer.decode(self.pending)
        if text.endswith(REPLACEMENT_CHAR):
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        """Return whatever is held back, incomplete or not: the stream has ended."""
        text = self.tokenizer.decode(self.pending)
        self.pending = []
        return text


def stream_text(steps: Iterable[tuple[torch.Tensor, torch.Tensor]], tokenizer: Tokenizer, prompt_ids: list[int],
                stream: Callable[[str], object]) -> list[int]:
    """Hand stream the prompt's text, then each piece of text as soon as it is complete, as generate_tokens
    yields the tokens (steps); return the new token ids."""
    stream(tokenizer.decode(prompt_ids))
    decoder = StreamDecoder(tokenizer)
    new_ids = []
    for token, _ in steps:
        new_ids.append(token.item())  # the one sync per token that printing needs
        piece = decoder.push(new_ids[-1])
        if piece:
            stream(piece)
    rest = decoder.flush()
    if rest:
        stream(rest)
    return new_ids
