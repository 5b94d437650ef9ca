"""The ladder's claims, checked: the counted baselines are what counting by hand gives, the bigram network
learns the counted bigram, the ladder records exactly what train.py wrote and fills its table and the
chapters with it, and the committed results are complete. (tests/test_learn.py checks the chapters.)
"""

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from experiments import common, ladder, report

LEARN = common.ROOT / "docs" / "learn"
COMMITTED = common.RESULTS_DIR / "ladder.json"


def test_counted_baselines_equal_counting_by_hand():
    train_ids = np.array([0, 1, 2, 0, 1, 0, 3, 1, 2, 2, 0])
    val_ids = np.array([1, 2, 0, 3, 3, 1])
    vocab = 5  # token 4 never occurs: smoothing still gives it a probability
    probs = ladder.count_baselines(train_ids, val_ids, vocab)
    unigram = Counter(train_ids.tolist())
    pairs = Counter(zip(train_ids[:-1].tolist(), train_ids[1:].tolist(), strict=True))
    after = Counter(train_ids[:-1].tolist())
    val_pairs = list(zip(val_ids[:-1].tolist(), val_ids[1:].tolist(), strict=True))
    by_hand = {
        "uniform": math.log(vocab),
        "unigram": -sum(math.log((unigram[b] + 1) / (len(train_ids) + vocab)) for _, b in val_pairs) / len(val_pairs),
        "bigram": -sum(math.log((pairs[a, b] + 1) / (after[a] + vocab)) for a, b in val_pairs) / len(val_pairs),
    }
    for name, expected in by_hand.items():
        assert ladder.counted_val_loss(name, probs[name], val_ids) == pytest.approx(expected, rel=1e-12)
    assert probs["bigram"].sum(axis=1) == pytest.approx(np.ones(vocab))


@pytest.fixture
def one_thread():
    """Models this small train fastest on one thread, as the ladder runs them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bigram_network_lands_on_the_counted_bigram(tmp_path, corpus_path, one_thread):
    """The ladder's own bigram rung, trained by train.py with the ladder's CPU schedule (one seed, seconds at
    this size), reaches the counted bigram's val loss within the stated tolerance."""
    bigram = ladder.RUNGS[0]
    assert bigram.name == "bigram" and bigram.config["n_layer"] == 0
    argv = [*ladder.rung_flags(bigram, "cpu"), *common.to_flags(ladder.CPU_SCHEDULE), "--device", "cpu", "--data",
            str(corpus_path), "--out-dir", str(tmp_path), "--sample-tokens", "0"]
    summary = train.main(argv)
    counted = ladder.counted_results(str(corpus_path))
    counted_bigram = next(entry["val_loss"] for entry in counted if entry["name"] == "bigram")
    assert abs(summary["best_val_loss"] - counted_bigram) <= ladder.BIGRAM_TOLERANCE


TOY = "--n-embd 16 --block-size 16 --batch-size 4 --max-iters 10 --eval-interval 5 --warmup-iters 2 --eval-windows 8"


@pytest.fixture(scope="module")
def toy_ladder(tmp_path_factory, corpus_path):
    """The first two rungs, two seeds each, at toy size, into temporary folders; the chapters copied there so
    the report fills them."""
    root = tmp_path_factory.mktemp("ladder")
    shutil.copytree(LEARN, root / "docs" / "learn")
    ladder.main(["--rungs", "one-head", "--seeds", "2", "--device", "cpu", "--data", str(corpus_path),
                 f"--train-args={TOY}", "--results-dir", str(root / "results"), "--docs-dir", str(root / "docs"),
                 "--runs-dir", str(root / "runs")])
    return root, json.loads((root / "results" / "ladder_partial.json").read_text())


@pytest.mark.slow  # toy_ladder trains its rungs as train.py processes
def test_ladder_records_exactly_what_train_py_wrote(toy_ladder):
    _, result = toy_ladder
    assert [rung["name"] for rung in result["rungs"]] == ["bigram", "one-head"]  # one-head brings its parent
    bigram, one_head = result["rungs"]
    assert one_head["config_diff"] == {"n_layer": [0, 1], "n_head": [4, 1], "pos": ["none", "learned"]}
    assert bigram["config"]["tie_embeddings"] is False and bigram["config"]["n_layer"] == 0
    for rung in result["rungs"]:
        assert [run["seed"] for run in rung["runs"]] == [1337, 1338]
        for run in rung["runs"]:
            assert run["metrics"] == common.read_metrics(Path(common.ROOT, run["out_dir"]) / "metrics.jsonl")
            assert run["command"].startswith("python train.py --preset vanilla ")
            assert f"--seed {run['seed']}" in run["command"] and "--max-iters 10" in run["command"]
        best = [run["best_val_loss"] for run in rung["runs"]]
        assert rung["summary"]["best_val_loss"]["mean"] == pytest.approx(sum(best) / 2)
        mean_curve = rung["summary"]["curves"]["val_loss"]["mean"]
        assert rung["plateau"]["gain"] == pytest.approx(mean_curve[1] - mean_curve[-1])  # steps 0, 5, 10: 5 is 3/4
    assert [entry["name"] for entry in result["counted"]] == ["uniform", "unigram", "bigram"]
    assert result["counted"][0]["val_loss"] == pytest.approx(math.log(65))
    assert result["bigram_check"]["network"] == bigram["summary"]["best_val_loss"]["mean"]


