"""What the model must guarantee: causality, a KV cache that changes nothing but speed, attention
written by hand that equals the fused kernel, RoPE that encodes relative distance, the stated sizes,
checkpoints that rebuild the model, and the ability to learn."""

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from generate import generate, generate_tokens
from machinery.checkpoint import load_model, make_checkpoint, save_checkpoint
from model import (
    GPT,
    MLP,
    MLPS,
    NORMS,
    POSITIONS,
    Dropout,
    GPTConfig,
    SwiGLU,
    apply_rotary_emb,
    attention,
    causal_mask,
    fused_attention,
    rope_tables,
)
from tokenizer import CharTokenizer

ALL_SWITCHES = list(itertools.product(NORMS, MLPS, POSITIONS))
# The same guarantees hold with the parts the learning path takes away: residual connections, or every block.
DEPTHS = {"blocks": {}, "no-residual": dict(residual=False), "no-blocks": dict(n_layer=0)}
with_depths = pytest.mark.parametrize("depth", DEPTHS.values(), ids=DEPTHS.keys())


def tiny_model(norm="layernorm", mlp="relu", pos="learned", seed=0, **overrides) -> GPT:
    """A 2-layer model small enough to check exactly on the CPU in milliseconds."""
    torch.manual_seed(seed)
    settings = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0,
                    bias=True, norm=norm, mlp=mlp, pos=pos)
    settings.update(overrides)
    model = GPT(GPTConfig(**settings)).eval()
    # Random norm weights and biases, so a bug that only shows when they are not 1 and 0 is caught.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
        # Without residual connections the initial weights shrink the signal block after block until every
        # position's logits are nearly equal, and a cache bug could hide in the noise: weights of scale
        # 1/sqrt(fan-in) keep it at full size.
        if not model.config.residual:
            for module in model.modules():
                if isinstance(module, torch.nn.Linear):
                    torch.nn.init.normal_(module.weight, std=module.in_features ** -0.5)
    return model


@pytest.mark.parametrize("norm,mlp,pos", ALL_SWITCHES)
@with_depths
def test_changing_future_tokens_never_changes_past_logits(norm, mlp, pos, depth):
    model = tiny_model(norm, mlp, pos, **depth)
    idx = torch.randint(0, 23, (2, 16))
    t = 9
    changed = idx.clone()
    changed[:, t + 1:] = torch.randint(0, 23, (2, 16 - t - 1))
    logits, _ = model(idx)
    logits_changed, _ = model(changed)
    assert torch.equal(logits[:, :t + 1], logits_changed[:, :t + 1])
    assert not torch.allclose(logits[:, t + 1:], logits_changed[:, t + 1:])


@pytest.mark.parametrize("norm,mlp,pos", ALL_SWITCHES)
@with_depths
def test_kv_cache_one_token_decoding_matches_full_forward(norm, mlp, pos, depth):
    model = tiny_model(norm, mlp, pos, **depth)
    idx = torch.randint(0, 23, (2, 16))
    full, _ = model(idx)
    cache = model.new_kv_cache()
    model(idx[:, :4], kv_cache=cache)  # prefill the prompt
    for t in range(4, 16):
        step, _ = model(idx[:, t:t + 1], kv_cache=cache)
        assert (step[:, 0] - full[:, t]).abs().max() <= 1e-5, f"position {t}"
    assert cache.pos == 16


@pytest.mark.parametrize("norm,mlp,pos", ALL_SWITCHES)
@with_depths
def test_kv_cache_multi_token_prefill_at_offset_matches_full_forward(norm, mlp, pos, depth):
    model = tiny_model(norm, mlp, pos, **depth)
    idx = torch.randint(0, 23, (3, 16))
    full, _ = model(idx)
    cache = model.new_kv_cache()
    pieces = []
    for start, end in ((0, 5), (5, 12), (12, 16)):  # chunks of several tokens after a cached prefix
        logits, _ = model(idx[:, start:end], kv_cache=cache)
        pieces.append(logits)
    assert (torch.cat(pieces, dim=1) - full).abs().max() <= 1e-5


