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


FAKE_NANOGPT = '''
from dataclasses import dataclass
import torch
from torch import nn

BUILT = []


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        BUILT.append(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)

    def forward(self, idx, targets=None):
        logits = self.lm_head(self.wte(idx))
        return logits, nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        print("num decayed parameter tensors: ...")
        optimizer = torch.optim.AdamW(self.parameters(), lr=learning_rate, betas=betas, weight_decay=weight_decay)
        original = optimizer.step
        def counted(*args, **kwargs):
            BUILT.append("step")
            return original(*args, **kwargs)
        optimizer.step = counted
        return optimizer
'''


def test_the_peer_benchmark_times_nanogpts_model_of_the_same_size_in_interleaved_rounds(tmp_path, capsys):
    """bench.py peer reads nanoGPT's model.py from the checkout it is given (here a stand-in with its interface),
    builds it at the preset's size and dropout, and times both steps round by round."""
    (tmp_path / "nanoGPT").mkdir()
    (tmp_path / "nanoGPT" / "model.py").write_text(FAKE_NANOGPT)
    out = tmp_path / "peer.json"
    assert bench.main(["peer", "--nanogpt", str(tmp_path / "nanoGPT"), "--preset", "small", "--steps", "2",
                       "--rounds", "3", "--warmup-steps", "1", "--device", "cpu", "--dtype", "float32",
                       "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "num decayed" not in printed  # nanoGPT's own prints are kept out of the table
    written = json.loads(out.read_text())
    import nanogpt_model  # the module bench.py loaded from the checkout

    config = nanogpt_model.BUILT[0]
    small = bench.GPTConfig.from_preset("small")
    assert (config.n_layer, config.n_embd, config.block_size, config.dropout) == (
        small.n_layer, small.n_embd, small.block_size, small.dropout)
    assert nanogpt_model.BUILT.count("step") == 1 + 3 * 2  # its warm-up, then each round's steps
    ours, peer = written["results"]
    assert (ours["model"], peer["model"]) == ("tinygpt", "nanoGPT")
    assert peer["params"] == small.vocab_size * small.n_embd * 2 and peer["precision"] == "float32"
    assert len(ours["runs"]) == len(peer["runs"]) == 3
    ratios = [a / b for a, b in zip(ours["runs"], peer["runs"], strict=True)]
    assert written["ratio"] == pytest.approx(sorted(ratios)[1], abs=5e-4)  # the median round, as written


def test_the_peer_benchmark_says_what_it_needs_when_the_checkout_has_no_model(tmp_path, capsys):
    assert bench.main(["peer", "--nanogpt", str(tmp_path), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "github.com/karpathy/nanoGPT" in error
