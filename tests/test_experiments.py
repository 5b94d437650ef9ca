"""The experiments' machinery, end to end at toy size: every number in a results file is the one train.py
wrote to metrics.jsonl, every number in docs/results.md is the one in the results file, the swaps change
what they say they change, the KV cache gives the same tokens, and the plots are written.

The suites run for real (train.py in its own process per run) on a 1-layer, 32-wide model for 10 steps,
into temporary folders, so the committed results are never touched.
"""

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import budget, choices, common, default_run, final, speed, swaps, tokenizers
from machinery import settings
from machinery.device import cpu_has_fast_bf16
from machinery.settings import RECIPES

pytestmark = pytest.mark.slow  # the suites train real runs through train.py processes

TOY = ("--n-layer 1 --n-head 2 --n-embd 32 --block-size 32 --batch-size 4 --max-iters 10 --eval-interval 5 "
       "--eval-windows 4 --warmup-iters 2")


@pytest.fixture(scope="module")
def suite(tmp_path_factory, corpus_path):
    """Run the swaps (norm and kvcache), tokenizers, speed, default-run and final experiments once, into one
    results folder."""
    root = tmp_path_factory.mktemp("experiments")
    dirs = {"results": root / "results", "docs": root / "docs", "runs": root / "runs"}
    shared = [f"--train-args={TOY}", "--data", str(corpus_path), "--device", "cpu", "--results-dir",
              str(dirs["results"]), "--docs-dir", str(dirs["docs"]), "--runs-dir", str(dirs["runs"])]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # toy models gain nothing from threads, and a busy machine hurts them
        swaps.main(["norm", "kvcache", "--seeds", "1", "--new-tokens", "12", "--repeats", "1", *shared])
        tokenizers.main(["--vocab-sizes", "300", *shared])
        speed.main(["--target-loss", "4.0", *shared])
        default_run.main(shared)
        final.main(shared)
        budget.main(["--budgets", "20s", "--sizes", "cpu", *shared])  # TOY's --max-iters caps the run at 10 steps
    return dirs


def load(suite, name: str) -> dict:
    return json.loads((suite["results"] / f"{name}.json").read_text())


def section(suite, name: str) -> str:
    """The part of results.md about one experiment."""
    text = (suite["docs"] / "results.md").read_text()
    return next(part for part in text.split("\n## ") if part.startswith(f"{name}:"))


