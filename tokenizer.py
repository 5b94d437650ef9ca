"""Tokenizers: turn text into the integer ids a GPT reads, and back.

Three tokenizers share one small interface (`Tokenizer` below):

- `CharTokenizer`: one id per distinct character of the training text (65 on Tiny Shakespeare, in
  sorted order, the same ids as nanoGPT's shakespeare_char so results compare).
- `BPETokenizer`: byte-level byte-pair encoding trained from scratch here (Sennrich et al. 2016,
  "Neural Machine Translation of Rare Words with Subword Units"; byte-level as in GPT-2, Radford et al.
  2019). It starts from the 256 byte values and repeatedly merges the most frequent adjacent pair into
  a new token, so any Unicode text can be encoded.
- `GPT2Tokenizer`: GPT-2's pretrained 50,257-token encoding, through the optional `tiktoken` package.

Loss per token is not comparable across tokenizers; `bits_per_char` is.
"""

import functools
import heapq
import math
import re
from collections import Counter
from itertools import pairwise
from typing import Protocol

# Text is cut into chunks before BPE so that merges stay inside a word, a number, a run of punctuation
# or a run of spaces: " the" can become one token, "the." cannot. This is GPT-2's pattern written for
# Python's `re`, which lacks \p{L} and \p{N}: [^\W\d_] is "a letter", \d "a digit", and (?:[^\s\w]|_)
# "anything else but space". \s+(?!\S) leaves the last space of a run to prefix the next word.
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""

# tiktoken splits text with Rust's regex engine, which agrees with Python's `re` on printable ASCII but
# not on all of Unicode: Python's \w includes "²", Rust's does not, so "x²" is one chunk here and two
# there, and a merge learned inside it would not apply. Only text made of these characters takes the
# tiktoken path.
_PLAIN_ASCII = re.compile(r"[\t\n\r\x20-\x7e]*")


class Tokenizer(Protocol):
    """The interface every tokenizer here provides."""

    name: str  # "char", "bpe" or "gpt2"
    vocab_size: int

    def encode(self, text: str, drop_unknown: bool = False) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def unknown_chars(self, text: str) -> list[str]: ...

    def state_dict(self) -> dict: ...


class CharTokenizer:
    """One token per character, from a fixed vocabulary of characters."""

    name = "char"

    def __init__(self, chars: list[str]):
        self.chars = list(chars)
        self.vocab_size = len(self.chars)
        self.char_to_id = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Build the vocabulary from the sorted distinct characters of `text`."""
        return cls(sorted(set(text)))

    def unknown_chars(self, text: str) -> list[str]:
        """Return the sorted distinct characters of `text` that are not in the vocabulary."""
        return sorted(set(text) - self.char_to_id.keys())

    def encode(self, text: str, drop_unknown: bool = False) -> list[int]:
        """Return the id of each character; unknown ones raise ValueError unless `drop_unknown`."""
        unknown = self.unknown_chars(text)
        if unknown and not drop_unknown:
            shown = ", ".join(repr(c) for c in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
            raise ValueError(
                f"{len(unknown)} character(s) are not in the {self.vocab_size}-character vocabulary: "
                f"{shown}; remove them, pass --drop-unknown (generate.py) or drop_unknown=True (Python), "
                "or use a byte-level tokenizer ('bpe' or 'gpt2')"
            )
        return [self.char_to_id[c] for c in text if c in self.char_to_id]

    def decode(self, ids: list[int]) -> str:
        """Return the characters of `ids` joined into a string."""
        return "".join(self.chars[i] for i in ids)

    def state_dict(self) -> dict:
        """Return everything needed to rebuild this tokenizer, as plain Python values."""
        return {"name": self.name, "chars": "".join(self.chars)}


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Return `ids` with every occurrence of `pair`, scanned left to right, replaced by `new_id`."""
    merged = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


