"""What the tokenizers must guarantee: exact round trips, the BPE merge rule, rebuildable state."""

import io
import math
import random
import sys
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data import split_text
from tokenizer import (
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    bits_per_char,
    build_tokenizer,
    tokenizer_from_state,
)

# Code point ranges for random text: ASCII, control characters, accented Latin, combining marks,
# Greek and Cyrillic, CJK, Hangul, emoji, and anything at all (surrogates excepted, see below).
UNICODE_RANGES = [
    (0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x4FF),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x0, 0x10FFFF),
]  # fmt: skip


def random_unicode_strings(count: int, seed: int) -> list[str]:
    """Return `count` random strings mixing code points from all of UNICODE_RANGES."""
    rng = random.Random(seed)
    strings = []
    for _ in range(count):
        chars = []
        while len(chars) < rng.randint(0, 30):
            code_point = rng.randint(*rng.choice(UNICODE_RANGES))
            if not 0xD800 <= code_point <= 0xDFFF:  # lone surrogates are not valid text, UTF-8 refuses them
                chars.append(chr(code_point))
        strings.append("".join(chars))
    return strings


@pytest.fixture(scope="module")
def shakespeare(corpus_text) -> tuple[str, str]:
    """The standard Tiny Shakespeare split: first 90% train, last 10% val."""
    return split_text(corpus_text)


@pytest.fixture(scope="module")
def bpe_512(shakespeare) -> BPETokenizer:
    """A BPE tokenizer with 512 merges learned from the train split."""
    return BPETokenizer.train(shakespeare[0], vocab_size=256 + 512)


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    """GPT-2's tokenizer, or a skip when its encoding cannot be downloaded or found in a cache."""
    try:
        return GPT2Tokenizer()
    except RuntimeError as error:
        pytest.skip(str(error))


# --- char ---


def test_char_vocabulary_is_the_sorted_characters_of_shakespeare(shakespeare):
    tokenizer = CharTokenizer.from_text("".join(shakespeare))
    assert tokenizer.vocab_size == 65
    assert tokenizer.chars == sorted(tokenizer.chars)
    # the same ids as nanoGPT's shakespeare_char
    assert tokenizer.encode("\n !aA") == [0, 1, 2, 39, 13]


def test_char_round_trips_text_from_its_vocabulary():
    tokenizer = CharTokenizer.from_text("To be, or not to be: that is the question.\n")
    rng = random.Random(0)
    for _ in range(100):
        text = "".join(rng.choices(tokenizer.chars, k=rng.randint(0, 50)))
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_char_unknown_characters_raise_a_clear_error_or_are_dropped_on_request():
    tokenizer = CharTokenizer.from_text("abc ")
    assert tokenizer.unknown_chars("a café, bé") == [",", "f", "é"]
    with pytest.raises(ValueError, match=r"'f', 'é'.*--drop-unknown.*drop_unknown=True.*byte-level") as error:
        tokenizer.encode("café")
    assert "\n" not in str(error.value)
    assert tokenizer.decode(tokenizer.encode("café", drop_unknown=True)) == "ca"


# --- BPE ---


def test_bpe_merges_match_the_wikipedia_example():
    # "aaabdaaabac" is one chunk (all letters). Pair counts: aa=4 (overlapping pairs count), ab=2,
    # others 1. Merge 1: (a, a) -> 256, text becomes [256]a b d [256]a b a c (left to right).
    # Now (256, a)=2 and (a, b)=2 tie; the lower pair wins: merge 2: (a, b) -> 257, giving
    # [256][257]d[256][257]a c. Merge 3: (256, 257) -> 258, giving [258]d[258]a c.
    tokenizer = BPETokenizer.train("aaabdaaabac", vocab_size=259)
    a, b = ord("a"), ord("b")
    assert list(tokenizer.merges) == [(a, a), (a, b), (256, 257)]
    assert tokenizer.encode("aaabdaaabac") == [258, ord("d"), 258, a, ord("c")]
    assert tokenizer.vocab[258] == b"aaab"


def naive_bpe_merges(text: str, num_merges: int) -> list[tuple[int, int]]:
    """The textbook trainer: recount every pair of every chunk before each merge."""
    chunks = [list(chunk.encode("utf-8")) for chunk in BPETokenizer([]).split.findall(text)]
    merges = []
    for new_id in range(256, 256 + num_merges):
        counts = Counter(pair for ids in chunks for pair in pairwise(ids))
        if not counts:
            break
        pair = max(counts, key=lambda p: (counts[p], -p[0], -p[1]))  # most frequent, then lowest pair
        merges.append(pair)
        for ids in chunks:
            i = 0
            while i < len(ids) - 1:
                if (ids[i], ids[i + 1]) == pair:
                    ids[i : i + 2] = [new_id]
                i += 1
    return merges


def test_bpe_incremental_training_matches_a_full_recount():
    rng = random.Random(0)
    words = ["".join(rng.choices("abcde", k=rng.randint(1, 6))) for _ in range(50)]
    text = " ".join(rng.choices(words, k=2000))
    assert list(BPETokenizer.train(text, vocab_size=256 + 200).merges) == naive_bpe_merges(text, 200)