def windows_past_block_size(prompt_len: int, new_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """The (start, end) context window the model reads before each new token, per generate_tokens'
    documented rule: at most block_size tokens; when full, keep the newest 3/4 and grow again."""
    keep = block_size - block_size // 4
    start, windows = max(0, prompt_len - block_size), []
    for length in range(prompt_len, prompt_len + new_tokens):
        if length - start > block_size:
            start = length - keep
        windows.append((start, length))
    return windows


@pytest.mark.parametrize("norm,mlp,pos", ALL_SWITCHES)
def test_kv_cache_generation_past_block_size_matches_full_forward(norm, mlp, pos):
    model = tiny_model(norm, mlp, pos)
    prompt = torch.randint(0, 23, (2, 5))
    steps = list(generate_tokens(model, prompt, 40, temperature=0, use_kv_cache=True))  # 40 > block_size 16
    seq = torch.cat([prompt] + [token for token, _ in steps], dim=1)
    for (start, end), (_, cached_logits) in zip(windows_past_block_size(5, 40, 16), steps, strict=True):
        assert end - start <= 16
        full, _ = model(seq[:, start:end])  # a full forward pass over exactly that window
        assert (cached_logits - full[:, -1]).abs().max() <= 1e-5, f"window {start}:{end}"


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("prompt_len", [1, 7, 30])  # short, medium, longer than block_size 16
def test_greedy_generation_is_identical_with_and_without_cache(pos, prompt_len):
    model = tiny_model("rmsnorm", "swiglu", pos)
    prompt = torch.randint(0, 23, (1, prompt_len))
    with_cache = generate(model, prompt, 50, temperature=0, use_kv_cache=True)
    without_cache = generate(model, prompt, 50, temperature=0, use_kv_cache=False)
    assert torch.equal(with_cache, without_cache)


@pytest.mark.parametrize("pos", POSITIONS)
def test_hand_written_attention_equals_fused_attention(pos):
    fused = tiny_model(pos=pos, attention="fused")
    manual = tiny_model(pos=pos, attention="manual")
    manual.load_state_dict(fused.state_dict())
    idx = torch.randint(0, 23, (2, 16))
    assert (fused(idx)[0] - manual(idx)[0]).abs().max() <= 1e-5
    # and through the cache, where the offset-aware mask is used
    caches = fused.new_kv_cache(), manual.new_kv_cache()
    for start, end in ((0, 6), (6, 11), (11, 12)):
        out_fused, _ = fused(idx[:, start:end], kv_cache=caches[0])
        out_manual, _ = manual(idx[:, start:end], kv_cache=caches[1])
        assert (out_fused - out_manual).abs().max() <= 1e-5


def test_written_out_attention_equals_pytorchs_fused_kernel_with_and_without_a_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, dtype=torch.float64) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(attention(q, k, v), expected, atol=1e-12)
    # a query block after a cached prefix: 3 queries at positions 4..6 over 7 keys
    mask = causal_mask(torch.arange(4, 7), 7)
    expected = F.scaled_dot_product_attention(q[:, :, 4:], k, v, attn_mask=mask)
    assert torch.allclose(attention(q[:, :, 4:], k, v, mask), expected, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_attention_computes_one_cpu_query_over_narrow_keys_in_float32(dtype, monkeypatch):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, dtype=torch.float64) for n in (1, 9, 9))
    mask = causal_mask(torch.tensor([5]), 9)  # a decode step: one query at position 5 of a 9-slot cache
    exact = attention(q, k, v, mask)
    seen = []
    fused_kernel = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: seen.append(a[0].dtype) or fused_kernel(*a, **kw))
    narrow = fused_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask, 0.0)
    assert seen == [torch.float32] and narrow.dtype == dtype  # computed in float32, returned in the inputs' dtype
    # as close as the narrow inputs allow: rounded once on the way in and once on the way out
    assert (narrow.double() - exact).abs().max() <= 4 * torch.finfo(dtype).eps * exact.abs().max()
    fused_attention(q.to(dtype).repeat(1, 1, 2, 1), k.to(dtype), v.to(dtype), causal_mask(torch.tensor([4, 5]), 9), 0.0)
    assert seen[-1] == dtype  # more than one query (a prompt, an evaluation): the kernel in the narrow dtype itself


def test_auto_attention_is_chosen_from_where_the_model_is_built_and_how_it_runs():
    attn = tiny_model(attention="auto").transformer.h[0].attn  # built on the CPU
    assert not attn.fused and attn.fused_in_eager_inference  # written out, but fused eagerly without gradients
    manual = tiny_model(attention="manual").transformer.h[0].attn
    assert not manual.fused and not manual.fused_in_eager_inference
    fused = tiny_model(attention="fused").transformer.h[0].attn
    assert fused.fused and fused.fused_in_eager_inference
    with torch.device("meta"):  # any device but the CPU takes the fused kernel, with or without gradients
        attn = GPT(GPTConfig(vocab_size=23, block_size=16, n_layer=1, n_head=2, n_embd=8)).transformer.h[0].attn
        assert attn.fused and attn.fused_in_eager_inference


