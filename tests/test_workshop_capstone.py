"""The workshop's capstone: the learner's parts go into model.py by the names its code looks up, for the
length of a run only; a GPT made of the project's own parts standing in for the learner's trains to the
same val loss as the project's, inside the band; and when a part is wrong, comparing each part alone in the
reference model (same float64 weights, one batch, logits and gradients) names it."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

import model
import train
from workshop import capstone
from workshop.tutor import Exercise

TOY = model.GPTConfig.from_preset("small", n_layer=2, n_head=2, n_embd=32, block_size=32)


def toy_flags(out_dir, seed):
    return ["--recipe", "cpu", "--attention", "manual", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
            "--block-size", "32", "--batch-size", "4", "--max-iters", "12", "--warmup-iters", "2",
            "--eval-interval", "6", "--eval-windows", "4", "--sample-tokens", "0", "--seed", str(seed),
            "--out-dir", str(out_dir), "--overwrite"]


def unscaled_attention(q, k, v, mask=None, dropout=None):
    """A known-wrong attention: the scores are not divided by sqrt(head size)."""
    return model.attention(q * math.sqrt(q.size(-1)), k, v, mask, dropout)


class RMSNormWithoutWeight(model.RMSNorm):
    """A known-wrong RMSNorm: it forgets to multiply by its weight."""

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def test_patched_puts_the_parts_in_place_where_they_are_looked_up_and_back_afterwards():
    original_attention, original_gpt = model.attention, model.GPT

    class LearnersGPT(model.GPT):
        pass

    with capstone.patched({"attention": unscaled_attention, "GPT": LearnersGPT}):
        assert model.attention is unscaled_attention
        assert train.GPT is LearnersGPT  # train.py imported GPT by name: its copy is replaced too
    assert model.attention is original_attention and model.GPT is original_gpt and train.GPT is original_gpt


def test_patched_refuses_a_name_model_py_does_not_look_up():
    with pytest.raises(ValueError, match="not a part model.py looks up"), capstone.patched({"GPTConfig": object}):
        pass


def test_the_learners_parts_are_the_model_py_names_their_exercises_mirror():
    exercise = Exercise(3, "attention", "Attention", "docs/learn/03-attention.md",
                        ("model.py:attention", "model.py:causal_mask", "model.py:GPT.forward", "generate.py:sample"),
                        (), lambda module: None)
    module = SimpleNamespace(attention=unscaled_attention, causal_mask=model.causal_mask, helper=print)
    assert capstone.learner_parts({exercise: module}) == {"attention": unscaled_attention,
                                                          "causal_mask": model.causal_mask}


def test_the_projects_own_parts_are_no_culprit():
    parts = {name: getattr(model, name) for name in capstone.PARTS}
    assert capstone.find_culprits(parts, TOY) == []


def test_comparing_each_part_alone_in_the_reference_model_names_the_wrong_one():
    parts = {"attention": unscaled_attention, "RMSNorm": model.RMSNorm, "SwiGLU": model.SwiGLU}
    assert capstone.find_culprits(parts, TOY) == ["attention"]
    # a norm's weight is all ones at initialisation: the comparison moves every weight off its initial value
    parts = {"attention": model.attention, "RMSNorm": RMSNormWithoutWeight}
    assert capstone.find_culprits(parts, TOY) == ["RMSNorm"]


def test_the_band_is_the_seeds_mean_give_or_take_three_standard_deviations_and_never_too_narrow():
    band = capstone.Band.of([1.50, 1.52, 1.54])
    assert band.mean == pytest.approx(1.52) and band.half_width == pytest.approx(0.06)
    assert band.contains(1.577) and not band.contains(1.59) and not band.contains(1.45)
    assert capstone.Band.of([1.5, 1.5]).half_width == capstone.BAND_MIN_HALF_WIDTH


@pytest.mark.slow
def test_a_gpt_of_the_projects_parts_standing_in_for_the_learners_trains_inside_the_band(tmp_path):
    losses = [capstone.train_with({}, toy_flags(tmp_path / f"reference-{seed}", seed))["best_val_loss"]
              for seed in (1, 2)]
    band = capstone.Band.of(losses)
    stand_ins = {name: getattr(model, name) for name in capstone.PARTS}
    learners = capstone.train_with(stand_ins, toy_flags(tmp_path / "learner", 1))["best_val_loss"]
    assert band.contains(learners)
    assert (tmp_path / "learner" / "best.pt").exists() and (tmp_path / "learner" / "metrics.jsonl").exists()


def test_the_docs_band_is_the_one_the_results_file_holds():
    block = capstone.DOCS_BAND.search(capstone.DOCS.read_text()).group(2)
    if not capstone.BAND_FILE.exists():
        assert block.startswith("Not measured yet"), "docs/workshop.md cites a band no results file holds"
        return
    results = json.loads(capstone.BAND_FILE.read_text())
    assert block == capstone.band_section(results)
    assert results["provenance"]["device"] in block and results["seeds"] == list(capstone.BAND_SEEDS)
    assert results["best_val_losses"] == [run["best_val_loss"] for run in results["runs"]]
