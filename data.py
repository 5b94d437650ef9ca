"""
The training text: where to find it, how to read it safely, how it is split, encoded and batched.

The default corpus is Tiny Shakespeare. It is looked for, in order, at the path given (--data), at
$TINYGPT_DATA, and at data/tinyshakespeare.txt beside this file; if none exists it is downloaded from
its canonical address. Its size and sha256 are checked, whenever a file of that name is read
(a truncated or edited copy would otherwise train without a word, with a smaller vocabulary).
Offline with no copy, the error says where to put it.

The split is the standard one so numbers compare with published results: the first 90% of the
characters train, the last 10% validate. Each part is encoded once and cached as a uint16 array.
load_corpus does all of this for train.py and returns the token ids of both splits (a Corpus), with
a record of the file (its resolved path, sha256 and size) that train.py saves in every checkpoint, so
that --resume trains on the same text (machinery/corpus_check.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from machinery.files import atomic_file, write_atomically
from tokenizer import Tokenizer, build_tokenizer, tokenizer_from_state

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_BYTES = 1_115_394
DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_CORPUS = DATA_DIR / "tinyshakespeare.txt"
DATA_ENV_VAR = "TINYGPT_DATA"
VAL_FRACTION = 0.1


class DataError(Exception):
    """A problem with the training text that the user can fix; the message says how."""


def find_corpus(path: str | None = None) -> Path:
    """The corpus to train on: the given path, $TINYGPT_DATA, the local copy, or a fresh download.
    A path that was given but holds no file is a DataError naming where it came from."""
    if path:
        return existing_file(Path(path), "check the path given to --data")
    if os.environ.get(DATA_ENV_VAR):
        return existing_file(Path(os.environ[DATA_ENV_VAR]),
                             f"${DATA_ENV_VAR} points there: set it to a text file, or unset it")
    if not DEFAULT_CORPUS.exists():
        download_tiny_shakespeare(DEFAULT_CORPUS)
    return DEFAULT_CORPUS


def check_tiny_shakespeare(path: Path) -> None:
    """Raise DataError unless the file at path is the real Tiny Shakespeare (size first: it is cheap)."""
    size = path.stat().st_size
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if size == TINY_SHAKESPEARE_BYTES else None
    if digest != TINY_SHAKESPEARE_SHA256:
        raise DataError(f"{path} is not the Tiny Shakespeare its name says ({size:,} bytes"
                        f"{f', sha256 {digest}' if digest else ''}; expected {TINY_SHAKESPEARE_BYTES:,} bytes, "
                        f"sha256 {TINY_SHAKESPEARE_SHA256}): it is truncated or changed; delete it to download "
                        "it again, or give your own text another file name")


def download_tiny_shakespeare(destination: Path) -> None:
    """Download Tiny Shakespeare, check its sha256, and write it to destination atomically."""
    print(f"downloading Tiny Shakespeare from {TINY_SHAKESPEARE_URL}", flush=True)
    try:
        with urllib.request.urlopen(TINY_SHAKESPEARE_URL, timeout=30) as response:
            content = response.read()
    except OSError as error:
        raise DataError(f"could not download Tiny Shakespeare ({error}); offline, copy it to {destination} "
                        f"(mkdir -p {destination.parent} first), set {DATA_ENV_VAR}=PATH, "
                        "or pass --data PATH") from error
    digest = hashlib.sha256(content).hexdigest()
    if digest != TINY_SHAKESPEARE_SHA256:
        raise DataError(f"the downloaded Tiny Shakespeare has sha256 {digest}, expected {TINY_SHAKESPEARE_SHA256}; "
                        f"nothing was saved: download it by hand to {destination}")
    write_atomically(destination, content)


def min_chars_for_char_tokens(block_size: int) -> int:
    """The shortest text whose split gives one context of block_size + 1 characters to each of training and
    validation (what a character-level run needs at the least)."""
    chars = math.ceil((block_size + 1) / VAL_FRACTION) - 10  # just below the answer; validation is the smaller part
    while chars - int(chars * (1 - VAL_FRACTION)) < block_size + 1:
        chars += 1
    return chars


def corpus_record(path: Path, raw: bytes, text: str) -> dict:
    """What a checkpoint records of the text it was trained on: its resolved path, sha256 and size."""
    return {"path": str(path.resolve()), "sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw),
            "chars": len(text)}


def read_text(path: Path, min_chars: int = 1) -> str:
    """The file's text, with a clear DataError if it is missing, not UTF-8, or shorter than min_chars."""
    path = existing_file(path, "check the path")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (bad byte at offset {error.start}); "
                        "convert it, e.g. iconv -t utf-8") from error
    if not text:
        raise DataError(f"{path} is empty: give a text file with something to learn from")
    if len(text) < min_chars:
        raise DataError(f"{path} has {len(text):,} character{'s' if len(text) != 1 else ''}, too short for this run: "
                        f"it needs at least {min_chars:,} (one context for training and one for validation, "
                        f"{VAL_FRACTION:.0%} of the text); use a longer text or a smaller --block-size")
    return text


def existing_file(path: Path, what_to_do: str) -> Path:
    """path, if a file is there; else a DataError that says so and what_to_do."""
    if not path.is_file():
        raise DataError(f"no text file at {path}: {what_to_do}")
    return path


def split_text(text: str) -> tuple[str, str]:
    """The standard split: the first 90% of the characters train, the last 10% validate."""
    cut = int(len(text) * (1 - VAL_FRACTION))
    return text[:cut], text[cut:]


