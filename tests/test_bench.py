"""Where bench.py writes: trying a benchmark must not change the committed results the docs are built
from (that is what --update-results is for)."""

import json
import subprocess

import pytest

import bench
from machinery import results

TINY_GENERATE = ["generate", "--preset", "small", "--new-tokens", "2", "--warmup-tokens", "1", "--repeats", "1",
                 "--device", "cpu", "--dtype", "float32"]


@pytest.mark.slow  # bench generate compiles the decode step twice, cold and then cached: half a minute
def test_a_benchmark_writes_to_an_ignored_folder_unless_asked_to_update_the_results(tmp_path, monkeypatch):
    assert bench.SCRATCH_DIR == results.ROOT / "out" / "bench"  # out*/ is in .gitignore
    monkeypatch.setattr(bench, "SCRATCH_DIR", tmp_path / "out" / "bench")
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path / "experiments" / "results")
    assert bench.main([*TINY_GENERATE, "--no-compile"]) == 0
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")] == ["out/bench/bench_generate.json"]

    assert bench.main([*TINY_GENERATE, "--update-results"]) == 0
    committed = tmp_path / "experiments" / "results" / "bench_generate.json"
    written = json.loads(committed.read_text())
    assert written["benchmark"] == "generate"
    compiled = next(result for result in written["results"] if result["path"] == "KV cache, compiled")
    assert compiled["compile_s"] > 0 and compiled["compile_cached_s"] > 0  # a first run's, and a later run's
    for result in written["results"]:  # the limit measured before each way of decoding, and its median used
        assert len(result["weight_read_ms_each"]) == 3
        assert result["fraction_of_limit_worst_run"] <= result["fraction_of_limit"]


def test_provenance_counts_changed_code_as_uncommitted_but_not_written_results(tmp_path, monkeypatch):
    """An experiment writes several results files in turn: the later ones must not call the code dirty."""
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "experiments" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    for name in ("model.py", "experiments/results/norm.json", "docs/results.md", "README.md"):
        (tmp_path / name).write_text("first\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    monkeypatch.setattr(results, "ROOT", tmp_path)
    for name in ("experiments/results/norm.json", "docs/results.md", "README.md"):
        (tmp_path / name).write_text("a result\n")
    assert results.git_commit()[1] is False
    (tmp_path / "model.py").write_text("changed code\n")
    assert results.git_commit()[1] is True


def test_the_profile_lists_the_operations_that_took_most_of_a_training_step(tmp_path):
    out = tmp_path / "profile.json"
    assert bench.main(["profile", "--preset", "small", "--steps", "1", "--top", "4", "--device", "cpu",
                       "--dtype", "float32", "--out", str(out)]) == 0
    top = json.loads(out.read_text())["results"]
    assert len(top) == 4 and 0 < sum(entry["share"] for entry in top) <= 1
    assert [entry["share"] for entry in top] == sorted((entry["share"] for entry in top), reverse=True)
