"""Every lesson in lessons/ runs at toy size and shows the symptom it claims: the RoPE offset bug fails the
cache check that model.py passes, a model too large for its data overfits and early stopping keeps the best,
float16 gradients underflow and overflow where bfloat16's do not, a run killed with SIGKILL resumes to the
same curve, and the ladder's swaps are set beside their bundle."""

import json

import pytest
import torch

from experiments import common, report
from lessons import float16, lost_run, one_thing_at_a_time, overfitting, rope_cache_offset
from model import GPT, GPTConfig

TINY = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def test_rope_offset_bug_fails_the_cache_check_and_model_py_passes():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, pos="rope")).eval()
    with torch.no_grad():  # weights of scale 1/sqrt(fan-in): attention far from uniform, so positions matter
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=module.in_features ** -0.5)
    measured = rope_cache_offset.compare(model, torch.randint(0, 23, (2, 17)))
    assert measured["loss_broken"] == measured["loss_real"]  # training cannot see the bug
    assert measured["cache_difference_real"] <= rope_cache_offset.TOLERANCE
    assert measured["cache_difference_broken"] > 100 * rope_cache_offset.TOLERANCE


@pytest.mark.slow  # the lesson trains as train.py processes
def test_overfitting_lesson_shows_val_turning_up_and_keeps_the_best(tmp_path, corpus_path):
    toy = ("--n-layer 2 --n-head 4 --n-embd 128 --block-size 32 --batch-size 32 --eval-interval 10 --lr 3e-3 "
           "--warmup-iters 5 --dtype float32")  # 0.4M parameters for 2,700 characters: memorised within 100 steps
    result = overfitting.main(["--chars", "3000", "--max-iters", "200", "--patience", "3", "--device", "cpu",
                               "--data", str(corpus_path), "--train-args", toy, "--runs-dir", str(tmp_path / "runs"),
                               "--docs-dir", str(tmp_path / "docs"), "--results-dir", str(tmp_path / "results")])
    point = result["turning_point"]
    assert point["val_turned_up"] and point["train_kept_falling"]
    assert result["best_checkpoint_step"] == point["best_step"] < point["last_step"] < 200  # stopped early
    assert (tmp_path / "docs" / "plots" / "lesson_overfitting.png").exists()
    assert json.loads((tmp_path / "results" / "lesson_overfitting.json").read_text())["turning_point"] == point


def test_float16_lesson_shows_underflow_overflow_and_the_fixes():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**TINY, "vocab_size": 65}, tie_embeddings=False)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)  # confident predictions, as a trained model makes: tiny probabilities
    x, y = torch.randint(0, 65, (16, 16)), torch.randint(0, 65, (16, 16))
    rows = {(row["dtype"], row["loss_scale_exponent"]): row for row in float16.compare_precisions(model, x, y)}
    unscaled = rows["float16", 0]
    assert unscaled["logit_gradients_zeroed"] > 0.1  # underflow
    assert rows["float16", 8]["logit_gradients_zeroed"] < unscaled["logit_gradients_zeroed"]  # scaling lifts them
    assert rows["float16", 32]["weight_gradients_not_finite"] > 0.5  # too much scaling overflows
    bfloat16 = rows["bfloat16", 0]
    assert bfloat16["logit_gradients_zeroed"] == 0 and bfloat16["weight_gradients_not_finite"] == 0
    assert rows["float32", 0]["below_float16_subnormal"] == pytest.approx(unscaled["logit_gradients_zeroed"], abs=0.01)


@pytest.mark.slow  # the lesson kills a train.py process and resumes it
def test_lost_run_resumes_to_the_same_curve(tmp_path, corpus_path):
    toy = "--max-iters 40 --eval-interval 10 --n-embd 32 --n-head 2 --block-size 32 --batch-size 8 --eval-windows 8"
    result = lost_run.main(["--kill-after", "20", "--delay", "0", "--train-args", toy, "--data", str(corpus_path),
                            "--runs-dir", str(tmp_path / "runs"), "--docs-dir", str(tmp_path / "docs")])
    # Killed as soon as step 20's evaluation is logged; on a busy machine the run may be a checkpoint further.
    assert result["resumed_from_step"] < result["final_step"] == 40
    assert result["identical"] and result["evaluations"] == 5


def test_the_committed_lost_run_lost_steps_and_got_them_back():
    """The measured lesson shows what it claims: the kill landed before the end, and the resumed curve is the same."""
    result = json.loads((common.RESULTS_DIR / "lesson_lost_run.json").read_text())
    assert result["killed_after_step"] <= result["resumed_from_step"] < result["final_step"]
    assert result["identical"] and result["largest_difference"] == 0.0


def ladder_result(losses: dict[str, float]) -> dict:
    """A ladder results file with only what the one-thing table reads."""
    return {"rungs": [{"name": name, "adds": f"adds {name}",
                       "summary": {"best_val_loss": {"mean": loss, "std": 0.01, "n": 3}}}
                      for name, loss in losses.items()]}


def test_one_thing_at_a_time_sets_each_swap_beside_the_bundle(tmp_path, capsys):
    losses = {"stacked": 2.0, "rmsnorm": 2.01, "swiglu": 1.9, "rope": 1.95, "modern": 1.88}
    path = tmp_path / "ladder.json"
    path.write_text(json.dumps(ladder_result(losses)))
    lines = one_thing_at_a_time.main(["--results", str(path)])
    assert "\n".join(lines) in capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    for name in ("rmsnorm", "swiglu", "rope", "modern"):
        assert rows[f"{name}: adds {name}"].endswith(f"| {losses[name] - 2.0:+.4f} |")
    assert rows["the three single changes, added up"].endswith(f"| {0.01 - 0.1 - 0.05:+.4f} |")
    assert "Alone, swiglu changed the val loss most" in lines[-1]
    assert report.one_thing_lines(ladder_result({"stacked": 2.0})) == ["Not measured yet: run the whole ladder."]
    with pytest.raises(SystemExit, match="first run: uv run python -m experiments.ladder"):
        one_thing_at_a_time.main(["--results", str(tmp_path / "missing.json")])