def encode_cached(text: str, tokenizer, cache_dir: Path = DATA_DIR / "cache") -> np.ndarray:
    """text encoded by the tokenizer as uint16, computed once and then read from a cache file.

    The cache file is named by a hash of the text and the tokenizer, so a changed corpus or
    vocabulary never reads a stale file.
    """
    if tokenizer.vocab_size > 2**16:
        raise ValueError(f"vocabulary of {tokenizer.vocab_size} does not fit the uint16 token cache")
    key = hashlib.sha256(text.encode("utf-8"))
    key.update(json.dumps(tokenizer.state_dict(), sort_keys=True).encode("utf-8"))
    cache_file = cache_dir / f"{key.hexdigest()[:24]}.npy"
    if cache_file.exists():
        return np.load(cache_file)
    tokens = np.array(tokenizer.encode(text), dtype=np.uint16)
    try:
        with atomic_file(cache_file) as file:
            np.save(file, tokens)
    except OSError:  # a read-only checkout still trains, it just encodes every time
        pass
    return tokens


def get_batch(tokens: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of windows: inputs x (B, T) and targets y (B, T), y shifted one token left.

    tokens is the whole split as a CPU int64 tensor; offsets are drawn with the given generator so a
    run is reproducible. On CUDA the batch is copied from pinned memory without blocking.
    """
    offsets = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)
    windows = torch.stack([tokens[i:i + block_size + 1] for i in offsets.tolist()])  # (B, T+1)
    x, y = windows[:, :-1], windows[:, 1:]
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def eval_windows(n_tokens: int, block_size: int, max_windows: int | None = None) -> list[int]:
    """Start offsets of the fixed windows on which validation loss is measured.

    Consecutive non-overlapping windows cover every token of the split but the first; the last one
    is moved back to end at the split's end (its already-covered targets are masked out by
    eval_batches). With max_windows, an evenly spaced subset: the same windows every time.
    """
    if n_tokens < block_size + 1:
        raise ValueError(f"{n_tokens} tokens cannot fill one window of {block_size} + 1")
    starts = list(range(0, n_tokens - block_size, block_size))
    if starts[-1] + block_size + 1 < n_tokens:
        starts.append(n_tokens - block_size - 1)
    if max_windows is not None and max_windows < len(starts):
        picks = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = [starts[i] for i in picks]
    return starts


def eval_batches(tokens: torch.Tensor, starts: list[int], block_size: int, batch_size: int,
                 device: torch.device):
    """Yield (x, y) batches over the fixed windows; targets already scored by an earlier window are -1."""
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        x = torch.stack([tokens[s:s + block_size] for s in chunk])
        y = torch.stack([tokens[s + 1:s + block_size + 1] for s in chunk]).clone()
        for row, start in enumerate(chunk):
            covered_until = starts[first + row - 1] + block_size if first + row > 0 else 0
            overlap = covered_until - start  # targets at positions < covered_until were scored already
            if overlap > 0:
                y[row, :overlap] = -1
        yield x.to(device), y.to(device)


@dataclass
class Corpus:
    """The text as token ids: what the loop trains and validates on."""

    name: str
    tokenizer: Tokenizer
    train_tokens: torch.Tensor
    val_tokens: torch.Tensor
    val_starts: list[int]  # the fixed validation windows
    # Bits per character compare tokenizers fairly: all nats over the val text / its characters / ln 2.
    # Every val token but the first is scored, so the first token's characters are not counted.
    val_chars_scored: int
    record: dict  # corpus_record: what the checkpoint saves, to check on --resume


def load_corpus(path: str | None, tokenizer_state: dict | None, tokenizer_kind: str, vocab_size: int | None,
                block_size: int, max_eval_windows: int = 0) -> Corpus:
    """Read the text at path (see find_corpus), split it, rebuild the saved tokenizer or build one from the
    training split, and encode both splits. max_eval_windows: see eval_windows (0: every window)."""
    corpus_path = find_corpus(path)
    if corpus_path.name == DEFAULT_CORPUS.name and corpus_path.is_file():
        check_tiny_shakespeare(corpus_path)
    # A character vocabulary is built from the training split, so a text too short to split would be
    # reported as characters missing from an empty vocabulary: say it is too short instead.
    char_level = (tokenizer_state["name"] if tokenizer_state else tokenizer_kind) == "char"
    text = read_text(corpus_path, min_chars_for_char_tokens(block_size) if char_level else 1)
    train_text, val_text = split_text(text)
    try:
        tokenizer = (tokenizer_from_state(tokenizer_state) if tokenizer_state
                     else build_tokenizer(tokenizer_kind, train_text, vocab_size))
    except RuntimeError as error:  # "gpt2" without tiktoken, or offline on first use
        raise ValueError(str(error)) from error
    splits = {"training": encode_cached(train_text, tokenizer), "validation": encode_cached(val_text, tokenizer)}
    for name, ids in splits.items():
        if len(ids) < block_size + 1:
            raise ValueError(f"{corpus_path} gives only {len(ids)} {name} tokens, fewer than one context of "
                             f"{block_size} + 1; use a longer text or a smaller --block-size")
    train_tokens, val_tokens = (torch.from_numpy(ids.astype("int64")) for ids in splits.values())
    return Corpus(corpus_path.name, tokenizer, train_tokens, val_tokens,
                  eval_windows(len(val_tokens), block_size, max_eval_windows or None),
                  len(val_text) - len(tokenizer.decode(splits["validation"][:1].tolist())),
                  corpus_record(corpus_path, text.encode("utf-8"), text))  # strict UTF-8: the same bytes
