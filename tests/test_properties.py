"""Properties that must hold for every input, not just the ones a person thought of: hypothesis draws the
sampling settings and the texts. Sampling never crashes, picks a token the rules keep and, at
temperature 0 (or one so small it underflows), the most likely one; every tokenizer gives back the text
it was given.
"""

from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402  (after the skip: hypothesis is a dev dependency)
from hypothesis import strategies as st  # noqa: E402

from generate import filter_logits, sample_next  # noqa: E402
from tokenizer import BPETokenizer, CharTokenizer  # noqa: E402

VOCAB = 12
logit_rows = st.lists(st.floats(-1e4, 1e4, allow_nan=False, width=32), min_size=VOCAB, max_size=VOCAB)
temperatures = st.one_of(st.just(0.0), st.floats(5e-324, 1e-30), st.floats(1e-30, 1e6))


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(logit_rows, min_size=1, max_size=4), temperature=temperatures,
       top_k=st.one_of(st.none(), st.integers(1, VOCAB + 3)),
       top_p=st.one_of(st.none(), st.floats(1e-6, 1.0, exclude_min=False)), seed=st.integers(0, 2**32 - 1))
def test_sampling_never_fails_and_picks_a_kept_token(rows, temperature, top_k, top_p, seed):
    logits = torch.tensor(rows)
    kept = filter_logits(logits, temperature, top_k, top_p)
    assert not kept.isnan().any() and (kept != float("inf")).all()
    argmax = logits.argmax(dim=-1, keepdim=True)
    assert kept.gather(-1, argmax).isfinite().all()  # every rule keeps the most likely token
    picked = sample_next(logits, temperature, top_k, top_p, generator=torch.Generator().manual_seed(seed))
    assert picked.shape == (len(rows), 1)
    assert kept.gather(-1, picked).isfinite().all()
    if temperature == 0:
        assert torch.equal(picked, argmax)


alphabet = st.characters(codec="utf-8", exclude_categories=("Cs",))


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet, min_size=1, max_size=200))
def test_the_char_tokenizer_gives_back_any_text_of_its_alphabet(text):
    tokenizer = CharTokenizer.from_text(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.fixture(scope="module")
def bpe(corpus_text) -> BPETokenizer:
    return BPETokenizer.train(corpus_text[:20_000], vocab_size=300)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet, max_size=200))
def test_byte_level_bpe_gives_back_any_unicode_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text
