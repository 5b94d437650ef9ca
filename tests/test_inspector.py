"""What the inspector's model side must guarantee: trace() returns the attention weights the formula
defines (checked against a forward pass written out here from q and k), the model's own logits, and
residual streams whose logit lens ends at the model's output, and leaves the model as it was.
The server is tested in test_inspector_server.py, the page in test_inspector_browser.py."""

import copy
import math

import pytest
import torch

import inspect_model
from inspect_model import LoadedModel, RequestError, logit_lens, trace, trace_json
from model import GPT, PRESETS, GPTConfig, apply_rotary_emb
from tokenizer import CharTokenizer


def tiny_model(preset: str, seed: int = 0, attention: str = "auto") -> GPT:
    """A 2-layer model with a preset's switches, 3 heads of 8 channels, and weights large enough that
    attention is far from uniform (so a wrong mask or scale would show)."""
    switches = {name: PRESETS[preset][name] for name in ("norm", "mlp", "pos", "bias")}
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=3, n_embd=24, dropout=0.1, attention=attention,
                       **switches)
    model = GPT(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


def forward_written_out(model: GPT, ids: list[int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The residual streams and attention weights of every layer, computed here in float64 from the
    model's weights with the attention formula written out: softmax(q k^T / sqrt(hs)), masked to the past."""
    model = copy.deepcopy(model).double().eval()  # eval: no dropout in the residual branches
    config = model.config
    T, hs = len(ids), config.head_dim
    idx = torch.tensor(ids)
    x = model.transformer.wte(idx)  # (T, C)
    if config.pos == "learned":
        x = x + model.transformer.wpe(torch.arange(T))
    streams, weights = [x], []
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)  # key after query
    for block in model.transformer.h:
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(config.n_embd, dim=-1)
        q, k, v = (t.view(T, config.n_head, hs).transpose(0, 1) for t in (q, k, v))  # (nh, T, hs)
        if config.pos == "rope":
            cos, sin = model.rope_cos[:T].double(), model.rope_sin[:T].double()
            q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        w = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # (nh, T, T)
        weights.append(w)
        x = x + block.attn.c_proj((w @ v).transpose(0, 1).reshape(T, config.n_embd))
        x = x + block.mlp(block.ln_2(x))
        streams.append(x)
    return streams, weights


@pytest.mark.parametrize("preset", ["vanilla", "modern"])
def test_trace_attention_equals_the_formula_from_q_and_k(preset):
    model = tiny_model(preset)
    ids = torch.randint(0, 65, (20,), generator=torch.Generator().manual_seed(1)).tolist()
    result = trace(model, ids)
    streams, weights = forward_written_out(model, ids)
    assert result.attention.shape == (2, 3, 20, 20)
    for layer in range(2):
        torch.testing.assert_close(result.attention[layer].double(), weights[layer], atol=1e-5, rtol=1e-4)
    for layer in range(3):
        torch.testing.assert_close(result.residual[layer].double(), streams[layer], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", ["vanilla", "modern"])
def test_trace_attention_rows_sum_to_one_and_never_see_the_future(preset):
    result = trace(tiny_model(preset), list(range(25)))
    torch.testing.assert_close(result.attention.sum(-1), torch.ones(2, 3, 25))
    future = torch.ones(25, 25, dtype=torch.bool).triu(diagonal=1)
    assert (result.attention[..., future] == 0).all()
    assert (result.attention[..., ~future] > 0).all()  # a softmax is never exactly zero on what it sees


@pytest.mark.parametrize("preset", ["vanilla", "modern"])
def test_trace_logits_equal_the_models_forward(preset):
    model = tiny_model(preset, attention="fused").eval()
    ids = list(range(5, 30))
    expected, _ = model(torch.tensor([ids]))  # PyTorch's fused attention kernel, not the written-out math
    torch.testing.assert_close(trace(model, ids).logits, expected[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("preset", ["vanilla", "modern"])
def test_logit_lens_of_the_last_layer_is_the_models_output(preset):
    model = tiny_model(preset)
    result = trace(model, list(range(12)))
    torch.testing.assert_close(logit_lens(model, result.residual[-1]), result.logits, atol=0, rtol=0)
    assert logit_lens(model, result.residual).shape == (3, 12, 65)  # every layer at once, too


def test_a_model_with_no_blocks_traces_to_its_logits_and_no_attention():
    """The ladder's bigram network (n_layer 0): no attention to show, one residual stream, its logits."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=32, n_layer=0, n_head=3, n_embd=24))
    ids = list(range(10))
    result = trace(model, ids)
    assert result.attention.shape == (0, 3, 10, 10) and result.residual.shape == (1, 10, 24)
    torch.testing.assert_close(result.logits, model.eval()(torch.tensor([ids]))[0][0])


def test_trace_leaves_the_model_as_it_was():
    model = tiny_model("modern", attention="fused").train()
    trace(model, [1, 2, 3])
    assert model.training
    for block in model.transformer.h:
        assert block.attn.fused  # the fused kernel again
        assert not block.attn.attn_dropout._forward_hooks and not block._forward_hooks
    assert not model.transformer.drop._forward_hooks


def test_raw_logits_beyond_the_limit_are_refused(monkeypatch):
    entry = LoadedModel("tiny", tiny_model("modern"), CharTokenizer([chr(ord("0") + i) for i in range(65)]))
    monkeypatch.setattr(inspect_model, "MAX_LOGITS", 10 * 65)
    assert len(trace_json(entry, "0123456789", top_n=3, include_logits=True)["logits"]) == 10
    with pytest.raises(RequestError, match="more than 650 numbers"):
        trace_json(entry, "0123456789A", top_n=3, include_logits=True)
    assert "logits" not in trace_json(entry, "0123456789A", top_n=3, include_logits=False)
