"""What --optimizer muon must guarantee: orthogonalize sets every singular value near 1 and approximates
U V^T of the SVD; a Muon step is PyTorch's own Muon with AdamW-matched RMS and the AdamW groups are PyTorch's
AdamW exactly; Muon steps the blocks' matrices and nothing else; a Muon run learns; and a run saved before
--optimizer existed resumes as the AdamW run it was. (That a Muon run resumes bit for bit is
test_train.py's test_resume_matches_uninterrupted_run; that another --optimizer on --resume is refused,
test_faults.py's test_a_flag_that_would_make_another_run_is_refused_on_resume.)
"""

from __future__ import annotations

import collections
import itertools
import math

import pytest
import torch
from test_train import flags, read_metrics, refusal
from torch import nn

import data
import train
from machinery.checkpoint import load_checkpoint, save_checkpoint
from machinery.optim import MuonAdamW, orthogonalize
from model import GPT, GPTConfig

SHAPES = {"tall": (96, 32), "wide": (32, 96)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_orthogonalize_sets_every_singular_value_near_one(shape):
    matrix = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    singular_values = torch.linalg.svdvals(orthogonalize(matrix))
    assert len(singular_values) == min(shape)
    # Five quintic steps land near 1, not on it: 0.67 to 1.13 measured over 40 random matrices of these shapes.
    assert singular_values.min() > 0.6 and singular_values.max() < 1.25, singular_values


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_orthogonalize_approximates_u_v_transpose_of_the_svd(shape):
    matrix = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    u, _, v_transposed = torch.linalg.svd(matrix, full_matrices=False)
    orthogonalized = orthogonalize(matrix)
    assert orthogonalized.shape == matrix.shape and orthogonalized.dtype == matrix.dtype
    similarity = nn.functional.cosine_similarity(orthogonalized.flatten(), (u @ v_transposed).flatten(), dim=0)
    assert similarity > 0.97  # 0.985 or more measured


def step_both(optimizer: torch.optim.Optimizer, ours: list[nn.Parameter], reference: torch.optim.Optimizer,
              theirs: list[nn.Parameter], steps: int) -> None:
    """Step two optimizers over copies of the same weights, with the same random gradients each step."""
    for _ in range(steps):
        for our_weight, their_weight in zip(ours, theirs, strict=True):
            gradient = torch.randn(our_weight.shape)
            our_weight.grad, their_weight.grad = gradient.clone(), gradient.clone()
        optimizer.step()
        reference.step()


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon arrived in PyTorch 2.9")
def test_muon_steps_equal_pytorchs_muon_with_adamw_matched_rms():
    torch.manual_seed(0)
    start = [torch.randn(shape) for shape in SHAPES.values()]
    ours, theirs = [nn.Parameter(w.clone()) for w in start], [nn.Parameter(w.clone()) for w in start]
    optimizer = MuonAdamW([{"params": ours, "algorithm": "muon"}], lr=0.02, weight_decay=0.1, beta2=0.99)
    reference = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
                                 adjust_lr_fn="match_rms_adamw")
    step_both(optimizer, ours, reference, theirs, steps=4)
    # Both orthogonalise in bfloat16 but round differently (PyTorch folds the sums into addmm): they differ by
    # at most 2.4% of the change over 10 seeds. A missing weight decay, momentum or scale would be 30% or more.
    for our_weight, their_weight, weight in zip(ours, theirs, start, strict=True):
        assert (our_weight - their_weight).norm() < 0.05 * (their_weight - weight).norm()


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_adamw_groups_step_exactly_as_pytorchs_adamw(fused):
    torch.manual_seed(0)
    start = [torch.randn(32, 16), torch.randn(16)]  # a decayed matrix, a vector without decay
    ours, theirs = [nn.Parameter(w.clone()) for w in start], [nn.Parameter(w.clone()) for w in start]
    optimizer = MuonAdamW([{"params": [ours[0]], "algorithm": "adamw", "weight_decay": 0.1},
                           {"params": [ours[1]], "algorithm": "adamw", "weight_decay": 0.0}],
                          lr=3e-3, weight_decay=0.1, beta2=0.99, fused=fused)
    reference = torch.optim.AdamW([{"params": [theirs[0]], "weight_decay": 0.1},
                                   {"params": [theirs[1]], "weight_decay": 0.0}],
                                  lr=3e-3, betas=(0.9, 0.99), eps=1e-8, fused=fused)
    step_both(optimizer, ours, reference, theirs, steps=3)
    for our_weight, their_weight in zip(ours, theirs, strict=True):
        assert torch.equal(our_weight, their_weight)


@pytest.mark.parametrize("preset", ["vanilla", "modern"])
def test_muon_steps_the_blocks_matrices_and_adamw_everything_else(preset):
    model = GPT(GPTConfig.from_preset(preset, n_layer=2, n_head=2, n_embd=32, block_size=16))
    optimizer = train.make_optimizer(model, lr=1e-3, weight_decay=0.1, beta2=0.99, device=torch.device("cpu"),
                                     optimizer="muon")
    stepped_by = collections.defaultdict(set)
    for group in optimizer.param_groups:
        stepped_by[group["algorithm"]] |= {id(p) for p in group["params"]}

    blocks_matrices = {id(m.weight) for m in model.transformer.h.modules() if isinstance(m, nn.Linear)}
    assert stepped_by["muon"] == blocks_matrices
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: the head is on AdamW too
    assert id(model.transformer.wte.weight) in stepped_by["adamw"]
    if preset == "vanilla":
        assert id(model.transformer.wpe.weight) in stepped_by["adamw"]
    assert stepped_by["muon"] | stepped_by["adamw"] == {id(p) for p in model.parameters()}
    assert not stepped_by["muon"] & stepped_by["adamw"]


def test_a_muon_run_learns_more_than_character_frequencies(corpus_path, corpus_text, tmp_path):
    train.main(flags(corpus_path, tmp_path, optimizer="muon", n_layer=2, max_iters=100, eval_interval=25,
                     warmup_iters=10, lr=1e-2, eval_windows=16))
    val_losses = [record["val_loss"] for record in read_metrics(tmp_path)]
    assert all(later < earlier for earlier, later in itertools.pairwise(val_losses))
    # The best a model blind to context can do is the entropy of the character frequencies (3.34 nats on
    # the val split); measured: 2.68 after 100 steps.
    counts = collections.Counter(corpus_text[int(len(corpus_text) * (1 - data.VAL_FRACTION)):])
    total = sum(counts.values())
    unigram_entropy = -sum(n / total * math.log(n / total) for n in counts.values())
    assert val_losses[-1] < unigram_entropy - 0.3


def test_a_run_saved_before_the_optimizer_flag_resumes_as_adamw(corpus_path, tmp_path, capsys):
    train.main(flags(corpus_path, tmp_path, stop_after_iters=2))
    saved = load_checkpoint(tmp_path / "last.pt")
    del saved["args"]["optimizer"]  # as a checkpoint written before --optimizer existed
    save_checkpoint(saved, tmp_path / "last.pt")
    exit_code, stderr = refusal(["--resume", "--out-dir", str(tmp_path), "--optimizer", "muon"], capsys)
    assert exit_code == 1 and "--optimizer muon differs from the saved run's adamw" in stderr
    train.main(["--resume", "--out-dir", str(tmp_path)])
    assert load_checkpoint(tmp_path / "last.pt")["args"]["optimizer"] == "adamw"