def test_auto_attention_on_a_cpu_runs_the_fused_kernel_only_eagerly_without_gradients(monkeypatch):
    calls = []
    fused_kernel = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or fused_kernel(*a, **k))
    model = tiny_model(attention="auto").eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 8))
    with_grad, _ = model(idx)
    assert not calls  # training's path: the written-out formula
    with torch.no_grad():
        without_grad, _ = model(idx)
        assert len(calls) == model.config.n_layer  # evaluation's and generation's path: the fused kernel
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        compiled, _ = model(idx)
        assert len(calls) == model.config.n_layer  # as torch.compile traces it: written out, to fuse with the rest
    torch.testing.assert_close(without_grad, with_grad.detach())  # the same function on every path
    torch.testing.assert_close(compiled, with_grad.detach())


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_masks_are_independent_draws_at_the_stated_rate_and_keep_the_expected_value(p):
    # Each check is a z-test on a million draws, failing at |z| > 5.3: for a correct dropout, a false alarm
    # once in 8 million runs per check (two-sided normal tail); a rate off by 0.004 fails (z of 8 or more).
    torch.manual_seed(0)
    dropout = Dropout(p).train()
    n, limit = 1_000_000, 5.3
    assert abs(dropout.threshold / Dropout.LEVELS - p) <= 0.5 / Dropout.LEVELS  # the rate used: p to within 2^-16
    rate = dropout.threshold / Dropout.LEVELS
    x = torch.full((1000, 1000), 3.0)
    y = dropout(x)
    dropped = (y == 0).double()
    z_rate = (dropped.mean().item() - rate) / math.sqrt(rate * (1 - rate) / n)
    assert abs(z_rate) < limit, f"dropped fraction is {dropped.mean().item():.5f}, not {rate:.5f} (z = {z_rate:.1f})"
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 3.0 / (1 - rate)))  # the kept ones scaled by 1/(1-p)
    sd_mean = 3.0 / (1 - rate) * math.sqrt(rate * (1 - rate) / n)  # of the mean of y, whose expectation is 3
    assert abs(y.mean().item() - 3.0) / sd_mean < limit
    # One int32 draw serves two neighbours (elements 2i and 2i+1 of the flattened mask), from its low and
    # its high bits: each of the two is dropped at the rate p, on its own (500,000 draws each).
    for half in (dropped.view(-1)[0::2], dropped.view(-1)[1::2]):
        z_half = (half.mean().item() - rate) / math.sqrt(rate * (1 - rate) / half.numel())
        assert abs(z_half) < limit, f"one half of the draws drops {half.mean().item():.5f}, not {rate:.5f}"
    # Independence: neighbours (along a row and down a column; and the two that share a draw) are both
    # dropped at the rate p^2.
    flat = dropped.view(-1)
    for both in (dropped[:, 1:] * dropped[:, :-1], dropped[1:, :] * dropped[:-1, :], flat[0::2] * flat[1::2]):
        z_pairs = (both.mean().item() - rate**2) / math.sqrt(rate**2 * (1 - rate**2) / both.numel())
        assert abs(z_pairs) < limit
    # Two calls draw two masks.
    assert not torch.equal(dropout(x) == 0, y == 0)
    assert dropout.eval()(x) is x  # eval mode: the identity


def test_dropout_masks_any_shape_and_refuses_a_rate_outside_0_to_1():
    dropout = Dropout(0.5).train()
    for shape in ((7,), (3, 5), (2, 3, 5)):  # an odd number of elements: the last draw's second half unused
        y = dropout(torch.ones(shape))
        assert y.shape == shape and set(y.unique().tolist()) <= {0.0, 2.0}
    assert Dropout(0.99999).threshold == Dropout.LEVELS - 1  # the highest rate 15 bits can state
    for p in (1.0, -0.1):
        with pytest.raises(ValueError, match="dropout must be in"):
            Dropout(p)


