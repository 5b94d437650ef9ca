"""What a checkpoint must guarantee: a failed write leaves the previous file whole; the file rebuilds the
model and its tokenizer; restoring a training run puts the weights, the optimizer and every random stream
back, so the run goes on exactly as if it had never stopped; and the checks before a resume refuse what
cannot work, with a message that says what to do."""

from pathlib import Path

import pytest
import torch

import train
from machinery import checkpoint
from machinery.checkpoint import (
    RunState,
    load_checkpoint,
    load_model,
    make_checkpoint,
    restore_training,
    rng_state,
    save_checkpoint,
)
from machinery.device import grad_scaler
from model import GPT, GPTConfig
from tokenizer import CharTokenizer, tokenizer_from_state

TOKENIZER = CharTokenizer(list("abcdefghijklmnopq"))  # 17 tokens


def tiny_model(seed: int = 0, dropout: float = 0.0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=dropout))


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(make_checkpoint(tiny_model(seed=0), TOKENIZER), path)
    before = path.read_bytes()

    def write_half_then_fail(state, file):
        file.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(make_checkpoint(tiny_model(seed=1), TOKENIZER), path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # the temp file is gone too


def test_a_checkpoint_rebuilds_the_model_and_its_tokenizer(tmp_path):
    model = tiny_model().eval()
    save_checkpoint(make_checkpoint(model, TOKENIZER), tmp_path / "best.pt")
    saved = load_checkpoint(tmp_path / "best.pt")
    assert saved.keys() == {"model", "config", "tokenizer"}  # no training state without a run
    idx = torch.randint(0, 17, (2, 8))
    assert torch.equal(load_model(saved)(idx)[0], model(idx)[0])
    assert tokenizer_from_state(saved["tokenizer"]).decode(list(range(17))) == "abcdefghijklmnopq"


def train_steps(model, optimizer, batch_generator, steps: int) -> None:
    """A few of train.py's steps on random tokens drawn from batch_generator, with dropout on."""
    for _ in range(steps):
        x = torch.randint(0, 17, (4, 8), generator=batch_generator)
        train.train_step(model, optimizer, grad_scaler(torch.device("cpu"), torch.float32), x, x.roll(-1, 1), 1e-2)


def test_restore_training_continues_exactly_where_the_run_stopped(tmp_path):
    cpu = torch.device("cpu")
    model, batches = tiny_model(dropout=0.3), torch.Generator().manual_seed(0)
    optimizer = train.make_optimizer(model, lr=1e-2, weight_decay=0.1, beta2=0.99, device=cpu)
    train_steps(model, optimizer, batches, 3)
    state = RunState(step=3, best_val_loss=2.5, evals_without_improvement=1, interval_loss=torch.tensor(7.0),
                     interval_steps=3)
    rng = {"batches": batches.get_state(), "ranks": [rng_state(cpu)]}
    save_checkpoint(make_checkpoint(model, TOKENIZER, state, optimizer, rng, {"seed": 0}), tmp_path / "last.pt")
    train_steps(model, optimizer, batches, 3)  # the uninterrupted run goes on

    torch.manual_seed(123)  # a new process: other weights, another random state
    resumed, resumed_batches = tiny_model(seed=5, dropout=0.3), torch.Generator()
    resumed_optimizer = train.make_optimizer(resumed, lr=1e-2, weight_decay=0.1, beta2=0.99, device=cpu)
    restored = restore_training(load_checkpoint(tmp_path / "last.pt"), resumed, resumed_optimizer, resumed_batches,
                                rank=0, seed=0, device=cpu)
    assert restored == state
    train_steps(resumed, resumed_optimizer, resumed_batches, 3)
    for (name, weight), resumed_weight in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(weight, resumed_weight), name


def test_a_rank_the_saving_run_did_not_have_gets_its_own_seeded_stream():
    cpu = torch.device("cpu")
    saved = [rng_state(cpu)]  # saved by one process
    checkpoint.restore_rng_state(saved, rank=1, step=10, seed=3, device=cpu)
    first = torch.rand(4)
    checkpoint.restore_rng_state(saved, rank=1, step=10, seed=3, device=cpu)
    assert torch.equal(torch.rand(4), first)  # seeded: the same on every resume
    checkpoint.restore_rng_state(saved, rank=0, step=10, seed=3, device=cpu)
    assert not torch.equal(torch.rand(4), first)  # and not rank 0's stream


def test_record_eval_tracks_the_best_loss_and_evaluations_without_improvement():
    state = RunState()
    assert [state.record_eval(loss) for loss in (3.0, 2.0, 2.5, 2.0, 1.5)] == [True, True, False, False, True]
    assert state.best_val_loss == 1.5 and state.evals_without_improvement == 0
    state.record_eval(1.6)
    assert state.evals_without_improvement == 1


def test_resuming_refuses_another_model_and_accepts_the_same(tmp_path):
    model = tiny_model()
    saved = make_checkpoint(model, TOKENIZER, checkpoint.RunState(), torch.optim.AdamW(model.parameters()),
                            rng={}, settings={})
    checkpoint.check_resumable(saved, {"n_layer": 1, "norm": "layernorm"}, tmp_path / "last.pt")  # the same
    with pytest.raises(ValueError, match=r"not the state of its training run \(optimizer, rng, args, step missing\)"):
        checkpoint.check_resumable(make_checkpoint(model, TOKENIZER), {}, tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"n_layer=1 but --n-layer asks for 2; drop the flag"):
        checkpoint.check_resumable(saved, {"n_layer": 2}, tmp_path / "last.pt")


def test_previous_run_needs_a_checkpoint_to_resume_and_never_overwrites_one_by_accident(tmp_path):
    with pytest.raises(ValueError, match="--resume found no checkpoint"):
        checkpoint.previous_run(tmp_path, resume=True, overwrite=False)
    assert checkpoint.previous_run(tmp_path, resume=False, overwrite=False) is None  # a new run
    save_checkpoint(make_checkpoint(tiny_model(), TOKENIZER), tmp_path / "best.pt")
    with pytest.raises(ValueError, match="already holds a trained run"):
        checkpoint.previous_run(tmp_path, resume=False, overwrite=False)
    assert checkpoint.previous_run(tmp_path, resume=False, overwrite=True) is None
    save_checkpoint(make_checkpoint(tiny_model(), TOKENIZER), tmp_path / "last.pt")
    assert checkpoint.previous_run(Path(tmp_path), resume=True, overwrite=False)["config"]["vocab_size"] == 17


def test_a_checkpoint_from_before_swiglu_joined_its_matrices_loads_but_is_not_resumed(tmp_path):
    # Older versions kept SwiGLU's gate and up matrices apart (mlp.w_gate, mlp.w_up); they load as the
    # one matrix w_gate_up, gate rows first, and give the same logits.
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16, mlp="swiglu")).eval()
    optimizer = train.make_optimizer(model, 1e-3, 0.1, 0.99, torch.device("cpu"))
    rng = {"batches": torch.Generator().get_state(), "ranks": []}
    old = make_checkpoint(model, TOKENIZER, RunState(), optimizer, rng, {})
    for name in [name for name in old["model"] if ".w_gate_up." in name]:
        gate, up = old["model"].pop(name).chunk(2)
        old["model"][name.replace("w_gate_up", "w_gate")] = gate
        old["model"][name.replace("w_gate_up", "w_up")] = up
    save_checkpoint(old, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt")
    idx = torch.randint(0, 17, (2, 8))
    assert torch.equal(load_model(loaded)(idx)[0], model(idx)[0])
    with pytest.raises(ValueError, match="--resume cannot continue .*older version"):
        checkpoint.check_resumable(loaded, {}, tmp_path / "last.pt")