@pytest.mark.slow  # toy_ladder trains its rungs as train.py processes
def test_ladder_generation_rungs(toy_ladder):
    _, result = toy_ladder
    assert result["kvcache"]["identical"] and result["kvcache"]["new_tokens"] == 32  # twice the context
    samples = result["sampling"]["samples"]
    assert [(s["temperature"], s["top_k"], s["top_p"]) for s in samples] == \
        [(s.get("temperature"), s.get("top_k"), s.get("top_p")) for s in ladder.SAMPLING_SETTINGS]
    assert all(s["text"].startswith(ladder.SAMPLING_PROMPT) for s in samples)


@pytest.mark.slow  # toy_ladder trains its rungs as train.py processes
def test_ladder_fills_the_table_and_the_chapters(toy_ladder):
    root, result = toy_ladder
    assert not (root / "results" / "ladder.json").exists()  # a partial ladder never replaces the whole one
    report.fill_learn_pages(root / "docs" / "learn", report.ladder_blocks(result))
    bigram = result["rungs"][0]
    val_loss = report.spread_text(bigram["summary"]["best_val_loss"])
    row = f"| bigram | {bigram['adds']} | — | {bigram['params']:,} | {val_loss} |"
    assert row in (root / "docs" / "results.md").read_text()
    chapter = (root / "docs" / "learn" / "02-bigram.md").read_text()
    assert row in chapter and report.as_taught(bigram["runs"][0]["command"]) in chapter  # written with uv run
    assert "| bigram (counted) |" in (root / "docs" / "learn" / "01-counting.md").read_text()
    assert (root / "docs" / "plots" / "ladder_partial.png").exists()


def test_committed_ladder_results_are_complete_and_what_their_runs_wrote():
    """experiments/results/ladder.json: every rung, three seeds, the CPU schedule, made by committed code; the
    bigram check and each rung's plateau numbers recomputed from the runs' own metrics."""
    result = json.loads(COMMITTED.read_text())
    assert result["setting"] == "cpu" and result["seeds"] == [1337, 1338, 1339]
    assert [rung["name"] for rung in result["rungs"]] == list(ladder.RUNG_NAMES)
    assert not result["provenance"]["git_dirty"] and result["provenance"]["command"] == "python -m experiments.ladder"
    for name, value in ladder.CPU_SCHEDULE.items():
        assert result["schedule"][name] == value
    for rung in result["rungs"]:
        assert [run["seed"] for run in rung["runs"]] == result["seeds"]
        for run in rung["runs"]:
            assert run["command"].startswith("python train.py --preset vanilla ")
            assert f"--seed {run['seed']}" in run["command"]
            assert run["best_val_loss"] == min(record["val_loss"] for record in run["metrics"])
        steps = rung["summary"]["steps"]
        curves = [[record["val_loss"] for record in run["metrics"]] for run in rung["runs"]]
        mean = [sum(values) / len(values) for values in zip(*curves, strict=True)]
        quarter = steps.index(rung["plateau"]["from_step"])
        assert rung["plateau"]["gain"] == pytest.approx(mean[quarter] - mean[-1])
        assert rung["plateau"]["flat"] == (rung["plateau"]["gain"] < ladder.PLATEAU_GAIN)
    check = result["bigram_check"]
    bigram = next(rung for rung in result["rungs"] if rung["name"] == "bigram")
    assert check["network"] == pytest.approx(sum(run["best_val_loss"] for run in bigram["runs"]) / 3)
    assert check["counted"] == next(c["val_loss"] for c in result["counted"] if c["name"] == "bigram")
    assert check["within"] and abs(check["difference"]) <= ladder.BIGRAM_TOLERANCE
    assert result["kvcache"]["identical"]


def test_a_ladder_run_writes_under_out_unless_asked_to_update_the_committed_results():
    args = ladder.parse_args(["--rungs", "bigram"])
    assert args.results_dir == ladder.OWN_RESULTS_DIR and args.docs_dir == ladder.OWN_RESULTS_DIR / "docs"
    assert ladder.OWN_RESULTS_DIR.is_relative_to(common.ROOT / "out")  # git-ignored
    args = ladder.parse_args(["--update-results"])
    assert (args.results_dir, args.docs_dir) == (common.RESULTS_DIR, common.DOCS_DIR)
    args = ladder.parse_args(["--results-dir", "elsewhere"])
    assert str(args.results_dir) == "elsewhere"


def test_count_only_prints_the_counted_floor_and_writes_nothing(corpus_path, tmp_path, capsys):
    ladder.main(["--count-only", "--data", str(corpus_path), "--results-dir", str(tmp_path / "results"),
                 "--docs-dir", str(tmp_path / "docs"), "--runs-dir", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "bigram   val loss 2.48" in out and not any(tmp_path.iterdir())