def test_dropout_in_bfloat16_keeps_the_dtype_and_the_scale():
    dropout = Dropout(0.2).train()
    y = dropout(torch.ones(64, 64, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert set(y.unique().tolist()) <= {0.0, torch.tensor(1 / (1 - dropout.threshold / Dropout.LEVELS),
                                                         dtype=torch.bfloat16).item()}


def test_attention_dropout_follows_dropout_unless_set():
    assert GPTConfig(dropout=0.3).attention_dropout == 0.3  # as in every preset, and checkpoints from before the field
    assert GPTConfig(dropout=0.3, attn_dropout=0.1).attention_dropout == 0.1
    assert GPTConfig(dropout=0.3, attn_dropout=0.0).attention_dropout == 0.0
    for preset in ("vanilla", "modern", "small"):
        assert GPTConfig.from_preset(preset).attention_dropout == GPTConfig.from_preset(preset).dropout
    idx = torch.randint(0, 23, (2, 16))
    for kernel in ("fused", "manual"):  # training mode, dropout only on the attention weights
        dropped = tiny_model(attention=kernel, dropout=0.0, attn_dropout=0.5).train()
        assert not torch.equal(dropped(idx)[0], dropped(idx)[0])  # each call draws another mask
        kept = tiny_model(attention=kernel, dropout=0.0, attn_dropout=0.0).train()
        assert torch.equal(kept(idx)[0], kept(idx)[0])


def test_rope_score_depends_only_on_distance():
    head_dim = 16
    cos, sin = rope_tables(head_dim, 64, theta=10000.0)
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def score(m: int, n: int) -> torch.Tensor:
        rotated_q = apply_rotary_emb(q.view(1, 1, 1, -1), cos[m:m + 1], sin[m:m + 1])
        rotated_k = apply_rotary_emb(k.view(1, 1, 1, -1), cos[n:n + 1], sin[n:n + 1])
        return (rotated_q * rotated_k).sum()

    for distance in (0, 1, 5, 17):
        scores = torch.stack([score(n + distance, n) for n in (0, 3, 20, 40)])
        assert torch.allclose(scores, scores[0].expand_as(scores), atol=1e-5)
    assert not torch.allclose(score(5, 0), score(6, 0))  # and distance does matter
    # rotation preserves length
    rotated = apply_rotary_emb(q.view(1, 1, 1, -1), cos[7:8], sin[7:8])
    assert torch.allclose(rotated.norm(), q.norm())


def expected_params(d: int, layers: int, vocab: int, block: int, ffn: int, swiglu: bool, bias: bool,
                    learned_pos: bool) -> int:
    """Parameter count worked out from the architecture on paper (tied head counts once)."""
    attention = 4 * d * d + (4 * d if bias else 0)  # q, k, v and output projections
    if swiglu:
        ffn_params = 3 * d * ffn + ((2 * ffn + d) if bias else 0)
    else:
        ffn_params = 2 * d * ffn + ((ffn + d) if bias else 0)
    norm = 2 * d if bias else d  # LayerNorm has weight and bias; RMSNorm only a weight
    per_block = attention + ffn_params + 2 * norm
    return layers * per_block + norm + vocab * d + (block * d if learned_pos else 0)


def test_preset_parameter_counts():
    vanilla = GPT(GPTConfig.from_preset("vanilla")).num_params()
    modern = GPT(GPTConfig.from_preset("modern")).num_params()
    assert vanilla == expected_params(384, 6, 65, 256, 1536, swiglu=False, bias=True, learned_pos=True)
    assert modern == expected_params(384, 6, 65, 256, 1024, swiglu=True, bias=False, learned_pos=False)
    assert round(vanilla / 1e6, 1) == 10.8
    assert round(modern / 1e6, 1) == 10.6


def test_swiglu_default_width_matches_relu_ffn_size():
    config = GPTConfig.from_preset("modern")
    assert config.ffn_hidden == 1024  # 384 -> 1024 -> 384
    # Three matrices 1024 wide hold as many parameters as the ReLU FFN's two of 4 * 384 = 1536.
    swiglu = SwiGLU(config)
    relu = MLP(GPTConfig.from_preset("vanilla", bias=False))
    assert sum(p.numel() for p in swiglu.parameters()) == sum(p.numel() for p in relu.parameters())


def test_checkpoint_round_trip_keeps_weights_tied(tmp_path):
    model = tiny_model("rmsnorm", "swiglu", "rope", bias=False)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(make_checkpoint(model, CharTokenizer(list("abcdefghijklmnopqrstuvw"))), path)  # 23 tokens
    loaded = load_model(path)
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert loaded.num_params() == model.num_params()
    idx = torch.randint(0, 23, (1, 10))
    assert torch.equal(loaded(idx)[0], model(idx)[0])


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_model(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_model(corrupt)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="norm must be one of"):
        GPTConfig(norm="batchnorm")
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=6)
    with pytest.raises(ValueError, match="unknown preset"):
        GPTConfig.from_preset("huge")
    with pytest.raises(ValueError, match="unknown config field"):
        GPTConfig.from_preset("modern", n_layers=3)


def test_forward_beyond_block_size_is_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="exceed the model's block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("preset_parts", [("layernorm", "relu", "learned"), ("rmsnorm", "swiglu", "rope")])
def test_tiny_model_can_memorise_one_batch(preset_parts):
    model = tiny_model(*preset_parts).train()
    torch.manual_seed(1)
    idx = torch.randint(0, 23, (4, 16))
    targets = torch.randint(0, 23, (4, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1  # from ln(23) = 3.1 at the start