def test_bpe_round_trips_any_unicode_text():
    # trained on a little English: most test characters were never seen and fall back to their bytes
    tokenizer = BPETokenizer.train("the quick brown fox jumps over the lazy dog. " * 20, vocab_size=300)
    for text in random_unicode_strings(300, seed=0) + ["👩‍👩‍👧 ok", "e\u0301 café", "a\r\n\tb", ""]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.unknown_chars("日本語 🙂") == []


def test_bpe_vocab_size_must_cover_the_256_bytes():
    with pytest.raises(ValueError, match="256"):
        BPETokenizer.train("hello", vocab_size=100)
    assert BPETokenizer.train("hello", vocab_size=256).vocab_size == 256  # bytes only, no merges


def test_bpe_stops_early_when_every_chunk_is_one_token():
    tokenizer = BPETokenizer.train("abab", vocab_size=1000)
    assert tokenizer.vocab[-1] == b"abab"
    assert tokenizer.vocab_size == 258


def test_bpe_trained_on_shakespeare_compresses_val(shakespeare, bpe_512):
    _, val = shakespeare
    tokens_per_char = len(bpe_512.encode(val)) / len(val)
    # measured 0.472 tokens per character (the char tokenizer's is 1.0); 0.5 leaves room for small changes
    assert tokens_per_char < 0.5
    assert bpe_512.decode(bpe_512.encode(val)) == val


def test_tiktoken_encoding_matches_python_encoding_on_val(shakespeare, bpe_512):
    pytest.importorskip("tiktoken")
    _, val = shakespeare
    assert bpe_512._tiktoken_encoding.encode_ordinary(val) == bpe_512._encode_with_python(val)


def test_text_beyond_plain_ascii_is_encoded_in_python():
    # Python's re reads "x²" as one word, tiktoken's Rust regex as two chunks, so a merge learned
    # inside "x²" would be missed by tiktoken: such text must not take the tiktoken path.
    tokenizer = BPETokenizer.train("x² y² z² " * 50, vocab_size=300)
    assert tokenizer.encode("x² y²") == tokenizer._encode_with_python("x² y²")
    assert len(tokenizer.encode("x² y²")) == 2


# --- shared interface ---


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_state_dict_round_trips_through_a_weights_only_checkpoint(kind):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 5
    tokenizer = build_tokenizer(kind, text, vocab_size=300 if kind == "bpe" else None)
    buffer = io.BytesIO()
    torch.save({"tokenizer": tokenizer.state_dict()}, buffer)
    buffer.seek(0)
    rebuilt = tokenizer_from_state(torch.load(buffer, weights_only=True)["tokenizer"])
    assert (rebuilt.name, rebuilt.vocab_size) == (tokenizer.name, tokenizer.vocab_size)
    sample = "Before we proceed, speak: hear me."
    assert rebuilt.encode(sample) == tokenizer.encode(sample)


def test_build_tokenizer_explains_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size"):
        build_tokenizer("bpe", "some text")
    with pytest.raises(ValueError, match="char, bpe, gpt2"):
        build_tokenizer("words", "some text")


def test_bits_per_char_matches_a_direct_computation():
    text = "to be or not to be, that is the question " * 4
    tokenizer = BPETokenizer.train(text, vocab_size=280)
    ids = torch.tensor(tokenizer.encode(text))
    assert len(ids) < len(text)  # tokens span several characters: that is why loss per token misleads
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(len(ids), tokenizer.vocab_size, generator=generator, dtype=torch.float64)
    total_nats = F.cross_entropy(logits, ids, reduction="sum").item()
    # the same model scored directly in bits: -log2 of each token's probability, per character of text
    probs = torch.softmax(logits, dim=-1).numpy()
    direct_bits_per_char = -np.log2(probs[np.arange(len(ids)), ids.numpy()]).sum() / len(text)
    assert math.isclose(bits_per_char(total_nats, len(text)), direct_bits_per_char, rel_tol=1e-12)


# --- GPT-2 (needs tiktoken and its downloaded encoding; skipped when offline) ---


def test_gpt2_encodes_like_gpt2(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.encode("Hello world") == [15496, 995]
    for text in random_unicode_strings(50, seed=1):
        assert gpt2.decode(gpt2.encode(text)) == text
    assert tokenizer_from_state(gpt2.state_dict()).encode("Hello world") == [15496, 995]


def test_gpt2_offline_error_says_what_to_do(monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")

    def no_network(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    monkeypatch.setattr(tiktoken, "get_encoding", no_network)
    with pytest.raises(RuntimeError, match="could not be loaded.*needs internet.*TIKTOKEN_CACHE_DIR"):
        GPT2Tokenizer()


def test_gpt2_without_tiktoken_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # makes `import tiktoken` fail
    with pytest.raises(RuntimeError, match="pip install tiktoken"):
        build_tokenizer("gpt2", "")
