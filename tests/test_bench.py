"""Where bench.py writes: trying a benchmark must not change the committed results the docs are built
from (that is what --update-results is for)."""

import json

import bench
import results

TINY_GENERATE = ["generate", "--preset", "small", "--new-tokens", "2", "--warmup-tokens", "1", "--repeats", "1",
                 "--device", "cpu", "--dtype", "float32"]


def test_a_benchmark_writes_to_an_ignored_folder_unless_asked_to_update_the_results(tmp_path, monkeypatch):
    assert bench.SCRATCH_DIR == results.ROOT / "out" / "bench"  # out*/ is in .gitignore
    monkeypatch.setattr(bench, "SCRATCH_DIR", tmp_path / "out" / "bench")
    monkeypatch.setattr(bench, "RESULTS_DIR", tmp_path / "experiments" / "results")
    assert bench.main(TINY_GENERATE) == 0
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json")] == ["out/bench/bench_generate.json"]

    assert bench.main([*TINY_GENERATE, "--update-results"]) == 0
    committed = tmp_path / "experiments" / "results" / "bench_generate.json"
    assert json.loads(committed.read_text())["benchmark"] == "generate"
