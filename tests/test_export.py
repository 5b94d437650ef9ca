"""What export.py must guarantee: the Hugging Face model it writes computes our logits (to float32
rounding), for random and for trained weights, through transformers' own loader and both of its
attention paths; and it refuses, with a one-line error, what it cannot export exactly or must not
overwrite."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("safetensors")
transformers = pytest.importorskip("transformers")

import export  # noqa: E402  (after the skips: export needs safetensors)
import train  # noqa: E402
from data import get_batch  # noqa: E402
from generate import generate, sample  # noqa: E402
from machinery.checkpoint import load_checkpoint, load_model, make_checkpoint, save_checkpoint  # noqa: E402
from machinery.device import grad_scaler  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from tokenizer import CharTokenizer, tokenizer_from_state  # noqa: E402

SMALL = dict(n_layer=2, n_embd=64, n_head=4, block_size=32)  # the presets' layouts, shrunk for speed
TOLERANCE = 1e-4  # largest allowed |our logit - HF logit|; float32 rounding is far below it
EXPECTED_CLASS = {"modern": "LlamaForCausalLM", "vanilla": "GPT2LMHeadModel"}


def perturbed_model(preset: str, seed: int = 0, **overrides) -> GPT:
    """A preset model in eval mode with its norm weights and biases moved away from 1 and 0, so a
    mapping that swaps or drops them cannot pass by luck."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_preset(preset, **overrides)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model


def checkpoint_of(model: GPT, tokenizer: CharTokenizer | None = None) -> dict:
    """The checkpoint train.py would save for this model (without the training state)."""
    return make_checkpoint(model, tokenizer)


def load_hf(out_dir: Path, attn_implementation: str = "eager"):
    """The exported folder through transformers' loader, in float32 and eval mode; every tensor must be used."""
    hf_model, info = transformers.AutoModelForCausalLM.from_pretrained(
        out_dir, dtype=torch.float32, attn_implementation=attn_implementation, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]), info
    return hf_model.eval()


@torch.no_grad()
def max_logit_diff(model: GPT, hf_model, batch_size: int = 3, length: int | None = None) -> float:
    """Largest |difference| between our logits and HF's on random tokens (length: block_size unless given)."""
    config = model.config
    idx = torch.randint(0, config.vocab_size, (batch_size, length or config.block_size),
                        generator=torch.Generator().manual_seed(0))
    ours, _ = model(idx)
    return (ours - hf_model(idx).logits).abs().max().item()


@pytest.mark.parametrize("preset,overrides", [
    ("modern", {}),
    ("modern", {"tie_embeddings": False}),
    ("modern", {"bias": True}),  # Llama has optional biases on every linear layer
    ("vanilla", {}),
    ("vanilla", {"mlp": "gelu"}),  # must map to HF's exact erf "gelu", not GPT-2's tanh "gelu_new"
    ("vanilla", {"tie_embeddings": False}),
])
def test_exported_model_matches_ours_with_random_weights(tmp_path, preset, overrides):
    model = perturbed_model(preset, **SMALL, **overrides)
    architecture = export.export_to_hf(checkpoint_of(model), tmp_path / "hf")
    assert architecture == EXPECTED_CLASS[preset]
    for attn_implementation in ("eager", "sdpa"):
        hf_model = load_hf(tmp_path / "hf", attn_implementation)
        assert type(hf_model).__name__ == architecture
        assert max_logit_diff(model, hf_model) <= TOLERANCE, attn_implementation


@pytest.mark.parametrize("preset", ["modern", "vanilla"])
def test_exported_model_matches_ours_at_full_preset_size(tmp_path, preset):
    model = perturbed_model(preset)  # ~10.7M parameters; 64 positions keep the CPU time short
    export.export_to_hf(checkpoint_of(model), tmp_path / "hf")
    assert max_logit_diff(model, load_hf(tmp_path / "hf"), batch_size=1, length=64) <= TOLERANCE