class BPETokenizer:
    """Byte-level BPE: ids 0-255 are the bytes, each id above is a learned merge of two earlier ids."""

    name = "bpe"

    def __init__(self, merges: list[tuple[int, int]], pattern: str = SPLIT_PATTERN):
        self.pattern = pattern
        self.split = re.compile(pattern)
        # merges[pair] is the id of the token made from the pair; ids grow in the order merges were
        # learned, so a lower id is also an earlier, higher-priority merge.
        self.merges = {tuple(pair): 256 + rank for rank, pair in enumerate(merges)}
        self.vocab = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.vocab_size = len(self.vocab)
        self._chunk_cache: dict[str, list[int]] = {}  # text repeats its words, so encode each once

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = SPLIT_PATTERN) -> "BPETokenizer":
        """Learn `vocab_size - 256` merges from `text`: repeatedly merge its most frequent adjacent pair.

        Counting is done over distinct chunks weighted by how often each occurs (Tiny Shakespeare's
        267k chunks are 14k distinct ones). After each merge only the chunks that contained the merged
        pair are rewritten and their pair counts updated, found through an index pair -> chunks, and
        the most frequent pair comes from a heap. Ties go to the lowest pair, so training is
        deterministic. Stops early if every chunk has become a single token.
        """
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"BPE vocab_size must be an int >= 256 (256 bytes + merges), got {vocab_size!r}")
        chunk_counts = Counter(re.findall(pattern, text))
        chunks = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        weights = list(chunk_counts.values())

        pair_counts: Counter = Counter()
        chunks_with_pair: dict[tuple[int, int], set[int]] = {}
        for index, (ids, weight) in enumerate(zip(chunks, weights, strict=True)):
            for pair in pairwise(ids):
                pair_counts[pair] += weight
                chunks_with_pair.setdefault(pair, set()).add(index)
        # heapq is a min-heap: store -count so the most frequent pair (then the lowest) pops first.
        # Entries go stale when counts change; a popped entry is used only if it matches the count.
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        merges = []
        while len(merges) < vocab_size - 256 and heap:
            negative_count, pair = heapq.heappop(heap)
            if pair_counts.get(pair, 0) != -negative_count:
                continue
            new_id = 256 + len(merges)
            merges.append(pair)
            changed = set()
            for index in chunks_with_pair.pop(pair):
                old_ids = chunks[index]
                new_ids = _merge(old_ids, pair, new_id)
                old_pairs, new_pairs = Counter(pairwise(old_ids)), Counter(pairwise(new_ids))
                for p in old_pairs.keys() | new_pairs.keys():
                    delta = (new_pairs[p] - old_pairs[p]) * weights[index]
                    if delta:
                        pair_counts[p] += delta
                        changed.add(p)
                    if p in new_pairs:
                        chunks_with_pair.setdefault(p, set()).add(index)
                    elif p in chunks_with_pair:
                        chunks_with_pair[p].discard(index)
                chunks[index] = new_ids
            for p in changed:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
                else:
                    del pair_counts[p]
        return cls(merges, pattern)

    def unknown_chars(self, text: str) -> list[str]:
        """Return []: every character is made of bytes, and every byte has a token."""
        return []

    def encode(self, text: str, drop_unknown: bool = False) -> list[int]:
        """Return the token ids of `text` (`drop_unknown` is ignored: nothing is unknown)."""
        if self._tiktoken_encoding is not None and _PLAIN_ASCII.fullmatch(text):
            return self._tiktoken_encoding.encode_ordinary(text)  # the same ids, computed in Rust
        return self._encode_with_python(text)

    def _encode_chunk(self, chunk: str) -> list[int]:
        """Encode one chunk: apply the earliest-learned merge present, until none applies."""
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(pairwise(ids), key=lambda p: self.merges.get(p, math.inf))
            if pair not in self.merges:
                break
            ids = _merge(ids, pair, self.merges[pair])
        return ids

    def _encode_with_python(self, text: str) -> list[int]:
        """Encode `text` chunk by chunk in pure Python, each distinct chunk once."""
        ids = []
        for chunk in self.split.findall(text):
            if chunk not in self._chunk_cache:
                self._chunk_cache[chunk] = self._encode_chunk(chunk)
            ids.extend(self._chunk_cache[chunk])
        return ids

    @functools.cached_property
    def _tiktoken_encoding(self):
        """A tiktoken Encoding of the learned merges (built on first use), or None without tiktoken."""
        try:
            import tiktoken
        except ImportError:
            return None
        # tiktoken ranks tokens by their bytes; BPE can in principle learn the same bytes twice from
        # different pairs, and then the two encoders could disagree.
        if len(set(self.vocab)) < len(self.vocab):
            return None
        # tiktoken merges, at each step, the adjacent pair whose joined bytes have the lowest rank; with
        # rank = id that is the earliest-learned merge, as in _encode_chunk (a test checks they agree).
        return tiktoken.Encoding(
            name=f"tinygpt-bpe-{self.vocab_size}",
            pat_str=self.pattern,
            mergeable_ranks={token: rank for rank, token in enumerate(self.vocab)},
            special_tokens={},
        )

    def decode(self, ids: list[int]) -> str:
        """Join the bytes of `ids` and decode them as UTF-8 (invalid sequences become U+FFFD)."""
        return b"".join(self.vocab[i] for i in ids).decode("utf-8", errors="replace")

    def state_dict(self) -> dict:
        """Return everything needed to rebuild this tokenizer, as plain Python values."""
        return {"name": self.name, "pattern": self.pattern, "merges": [list(pair) for pair in self.merges]}