def table_row(text: str, first_cell: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def metrics_of(run: dict) -> list[dict]:
    return common.read_metrics(Path(common.ROOT, run["out_dir"]) / "metrics.jsonl")


def test_results_hold_exactly_what_train_py_wrote(suite):
    for name in ("norm", "tokenizers", "speed"):
        for variant in load(suite, name)["variants"]:
            for run in variant.get("runs", []):
                records = metrics_of(run)
                assert run["metrics"] == records
                assert run["best_val_loss"] == min(r["val_loss"] for r in records)
                assert run["final_val_bpc"] == records[-1]["val_bpc"]
                assert run["elapsed_s"] == records[-1]["elapsed_s"]
                assert run["command"].startswith("python train.py ") and f"--seed {run['seed']}" in run["command"]


def test_swap_changes_one_field_and_its_table_shows_the_json_numbers(suite):
    result = load(suite, "norm")
    baseline, swapped = result["variants"]
    assert (baseline["name"], swapped["name"]) == ("vanilla", "rmsnorm")
    assert swapped["config_diff"] == {"norm": ["layernorm", "rmsnorm"]}
    assert baseline["config"]["n_embd"] == 32 and result["schedule"]["max_iters"] == 10
    text = section(suite, "norm")
    for variant in result["variants"]:
        summary, run = variant["summary"], variant["runs"][0]
        assert summary["best_val_loss"]["mean"] == statistics.fmean(r["best_val_loss"] for r in variant["runs"])
        row = table_row(text, variant["name"])
        assert row[2] == f"{variant['params']:,}"
        at_steps = [f"{summary['val_loss_at'][step]['mean']:.4f}" for step in summary["val_loss_at"]]
        assert row[4:4 + len(at_steps)] == at_steps
        assert at_steps[-1] == f"{run['metrics'][-1]['val_loss']:.4f}"
        assert row[4 + len(at_steps)] == f"{run['best_val_loss']:.4f}"
    for fact in ("depth 1, width 32", "10 steps", "Seeds: 1337", result["provenance"]["device"]):
        assert fact in text


def test_kv_cache_gives_the_same_tokens_and_is_timed_both_ways(suite):
    result = load(suite, "kvcache")
    assert [model["name"] for model in result["models"]] == ["vanilla", "modern"]
    vanilla, modern = result["models"]
    assert vanilla["weights"].endswith("vanilla/seed1337/best.pt")  # trained by the norm swap
    assert modern["weights"] == "random"  # the modern preset was not trained here
    for model in result["models"]:
        assert model["identical"] and len(model["token_ids"]) == model["new_tokens"] == 12
        assert model["tokens_per_sec_with_cache"] > 0 and model["tokens_per_sec_without_cache"] > 0
        assert table_row(section(suite, "kvcache"), model["name"])[-1] == "yes"


def test_tokenizers_compare_bits_per_character(suite):
    result = load(suite, "tokenizers")
    by_name = {variant["name"]: variant for variant in result["variants"]}
    assert list(by_name) == ["char", "bpe-300", "gpt2"]
    assert by_name["char"]["chars_per_token"] == 1.0 and by_name["char"]["vocab_size"] == 65
    assert by_name["bpe-300"]["chars_per_token"] > 1.0 and by_name["bpe-300"]["vocab_size"] == 300
    assert by_name["bpe-300"]["params"] > by_name["char"]["params"]  # a bigger embedding table
    text = section(suite, "tokenizers")
    for name in ("char", "bpe-300"):
        variant = by_name[name]
        row = table_row(text, name)
        assert row[5] == f"{metrics_of(variant['runs'][0])[-1]['val_bpc']:.4f}"
        assert row[6] == f"{variant['summary']['best_val_bpc']['mean']:.4f}"
    if "skipped" in by_name["gpt2"]:
        assert table_row(text, "gpt2")[1] == by_name["gpt2"]["skipped"]


def test_speed_finds_the_first_evaluation_at_the_target(suite):
    result = load(suite, "speed")
    records = result["variants"][0]["runs"][0]["metrics"]
    first = next(r for r in records if r["val_loss"] <= 4.0)
    assert result["reached"] and result["step_at_target"] == first["step"]
    assert result["time_to_target_s"] == first["elapsed_s"]
    assert table_row(section(suite, "speed"), result["provenance"]["device"])[5] == f"{first['elapsed_s']:.1f}"


def test_default_run_records_what_train_py_wrote(suite):
    result = load(suite, "default_cpu")
    run = result["variants"][0]["runs"][0]
    records = metrics_of(run)
    assert result["preset"] == "small"  # train.py's CPU default
    assert run["best_val_loss"] == min(r["val_loss"] for r in records)
    row = table_row(section(suite, "default_cpu"), result["provenance"]["device"])
    assert row[4] == f"{run['best_val_loss']:.4f}" and row[3] == str(records[-1]["step"])


def test_budget_study_records_best_pt_on_the_whole_split_as_train_py_wrote_it(suite):
    result = load(suite, "budget_cpu")
    run, = result["runs"]
    last = metrics_of(run)[-1]
    assert (run["budget_s"], run["recipe"]) == (20, "cpu")
    assert run["best_val_loss_whole_split"] == last["best_val_loss_whole_split"] and last["time_budget_s"] == 20
    assert run["best_val_loss_windows"] == min(r["val_loss"] for r in metrics_of(run) if "val_loss" in r)
    row = table_row(section(suite, "budget_cpu"), "20 s")
    assert row[1] == "cpu" and row[6] == f"{run['best_val_loss_whole_split']:.4f}"
    assert row[9] == f"{run['process_seconds']:.0f}"
    assert run["device"] == result["provenance"]["device"]  # each run names the machine it ran on, in the table too
    assert row[12] == run["device"] and row[13] == run["git_commit"][:10]
    assert row[14] == f"{run['schedule']['weight_decay']:g}"
    # the load average is the run's own, from its receipt: a later study that reuses the run keeps it
    receipt = json.loads((suite["runs"] / Path(run["out_dir"]).name / "run.json").read_text())
    assert run["load_average_at_start"] == receipt["load_average_at_start"]
    # and so are the machine's name and speed, measured before it ran
    assert run["device"] == receipt["device"] and run["matmul_flops_per_s"] == receipt["matmul_flops_per_s"] > 0
    assert row[15] == f"{run['matmul_flops_per_s'] / 1e9:,.0f}"


def test_final_comparison_trains_both_presets_the_same_way(suite):
    result = load(suite, "final_cpu")
    vanilla, modern = result["variants"]
    assert (vanilla["name"], modern["name"]) == ("vanilla", "modern")
    assert set(modern["config_diff"]) == {"norm", "mlp", "pos", "bias"}  # the architecture, nothing else
    for variant in result["variants"]:
        run = variant["runs"][0]
        without_preset_and_folder = run["command"].replace(f"--preset {variant['name']} ", "").replace(
            f"/{variant['name']}/", "/")
        assert without_preset_and_folder == vanilla["runs"][0]["command"].replace("--preset vanilla ", "").replace(
            "/vanilla/", "/")
        assert "--recipe full-size-cpu" in run["command"]  # the CPU schedule; the toy flags come after it and win,
        assert run["schedule"]["lr"] == RECIPES["full-size-cpu"]["lr"]  # except where they set nothing
        assert run["best_val_loss"] == min(r["val_loss"] for r in metrics_of(run))
        row = table_row(section(suite, "final_cpu"), variant["name"])
        assert row[1] == f"{variant['params']:,}" and f"{run['best_val_loss']:.4f}" in row
    gap = modern["summary"]["best_val_loss"]["mean"] - vanilla["summary"]["best_val_loss"]["mean"]
    assert f"best val loss: {gap:+.4f}" in section(suite, "final_cpu")


def test_compile_estimate_is_the_first_interval_beyond_the_later_pace():
    records = [{"step": 0, "elapsed_s": 1.0}, {"step": 10, "elapsed_s": 31.0}, {"step": 20, "elapsed_s": 41.0},
               {"step": 25, "elapsed_s": 46.0}]
    assert speed.compile_estimate(records)["compile_s"] == pytest.approx(20.0)  # 30s for 10 steps at 1s/step
    assert speed.compile_estimate(records[:2]) is None


def test_a_finished_run_is_reused_and_the_report_covers_every_results_file(suite, corpus_path, capsys):
    before = load(suite, "norm")
    swaps.main(["norm", "--seeds", "1", f"--train-args={TOY}", "--data", str(corpus_path), "--device", "cpu",
                "--results-dir", str(suite["results"]), "--docs-dir", str(suite["docs"]),
                "--runs-dir", str(suite["runs"])])
    assert capsys.readouterr().out.count("reusing") == 2
    assert load(suite, "norm")["variants"] == before["variants"]
    text = (suite["docs"] / "results.md").read_text()
    for name in ("norm", "kvcache", "tokenizers", "speed", "default_cpu", "final_cpu", "budget_cpu"):
        assert f"\n## {name}:" in text


def test_report_runs_as_a_script_and_rebuilds_the_same_page(suite):
    docs = suite["docs"].with_name("docs-again")  # beside the first, so its link to the results is the same
    subprocess.run([sys.executable, "experiments/report.py", "--results-dir", str(suite["results"]),
                    "--docs-dir", str(docs)], cwd=common.ROOT, check=True, capture_output=True)
    assert (docs / "results.md").read_text() == (suite["docs"] / "results.md").read_text()


def test_plots_are_written_when_matplotlib_is_present(suite):
    pytest.importorskip("matplotlib")
    for name in ("norm", "tokenizers"):
        path = suite["docs"] / "plots" / f"{name}.png"
        assert path.read_bytes().startswith(b"\x89PNG")
        assert f"](plots/{name}.png)" in section(suite, name)


def test_plots_are_skipped_without_matplotlib(suite, tmp_path, monkeypatch):
    import machinery
    from experiments import report

    monkeypatch.setitem(sys.modules, "machinery.plots", None)  # `from machinery import plots` now raises ImportError
    monkeypatch.delattr(machinery, "plots", raising=False)  # as it would without matplotlib: never imported

    shutil.copytree(suite["results"], tmp_path / "results")
    report.build_report(tmp_path / "results", tmp_path / "docs")
    assert not (tmp_path / "docs" / "plots").exists()
    assert "## norm:" in (tmp_path / "docs" / "results.md").read_text()


def test_the_full_suite_runs_the_gpu_recipes_code_paths_at_toy_size(tmp_path, corpus_path):
    """`swaps --full` trains with the gpu recipe and --patience; here at toy size on the CPU, with what a GPU
    turns on: torch.compile, bf16 autocast (where this CPU has native bf16) and gradient accumulation. The
    compile-off path is the one every other test in this file trains with."""
    dtype = "bfloat16" if cpu_has_fast_bf16() else "float32"
    toy = f"{TOY} --grad-accum 2 --compile --dtype {dtype}"
    swaps.main(["pos", "--full", "--seeds", "2", f"--train-args={toy}", "--data", str(corpus_path), "--device",
                "cpu", "--results-dir", str(tmp_path / "results"), "--docs-dir", str(tmp_path / "docs"),
                "--runs-dir", str(tmp_path / "runs")])
    result = json.loads((tmp_path / "results" / "pos.json").read_text())
    assert result["setting"] == "full" and result["schedule"]["compile"] and result["schedule"]["grad_accum"] == 2
    assert result["schedule"]["lr"] == RECIPES["gpu"]["lr"] and result["schedule"]["dtype"] == dtype
    for variant in result["variants"]:
        for run in variant["runs"]:
            assert "--recipe gpu --patience 5" in run["command"] and "--compile" in run["command"]
    effect = result["effect"]
    baseline, rope = ([run["best_val_loss"] for run in variant["runs"]] for variant in result["variants"])
    assert effect["differences"] == pytest.approx([b - a for a, b in zip(baseline, rope, strict=True)])
    # 10 steps are far from converged: the page says so instead of a verdict.
    assert effect["verdict"].startswith("no verdict")
    page = (tmp_path / "docs" / "results.md").read_text()
    assert effect["verdict"] in page and "What each swap is worth" in page


def test_the_weight_decay_choice_trains_cpu_10m_for_steps_with_only_the_weight_decay_changed():
    recipe = settings.RECIPES["cpu-10m"]
    for variant, flags in choices.WEIGHT_DECAYS.items():
        argv = ["--device", "cpu", *choices.CPU_10M_FOR_STEPS, *flags]
        run = settings.resolve(settings.parse_args(argv), settings.given_flags(argv))[0]
        assert all(getattr(run, name) == recipe[name] for name in choices.CPU_10M_SETTINGS), variant
        assert (run.max_iters, run.time_budget, run.eval_windows) == (800, None, 0)  # steps, not the 10 minutes
    decays = [float(flags[-1]) for flags in choices.WEIGHT_DECAYS.values()]
    assert decays == [settings.SHARED_DEFAULTS["weight_decay"], recipe["weight_decay"]]

