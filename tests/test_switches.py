"""What the switches the learning path uses really do: each one removes its part (the parameter counts are
worked out on paper) and changes the output the way the part's absence should, no more.

The model is tiny (vocabulary 23, context 16, width 32) so every check is exact and takes milliseconds.
"""

import pytest
import torch

import train
from machinery import settings
from model import GPT, GPTConfig

V, T, D = 23, 16, 32  # vocabulary, context, width
BASE = dict(vocab_size=V, block_size=T, n_embd=D, n_head=2, dropout=0.0, bias=True, norm="layernorm", mlp="relu",
            pos="learned")

# Parameters on paper, biases included: the attention's q, k, v and output projections are 4 D x D matrices and
# 4 D biases; the ReLU FFN is D -> 4D -> D (8 D^2 weights, 5 D biases); a LayerNorm has a weight and a bias of D.
ATTENTION = 4 * D * D + 4 * D
FFN = 8 * D * D + 5 * D
LAYERNORM = 2 * D
# The parts each rung of the learning path keeps, and what they weigh. The head is its own V x D matrix in
# every rung (tie_embeddings False), so that the first rung is a free bigram table.
RUNGS = {
    "bigram": (dict(n_layer=0, pos="none", norm="none", mlp="none", residual=False),
               V * D + V * D),  # token embedding and head
    "one head": (dict(n_layer=1, n_head=1, norm="none", mlp="none", residual=False),
                 V * D + T * D + ATTENTION + V * D),  # + positions and one attention sublayer
    "heads": (dict(n_layer=1, norm="none", mlp="none", residual=False),
              V * D + T * D + ATTENTION + V * D),  # the same weights, cut into 2 heads
    "ffn": (dict(n_layer=1, norm="none", residual=False),
            V * D + T * D + ATTENTION + FFN + V * D),
    "residual": (dict(n_layer=1, norm="none"),
                 V * D + T * D + ATTENTION + FFN + V * D),  # an addition has no parameters
    "norm": (dict(n_layer=1),
             V * D + T * D + ATTENTION + FFN + 3 * LAYERNORM + V * D),  # before attention, FFN and head
    "stacked": (dict(n_layer=3),
                V * D + T * D + 3 * (ATTENTION + FFN + 2 * LAYERNORM) + LAYERNORM + V * D),
}


def model_of(seed: int = 0, **settings) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**BASE, "tie_embeddings": False, **settings})).eval()


@pytest.mark.parametrize("rung", RUNGS)
def test_each_rung_has_the_parameters_worked_out_on_paper(rung):
    settings, expected = RUNGS[rung]
    assert model_of(**settings).num_params() == expected


def test_a_removed_part_leaves_no_module_behind():
    bigram = model_of(**RUNGS["bigram"][0])
    assert len(bigram.transformer.h) == 0
    assert isinstance(bigram.transformer.ln_f, torch.nn.Identity)
    assert "wpe" not in bigram.transformer and not hasattr(bigram, "rope_cos")
    attention_only = model_of(**RUNGS["heads"][0]).transformer.h[0]
    assert attention_only.mlp is None and not hasattr(attention_only, "ln_2")
    assert isinstance(attention_only.ln_1, torch.nn.Identity)


def test_bigram_network_is_a_table_lookup():
    """With no blocks, no norm and no positions, the logits for a token are its embedding times the head:
    row idx of the V x V table wte @ head^T, whatever the position."""
    model = model_of(**RUNGS["bigram"][0])
    idx = torch.randint(0, V, (2, T))
    table = model.transformer.wte.weight @ model.lm_head.weight.T  # (V, V)
    logits, _ = model(idx)
    torch.testing.assert_close(logits, table[idx])
    same_token = torch.full((1, T), 5)
    assert torch.equal(model(same_token)[0][0, 0], model(same_token)[0][0, -1])  # position plays no part


def test_learned_positions_make_the_same_token_differ_by_place():
    model = model_of(n_layer=0, norm="none")  # the bigram with a position table added
    logits, _ = model(torch.full((1, T), 5))
    assert not torch.allclose(logits[0, 0], logits[0, -1])


def test_without_a_norm_the_logits_scale_with_the_embedding():
    """LayerNorm divides out the scale of its input; with norm "none" nothing does."""
    for norm, doubles in (("none", True), ("layernorm", False)):
        model = model_of(n_layer=0, pos="none", norm=norm)
        with torch.no_grad():
            model.transformer.wte.weight.normal_()  # unit scale, so the norm's eps (1e-5) is negligible
        idx = torch.randint(0, V, (1, T))
        before, _ = model(idx)
        with torch.no_grad():
            model.transformer.wte.weight.mul_(2)
        after, _ = model(idx)
        torch.testing.assert_close(after, 2 * before if doubles else before, rtol=1e-4, atol=1e-4)


def zero_output_projections(model: GPT) -> None:
    """Make every sublayer output zero: the output projections of attention and FFN (weights and biases)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".c_proj." in name:
                param.zero_()


def test_ffn_off_equals_an_ffn_that_adds_nothing():
    with_ffn = model_of(n_layer=2)
    without = model_of(n_layer=2, mlp="none")
    without.load_state_dict({k: v for k, v in with_ffn.state_dict().items() if ".mlp." not in k and ".ln_2." not in k})
    idx = torch.randint(0, V, (2, T))
    assert not torch.allclose(with_ffn(idx)[0], without(idx)[0])
    with torch.no_grad():
        for block in with_ffn.transformer.h:
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
    torch.testing.assert_close(with_ffn(idx)[0], without(idx)[0])


def test_residual_stream_carries_the_input_past_silent_sublayers():
    """With every sublayer's output at zero, blocks with residual connections pass their input through (the
    stack becomes the bigram-with-positions model); without them the input is lost and every position of
    every sequence gets the same logits."""
    idx = torch.randint(0, V, (2, T))
    for residual in (True, False):
        model = model_of(n_layer=3, residual=residual)
        zero_output_projections(model)
        logits, _ = model(idx)
        if residual:
            no_blocks = model_of(n_layer=0)
            no_blocks.load_state_dict({k: v for k, v in model.state_dict().items() if ".h." not in k})
            torch.testing.assert_close(logits, no_blocks(idx)[0])
        else:
            torch.testing.assert_close(logits, logits[0, 0].expand_as(logits))


def test_the_switches_reach_train_py_and_bad_values_are_refused(tmp_path):
    argv = ["--preset", "vanilla", "--n-layer", "0", "--norm", "none", "--mlp", "none", "--pos", "none",
            "--no-residual", "--no-tie-embeddings"]
    args = settings.parse_args(argv)
    asked = {name: getattr(args, name) for name in settings.ARCHITECTURE_FLAGS if getattr(args, name) is not None}
    config = GPTConfig.from_preset(args.preset, **asked)
    assert (config.n_layer, config.norm, config.mlp, config.pos, config.residual, config.tie_embeddings) == \
        (0, "none", "none", "none", False, False)
    out_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        train.main(["--n-layer", "-1", "--out-dir", str(out_dir)])
    assert "n_layer must be 0 (no blocks) or more, not -1" in str(stopped.value.code)  # the one-line error
    assert not out_dir.exists(), "a refused setting must not leave an out dir behind"
    with pytest.raises(ValueError, match="n_layer must be 0"):
        GPTConfig(n_layer=-1)