class GPT2Tokenizer:
    """GPT-2's pretrained byte-level BPE (50,257 tokens), loaded through tiktoken."""

    name = "gpt2"

    def __init__(self):
        try:
            import tiktoken
        except ImportError as error:
            raise RuntimeError(
                "the 'gpt2' tokenizer needs tiktoken: pip install tiktoken (or use 'char' or 'bpe')"
            ) from error
        try:
            self.encoding = tiktoken.get_encoding("gpt2")
        except Exception as error:  # a network failure surfaces as different exception types
            raise RuntimeError(
                "GPT-2's encoding could not be loaded: tiktoken downloads it on first use, which needs "
                "internet (or a cached copy in TIKTOKEN_CACHE_DIR); or use the 'char' or 'bpe' tokenizer"
            ) from error
        self.vocab_size = self.encoding.n_vocab

    def unknown_chars(self, text: str) -> list[str]:
        """Return []: GPT-2's tokenizer is byte-level and can encode any text."""
        return []

    def encode(self, text: str, drop_unknown: bool = False) -> list[int]:
        """Return GPT-2's token ids for `text`; "<|endoftext|>" in the text is read as plain text."""
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        """Return the text of `ids` (invalid UTF-8 becomes U+FFFD)."""
        return self.encoding.decode(ids)

    def state_dict(self) -> dict:
        """Return everything needed to rebuild this tokenizer: only its name, GPT-2's vocabulary is fixed."""
        return {"name": self.name}


TOKENIZER_KINDS = ("char", "bpe", "gpt2")


def build_tokenizer(kind: str, text: str, vocab_size: int | None = None) -> Tokenizer:
    """Build a tokenizer of `kind` from training `text`; `vocab_size` is used only by "bpe".

    The char vocabulary is fixed by the text and GPT-2's by its pretrained encoding.
    """
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        if vocab_size is None:
            raise ValueError("the 'bpe' tokenizer needs a vocab_size (>= 256: 256 bytes + merges)")
        return BPETokenizer.train(text, vocab_size)
    if kind == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")


def tokenizer_from_state(state: dict) -> Tokenizer:
    """Rebuild the tokenizer that produced `state` (the output of its `state_dict()`)."""
    if state["name"] == "char":
        return CharTokenizer(list(state["chars"]))
    if state["name"] == "bpe":
        return BPETokenizer([tuple(pair) for pair in state["merges"]], state["pattern"])
    if state["name"] == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer {state['name']!r}; expected one of {', '.join(TOKENIZER_KINDS)}")


def bits_per_char(total_nats: float, num_chars: int) -> float:
    """Convert a summed cross-entropy over a text (in nats) into bits per character of that text.

    Loss per token does not compare across tokenizers: a BPE token covers several characters, so it is
    harder to predict than one character even when the model is better. Dividing the total loss of a
    text by its number of characters (and by ln 2 for bits) measures every model on the same text.
    """
    return total_nats / num_chars / math.log(2)