@pytest.fixture(scope="module", params=["modern", "vanilla"])
def trained_model(request, corpus_text) -> tuple[GPT, float, float, CharTokenizer]:
    """A small preset model after 80 of train.py's steps on Tiny Shakespeare: weights far from their init."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_text(corpus_text)
    tokens = torch.tensor(tokenizer.encode(corpus_text[:200_000]))  # plenty for 80 steps
    model = GPT(GPTConfig.from_preset(request.param, **SMALL, vocab_size=tokenizer.vocab_size, dropout=0.0))
    cpu, generator = torch.device("cpu"), torch.Generator().manual_seed(0)
    optimizer = train.make_optimizer(model, lr=3e-3, weight_decay=0.1, beta2=0.99, device=cpu)
    losses = []
    for _ in range(80):
        x, y = get_batch(tokens, 16, model.config.block_size, generator, cpu)
        losses.append(train.train_step(model, optimizer, grad_scaler(cpu, torch.float32), x, y, lr=3e-3).item())
    return model.eval(), losses[0], losses[-1], tokenizer


def test_exported_model_matches_ours_after_training(tmp_path, trained_model):
    model, first_loss, last_loss, tokenizer = trained_model
    assert last_loss < first_loss - 1.0, "the model should have learned something"
    export.export_to_hf(checkpoint_of(model, tokenizer), tmp_path / "hf")
    for attn_implementation in ("eager", "sdpa"):
        assert max_logit_diff(model, load_hf(tmp_path / "hf", attn_implementation)) <= TOLERANCE


def test_greedy_generation_matches_ours_and_decodes_with_the_saved_tokenizer(tmp_path, trained_model):
    model, _, _, tokenizer = trained_model
    export.export_to_hf(checkpoint_of(model, tokenizer), tmp_path / "hf")
    hf_model = load_hf(tmp_path / "hf")
    # No special token ids: HF's defaults would be real characters here, and generate() would stop on them.
    assert hf_model.config.eos_token_id is None and hf_model.generation_config.eos_token_id is None
    prompt = torch.tensor([tokenizer.encode("ROMEO:\n")])
    ours = generate(model, prompt, max_new_tokens=20, temperature=0)
    theirs = hf_model.generate(prompt, max_new_tokens=20, do_sample=False)
    assert torch.equal(ours, theirs)
    chars = json.loads((tmp_path / "hf" / export.TOKENIZER_FILE).read_text())["chars"]
    assert "".join(chars[i] for i in theirs[0].tolist()) == tokenizer.decode(ours[0].tolist())


def test_combinations_without_an_exact_hf_equivalent_are_refused(tmp_path):
    for overrides in ({"pos": "rope"}, {"norm": "rmsnorm"}, {"bias": False}, {"mlp": "swiglu"}):
        model = GPT(GPTConfig.from_preset("vanilla", **SMALL, **overrides))
        with pytest.raises(ValueError, match="no exact Hugging Face equivalent"):
            export.export_to_hf(checkpoint_of(model), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """export.py's command line in this process: (exit status, stdout, stderr)."""
    try:
        export.main(list(args))
        status = 0
    except SystemExit as stop:
        status = stop.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_refuses_a_non_empty_out_dir_unless_forced(tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt.pt", tmp_path / "hf"
    save_checkpoint(checkpoint_of(perturbed_model("vanilla", **SMALL)), ckpt)
    assert run_cli(capsys, "--ckpt", str(ckpt), "--out", str(out))[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    save_checkpoint(checkpoint_of(perturbed_model("modern", **SMALL)), ckpt)
    status, _, err = run_cli(capsys, "--ckpt", str(ckpt), "--out", str(out))
    assert status == 2 and err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert json.loads((out / "config.json").read_text())["model_type"] == "gpt2"  # left as it was

    assert run_cli(capsys, "--ckpt", str(ckpt), "--out", str(out), "--force")[0] == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_force_never_deletes_files_an_export_did_not_write(tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt.pt", tmp_path / "notes"
    save_checkpoint(checkpoint_of(perturbed_model("modern", **SMALL)), ckpt)
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    status, _, err = run_cli(capsys, "--ckpt", str(ckpt), "--out", str(out), "--force")
    assert status == 2 and "todo.txt" in err
    assert (out / "todo.txt").read_text() == "keep me"


@pytest.mark.parametrize("own_files", [["README.md"], ["README.md", "config.json"]])
def test_force_never_replaces_a_users_files_that_share_an_exports_names(own_files, tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt.pt", tmp_path / "mine"
    save_checkpoint(checkpoint_of(perturbed_model("modern", **SMALL)), ckpt)
    out.mkdir()
    for name in own_files:
        (out / name).write_text("my own notes")
    status, _, err = run_cli(capsys, "--ckpt", str(ckpt), "--out", str(out), "--force")
    assert status == 2 and err.count("\n") == 1 and "no previous export" in err
    assert all((out / name).read_text() == "my own notes" for name in own_files)


def test_a_failed_export_leaves_the_previous_one_untouched(tmp_path, monkeypatch):
    out = tmp_path / "hf"
    export.export_to_hf(checkpoint_of(perturbed_model("vanilla", **SMALL)), out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("safetensors.torch.save", disk_full)
    with pytest.raises(ValueError, match="No space left") as error:
        export.export_to_hf(checkpoint_of(perturbed_model("modern", **SMALL)), out, force=True)
    assert str(error.value).startswith(f"cannot write the export to {out} ") and "partial" not in str(error.value)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir()] == ["hf"]  # no staging folder left behind


def test_exported_files_get_the_usual_permissions_not_private_ones(tmp_path):
    previous = os.umask(0o022)
    try:
        vocabulary = CharTokenizer(["\n", *map(chr, range(32, 96))])  # 65 characters, as many as the model's ids
        checkpoint = checkpoint_of(perturbed_model("modern", **SMALL), vocabulary)
        export.export_to_hf(checkpoint, tmp_path / "hf")
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "hf").iterdir()}
    assert modes == {name: 0o644 for name in export.EXPORT_FILES}
    assert stat.S_IMODE((tmp_path / "hf").stat().st_mode) == 0o755


def test_cli_errors_are_one_line_without_a_traceback(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    unsupported = tmp_path / "rope_gpt2.pt"
    save_checkpoint(checkpoint_of(GPT(GPTConfig.from_preset("vanilla", **SMALL, pos="rope"))), unsupported)
    for ckpt, message in ((tmp_path / "missing.pt", "no checkpoint at"), (corrupt, "not a readable checkpoint"),
                          (unsupported, "no exact Hugging Face equivalent")):
        status, _, err = run_cli(capsys, "--ckpt", str(ckpt), "--out", str(tmp_path / "hf"))
        assert status == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_missing_safetensors_names_the_package_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)  # makes the import fail
    with pytest.raises(ImportError, match="pip install safetensors"):
        export.export_to_hf(checkpoint_of(perturbed_model("modern", **SMALL)), tmp_path / "hf")


def test_help_points_to_llama_cpp(capsys):
    status, out, _ = run_cli(capsys, "--help")
    assert status == 0 and "convert_hf_to_gguf.py" in out


def test_an_export_target_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code, _, stderr = run_cli(capsys, "--ckpt", str(tmp_path / "no.pt"), "--out", str(tmp_path / "file" / "hf"))
    assert code == 2 and "no checkpoint at" in stderr  # the checkpoint is checked first: it is cheap
    model_file = tmp_path / "model.pt"
    torch.save(checkpoint_of(perturbed_model("modern", **SMALL)), model_file)
    code, _, stderr = run_cli(capsys, "--ckpt", str(model_file), "--out", str(tmp_path / "file" / "hf"))
    assert code == 2 and stderr.startswith(f"error: cannot write the export to {tmp_path / 'file' / 'hf'}")


def test_the_model_card_is_written_from_the_checkpoint_and_its_run(tmp_path, corpus_path):
    run = tmp_path / "run"
    train.main(["--data", str(corpus_path), "--out-dir", str(run), "--device", "cpu", "--dtype", "float32",
                "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "32", "--batch-size", "8",
                "--max-iters", "8", "--eval-interval", "4", "--eval-windows", "8", "--sample-tokens", "0"])
    export.export_to_hf(run / "best.pt", tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    metadata, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    for line in ("library_name: transformers", "pipeline_tag: text-generation", "license: unknown",
                 "datasets:\n- karpathy/tiny_shakespeare"):
        assert line in metadata
    saved = load_checkpoint(run / "best.pt")
    best = min((json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()),
               key=lambda record: record["val_loss"])
    assert f"Best validation loss {saved['best_val_loss']:.4f} nats per token, {best['val_bpc']:.3f} bits" in body
    model = load_model(saved)
    assert f"# tinygpt: {model.num_params():,} parameters, LlamaForCausalLM" in body
    for name in ("n_layer", "n_embd", "block_size", "norm"):
        assert f"| {name} | {saved['config'][name]} |" in body
    assert f"| lr | {saved['args']['lr']} |" in body and f"{saved['step']} optimizer steps" in body
    tokenizer = tokenizer_from_state(saved["tokenizer"])
    expected_sample = sample(model, tokenizer, prompt="\n", max_new_tokens=200, seed=0).strip("\n")
    assert f"```\n{expected_sample}\n```" in body
    assert "AutoModelForCausalLM.from_pretrained" in body and "Intended use and limitations" in body
