"""Nothing lost, nothing silent (the fault suite): a diverged run stops at the step it diverges and never
saves NaN weights; --resume continues the saved run with its own settings, on its own corpus, and refuses
a corpus that changed; one run at a time writes into a folder; a full disk or a save killed midway keeps
the previous checkpoint; an output folder that cannot be written, a model too large, a text too short are
refused before any work, leaving no folder; a damaged checkpoint is one line from every command that
reads one; signals end a run with the shell's status. Every run is the tiny CPU float32 run of
test_train.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import REPO, assert_same_losses, assert_same_weights, flags, one_thread_env, read_metrics, refusal

import export
import generate
import inspect_model
import train
from machinery import checkpoint, device, settings
from machinery.checkpoint import load_checkpoint, load_model, make_checkpoint, save_checkpoint
from tokenizer import tokenizer_from_state


def steps_logged(out_dir: Path) -> list[int]:
    return [record["step"] for record in read_metrics(out_dir)]


# ----------------------------------------------------------------------------------------------------
# Non-finite numbers


@pytest.mark.parametrize("flag", ["--lr", "--min-lr", "--weight-decay", "--grad-clip", "--beta2", "--dropout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_float_flags_refuse_nan_and_infinity(flag, value, corpus_path, tmp_path, capsys):
    exit_code, stderr = refusal([*flags(corpus_path, tmp_path), f"{flag}={value}"], capsys)
    assert exit_code == 2
    assert stderr.startswith(f"error: argument {flag}: {value} is not a finite number")
    assert not tmp_path.joinpath("last.pt").exists()


def test_a_nan_loss_stops_the_run_at_that_step_and_no_checkpoint_holds_nan(corpus_path, tmp_path, monkeypatch,
                                                                            capsys):
    real_train_step = train.train_step
    steps = []

    def poisoned_train_step(model, *args, **kwargs):  # a weight turns NaN during step 5, as a divergence does
        steps.append(len(steps))
        if len(steps) == 6:
            next(model.parameters()).data.fill_(float("nan"))
        return real_train_step(model, *args, **kwargs)

    monkeypatch.setattr(train, "train_step", poisoned_train_step)
    exit_code, stderr = refusal(flags(corpus_path, tmp_path, max_iters=12), capsys)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert "the training loss is nan at step 5" in stderr and "--lr" in stderr and "--grad-clip" in stderr
    assert len(steps) == 6  # caught within the step, not at the next evaluation
    for name in ("last.pt", "best.pt"):
        saved = load_checkpoint(tmp_path / name)  # refuses non-finite weights, so loading proves they are finite
        assert saved["step"] == 4
    assert steps_logged(tmp_path) == [0, 4]


def nan_checkpoint(finished: Path, path: Path) -> Path:
    saved = torch.load(finished / "last.pt", weights_only=True)
    saved["model"]["lm_head.weight"][0, 0] = float("nan")
    torch.save(saved, path)  # written past save_checkpoint, which would refuse it
    return path


def test_resume_generate_and_export_refuse_nan_weights(corpus_path, tmp_path, capsys):
    run = tmp_path / "run"
    train.main(flags(corpus_path, run))
    with pytest.raises(ValueError, match="NaN or infinite weights"):
        save_checkpoint(torch.load(nan_checkpoint(run, tmp_path / "nan.pt"), weights_only=True), tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    nan_checkpoint(run, run / "last.pt")
    exit_code, stderr = refusal(flags(corpus_path, run, resume=True, max_iters=12), capsys)
    assert exit_code == 1 and "NaN or infinite weights" in stderr
    assert generate.main(["--ckpt", str(tmp_path / "nan.pt"), "--temperature", "0"]) == 2
    assert "NaN or infinite weights" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--ckpt", str(tmp_path / "nan.pt"), "--out", str(tmp_path / "hf")])
    assert exit_info.value.code == 2 and "NaN or infinite weights" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("damage", ["truncated", "NUL bytes"])
def test_a_damaged_local_tiny_shakespeare_is_refused(damage, corpus_path, tmp_path, capsys):
    text = corpus_path.read_bytes()
    damaged = text[:500_000] if damage == "truncated" else text[:1000] + b"\0" * 10 + text[1010:]
    copy = tmp_path / "tinyshakespeare.txt"
    copy.write_bytes(damaged)
    exit_code, stderr = refusal(flags(copy, tmp_path / "run"), capsys)
    assert exit_code == 1 and "is not the Tiny Shakespeare its name says" in stderr and "delete it" in stderr
    (tmp_path / "mine.txt").write_bytes(damaged)  # the same text under another name is the user's own
    train.main(flags(tmp_path / "mine.txt", tmp_path / "run", max_iters=1, overwrite=True))


def test_a_context_too_long_for_memory_is_refused_before_any_work(corpus_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(device, "memory_bytes", lambda device: 2**30)  # a machine with 1 GiB
    monkeypatch.setattr(train.data, "load_corpus", lambda *a, **k: pytest.fail("the data was read first"))
    exit_code, stderr = refusal(flags(corpus_path, tmp_path, block_size=100_000, batch_size=16), capsys)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert re.match(r"error: --block-size 100000 with --batch-size 16 needs at least [\d.,]+ GiB to train, more than "
                    r"the 1\.0 GiB of this cpu; lower --block-size or --batch-size", stderr), stderr


def test_a_model_too_large_for_memory_is_refused_naming_the_flags_that_size_it(corpus_path, tmp_path, capsys,
                                                                               monkeypatch):
    monkeypatch.setattr(device, "memory_bytes", lambda device: 2**30)
    exit_code, stderr = refusal(flags(corpus_path, tmp_path / "run", n_embd=100_000, n_head=2), capsys)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert re.match(r"error: the model itself is too large for this cpu: its [\d,]+ parameters need [\d.,]+ GiB with "
                    r"their gradients and AdamW's moments, more than its 1\.0 GiB; make it smaller with --n-embd, "
                    r"--n-layer or --preset", stderr), stderr
    assert "--block-size" not in stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["x", "to be or not to be, ", "x\udcff"])
def test_a_run_refused_for_its_corpus_leaves_no_folder(text, tmp_path, capsys):
    corpus = tmp_path / "short.txt"
    corpus.write_bytes(text.encode("utf-8", "surrogateescape"))  # the last one is not UTF-8
    exit_code, stderr = refusal(flags(corpus, tmp_path / "out" / "run"), capsys)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert "too short for this run" in stderr or "not UTF-8" in stderr
    assert not (tmp_path / "out").exists()


def test_a_min_lr_above_the_peak_lr_is_refused(corpus_path, tmp_path, capsys):
    exit_code, stderr = refusal(flags(corpus_path, tmp_path / "run", lr=0.01, min_lr=1), capsys)
    assert exit_code == 1 and stderr == ('error: --min-lr 1 is above the peak --lr 0.01, so the "decay" would climb; '
                                         "give a --min-lr no larger than --lr\n")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------------------------
# Resume semantics


def test_a_bare_resume_continues_the_saved_run_with_its_settings(corpus_path, tmp_path):
    uninterrupted, stopped = tmp_path / "uninterrupted", tmp_path / "stopped"
    run_settings = dict(max_iters=10, lr=2e-3, eval_interval=5, dropout=0.1)
    train.main(flags(corpus_path, uninterrupted, **run_settings))
    train.main(flags(corpus_path, stopped, stop_after_iters=3, **run_settings))
    summary = train.main(["--resume", "--out-dir", str(stopped)])
    assert summary["steps"] == 10  # not the recipe's 600, and in the saved run's float32, not the CPU's auto bf16
    assert_same_losses(read_metrics(stopped), read_metrics(uninterrupted))
    assert_same_weights(stopped / "last.pt", uninterrupted / "last.pt")


def test_a_finished_run_is_not_extended_unless_max_iters_asks(corpus_path, tmp_path, capsys):
    train.main(flags(corpus_path, tmp_path))
    before = (tmp_path / "best.pt").read_bytes()
    for max_iters in ([], ["--max-iters", "8"], ["--max-iters", "3"]):  # the loop once ran forever below the step
        capsys.readouterr()
        assert train.main(["--resume", "--out-dir", str(tmp_path), *max_iters]) == {}
        assert "nothing to do: the run" in capsys.readouterr().out
    assert (tmp_path / "best.pt").read_bytes() == before
    summary = train.main(["--resume", "--out-dir", str(tmp_path), "--max-iters", "12"])
    assert summary["steps"] == 12
    assert "resuming with --max-iters 12 (the saved run had 8)" in capsys.readouterr().out
    assert steps_logged(tmp_path) == [0, 4, 8, 12]


@pytest.mark.parametrize("flag,value", [("--lr", "0.02"), ("--preset", "vanilla"), ("--batch-size", "4"),
                                        ("--tokenizer", "bpe"), ("--optimizer", "muon")])
def test_a_flag_that_would_make_another_run_is_refused_on_resume(flag, value, corpus_path, tmp_path, capsys):
    train.main(flags(corpus_path, tmp_path, stop_after_iters=2))
    before = (tmp_path / "last.pt").read_bytes()
    extra = ["--vocab-size", "300"] if flag == "--tokenizer" else []
    exit_code, stderr = refusal(["--resume", "--out-dir", str(tmp_path), flag, value, *extra], capsys)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert f"{flag} {value} differs from the saved run's" in stderr
    assert (tmp_path / "last.pt").read_bytes() == before


def test_a_resume_on_another_number_of_processes_keeps_the_global_batch():
    """Batch size is per process: a run saved by 2 processes of 4 continues in 1 process of 8, and back."""
    saved = {"batch_size": 4, "lr": 0.01}

    def resumed(argv: list[str], world: int, saved_world: int) -> tuple[int, list[str]]:
        values = vars(settings.parse_args(argv))
        values, changes = settings.resume_settings(values, saved, settings.given_flags(argv), world, saved_world)
        return values["batch_size"], changes

    assert resumed([], world=1, saved_world=2) == (8, [])  # a bare --resume splits the same 8 sequences
    assert resumed([], world=4, saved_world=1) == (1, [])
    batch, changes = resumed(["--batch-size", "8"], world=1, saved_world=2)
    assert batch == 8 and "the same global batch" in changes[0]
    with pytest.raises(ValueError, match="--batch-size 6 differs"):
        resumed(["--batch-size", "6"], world=1, saved_world=2)  # 6 sequences a step: another run
    with pytest.raises(ValueError, match="cannot be split over 3 processes"):
        resumed([], world=3, saved_world=2)


def test_resume_of_a_checkpoint_without_optimizer_state_is_refused_clearly(corpus_path, tmp_path, capsys):
    train.main(flags(corpus_path, tmp_path, stop_after_iters=2))
    saved = load_checkpoint(tmp_path / "last.pt")
    model = load_model(saved)
    save_checkpoint(make_checkpoint(model, tokenizer_from_state(saved["tokenizer"])), tmp_path / "last.pt")
    exit_code, stderr = refusal(["--resume", "--out-dir", str(tmp_path)], capsys)
    assert exit_code == 1 and "not the state of its training run (optimizer, rng, args, step missing)" in stderr


# ----------------------------------------------------------------------------------------------------
# A run's corpus is part of the run: --resume trains on the text the checkpoint records


@pytest.fixture
def own_corpus(corpus_path, tmp_path) -> Path:
    """A text of the user's own (20,000 characters of Shakespeare under another name), in its own folder."""
    path = tmp_path / "corp" / "docs.txt"
    path.parent.mkdir()
    path.write_text(corpus_path.read_text()[:20_000])
    return path


def test_a_bare_resume_trains_on_the_saved_runs_own_corpus(own_corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    monkeypatch.chdir(own_corpus.parent)  # --data relative to where the run started
    train.main(flags(Path("docs.txt"), run, stop_after_iters=2))
    record = load_checkpoint(run / "last.pt")["corpus"]
    assert record == {"path": str(own_corpus.resolve()), "sha256": hashlib.sha256(own_corpus.read_bytes()).hexdigest(),
                      "bytes": 20_000, "chars": 20_000}
    monkeypatch.chdir(tmp_path)  # elsewhere, where docs.txt names nothing
    monkeypatch.setenv("TINYGPT_DATA", str(tmp_path / "nowhere.txt"))
    summary = train.main(["--resume", "--out-dir", str(run)])
    assert summary["steps"] == 8
    trained_chars = "".join(sorted(set(own_corpus.read_text()[:18_000])))  # the training split's vocabulary
    assert load_checkpoint(run / "last.pt")["tokenizer"]["chars"] == trained_chars


def test_a_resume_after_the_corpus_changed_is_refused_unless_asked(own_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    train.main(flags(own_corpus, run, stop_after_iters=2))
    before = (run / "last.pt").read_bytes()
    own_corpus.write_text(own_corpus.read_text()[:19_000])
    exit_code, stderr = refusal(["--resume", "--out-dir", str(run)], capsys)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert re.match(rf"error: {re.escape(str(own_corpus))} changed since the run was saved \(20,000 bytes, sha256 "
                    r"[0-9a-f]{12} then; 19,000 bytes, sha256 [0-9a-f]{12} now\); put the original back, or pass "
                    r"--corpus-changed-ok", stderr), stderr
    assert (run / "last.pt").read_bytes() == before
    train.main(["--resume", "--out-dir", str(run), "--corpus-changed-ok"])
    assert "as --corpus-changed-ok asks" in capsys.readouterr().out
    assert load_checkpoint(run / "last.pt")["corpus"]["bytes"] == 19_000  # the text it now trains on


def test_another_data_on_resume_is_refused_with_advice_that_works(own_corpus, corpus_path, tmp_path, capsys):
    run = tmp_path / "run"
    train.main(flags(own_corpus, run, stop_after_iters=2))
    exit_code, stderr = refusal(["--resume", "--out-dir", str(run), "--data", str(corpus_path)], capsys)
    assert exit_code == 1 and f"--data {corpus_path} is not the corpus the saved run trained on" in stderr
    assert "drop --data to continue the run" in stderr
    assert train.main(["--resume", "--out-dir", str(run), "--max-iters", "4"])["steps"] == 4  # as the advice says
    train.main(["--resume", "--out-dir", str(run), "--data", str(own_corpus), "--max-iters", "6"])  # the same file


def test_a_checkpoint_saved_before_corpus_records_resumes_on_its_saved_data_with_a_note(own_corpus, tmp_path,
                                                                                       capsys):
    run = tmp_path / "run"
    train.main(flags(own_corpus, run, stop_after_iters=2))
    saved = torch.load(run / "last.pt", weights_only=True)
    del saved["corpus"]
    torch.save(saved, run / "last.pt")
    capsys.readouterr()
    assert train.main(["--resume", "--out-dir", str(run)])["steps"] == 8
    out = capsys.readouterr().out
    assert f"resuming with {own_corpus} unchecked (the checkpoint was saved before runs recorded their corpus)" in out
    assert "data docs.txt:" in out


# ----------------------------------------------------------------------------------------------------
# One run per folder


def hold_out_dir(out_dir: Path):
    """Take out_dir's lock as a running run does, in this process (train.main opens its own file, which
    flock treats as another holder)."""
    lock = checkpoint.OutDirLock()
    out_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire(out_dir)
    return lock


@pytest.mark.parametrize("how", ["new", "--resume", "--overwrite"])
def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_running_process(how, corpus_path, tmp_path,
                                                                                capsys):
    train.main(flags(corpus_path, tmp_path, stop_after_iters=2))
    before = {path.name: path.read_bytes() for path in tmp_path.glob("*.pt")}
    with hold_out_dir(tmp_path):
        extra = {"new": {}, "--resume": {"resume": True}, "--overwrite": {"overwrite": True}}[how]
        exit_code, stderr = refusal(flags(corpus_path, tmp_path, **extra), capsys)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert stderr.startswith(f"error: --out-dir {tmp_path} is in use by another training run (process {os.getpid()},")
    assert {path.name: path.read_bytes() for path in tmp_path.glob("*.pt")} == before
    train.main(flags(corpus_path, tmp_path, resume=True))  # released: the folder is free again


def test_temporary_files_are_left_alone_while_another_run_holds_the_folder(corpus_path, tmp_path, capsys):
    in_progress = tmp_path / ".last.pt.abc123.tmp"
    with hold_out_dir(tmp_path):
        in_progress.write_bytes(b"another run's save in progress")
        refusal(flags(corpus_path, tmp_path), capsys)
        with pytest.raises(ValueError, match="in use by another training run"):
            checkpoint.prepare_out_dir(tmp_path, checkpoint.OutDirLock())
    assert in_progress.exists()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_run_does_not_block_the_next(corpus_path, tmp_path):
    hold = ("import sys, time; from pathlib import Path; from machinery.checkpoint import OutDirLock; "
            "lock = OutDirLock(); lock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ValueError, match=f"process {holder.pid},"):
            checkpoint.check_out_dir(tmp_path)
    finally:
        holder.kill()
    assert holder.wait() == -signal.SIGKILL
    assert (tmp_path / "run.lock").read_text() == f"{holder.pid}\n"  # the file stays; the lock went with the process
    train.main(flags(corpus_path, tmp_path))


# ----------------------------------------------------------------------------------------------------
# Output: folders that cannot be written, full disks, killed saves


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_out_dir_that_cannot_be_written_is_refused_before_any_work(where, corpus_path, tmp_path, capsys,
                                                                     monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    out_dir = tmp_path / "file" if where == "a file" else tmp_path / "file" / "run"
    monkeypatch.setattr(train.data, "load_corpus", lambda *a, **k: pytest.fail("the data was read first"))
    exit_code, stderr = refusal(flags(corpus_path, out_dir), capsys)
    assert exit_code == 1 and stderr.startswith(f"error: cannot write to --out-dir {out_dir}")


def test_a_full_disk_keeps_the_previous_checkpoint_and_metrics_hold_saved_steps_only(corpus_path, tmp_path, capsys,
                                                                                      monkeypatch):
    real_save = torch.save
    calls = []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):  # evaluations at 0 and 4 save; the one at 8 fails
        calls.append(1)
        if len(calls) > 3:  # step 0: best + last; step 4: last (or best + last)
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_fills)
    exit_code, stderr = refusal(flags(corpus_path, tmp_path, max_iters=12), capsys)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert exit_code == 1 and stderr.count("\n") == 1
    assert "No space left on device" in stderr and "the previous checkpoint is kept" in stderr
    last_step = load_checkpoint(tmp_path / "last.pt")["step"]
    assert last_step in (0, 4)
    assert not list(tmp_path.glob(".*.tmp"))
    assert steps_logged(tmp_path) == list(range(0, last_step + 1, 4))
    train.main(flags(corpus_path, tmp_path, max_iters=12, resume=True))
    assert steps_logged(tmp_path) == [0, 4, 8, 12]  # each step once


def test_temporary_files_of_a_killed_save_are_removed_by_the_next_run(corpus_path, tmp_path):
    train.main(flags(corpus_path, tmp_path, stop_after_iters=2))
    stale = tmp_path / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    train.main(flags(corpus_path, tmp_path, resume=True))
    assert not stale.exists()


@pytest.mark.slow
def test_a_closed_pipe_ends_the_run_quietly_and_saves_it(corpus_path, tmp_path):
    command = f"{sys.executable} train.py {' '.join(map(str, flags(corpus_path, tmp_path, max_iters=400)))} | head -n 1"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=REPO, env=one_thread_env(),
                            capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved["step"] < 400  # stopped early, saved where it stopped
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 0


@pytest.mark.slow
def test_bench_ends_quietly_when_its_reader_goes_away_and_still_saves_its_results(tmp_path):
    results = tmp_path / "bench.json"
    bench = (f"{sys.executable} bench.py generate --device cpu --preset small --new-tokens 8 --repeats 1 "
             f"--warmup-tokens 1 --threads 1 --out {results} | head -c 1")
    result = subprocess.run(["bash", "-c", bench], cwd=REPO, env=one_thread_env(), capture_output=True, text=True,
                            timeout=300)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert json.loads(results.read_text())  # the measurement is still saved


def last_logged_step(metrics: Path) -> int:
    """The step of the last complete line of a metrics file another process is writing (-1 if none)."""
    lines = metrics.read_text().split("\n")[:-1] if metrics.exists() else []  # the last piece may be half-written
    return json.loads(lines[-1])["step"] if lines else -1


@pytest.mark.slow
def test_three_sigkills_at_random_steps_then_resume_give_the_uninterrupted_weights(corpus_path, tmp_path):
    run_settings = dict(max_iters=300, eval_interval=10, dropout=0.1)  # dropout: its random state must resume too

    def train_process(out_dir: Path, resume: bool) -> subprocess.Popen:
        argv = ["--resume", "--out-dir", str(out_dir)] if resume else flags(corpus_path, out_dir, **run_settings)
        return subprocess.Popen([sys.executable, "train.py", *map(str, argv)], cwd=REPO, env=one_thread_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert train_process(reference, resume=False).wait(timeout=300) == 0
    targets = sorted(random.Random().sample(range(10, 280, 10), 3))  # a fresh choice of steps every time
    for kill_number, target in enumerate(targets):
        process = train_process(killed, resume=kill_number > 0)
        try:
            while last_logged_step(killed / "metrics.jsonl") < target:
                assert process.poll() is None, process.stderr.read()
                time.sleep(0.01)
            time.sleep(random.uniform(0, 0.05))  # somewhere in the steps after that evaluation, or in its save
        finally:
            process.kill()
        assert process.wait() == -signal.SIGKILL
    assert train_process(killed, resume=True).wait(timeout=300) == 0
    assert_same_weights(killed / "last.pt", reference / "last.pt")
    assert_same_losses(read_metrics(killed), read_metrics(reference))  # and each evaluation logged once


# ----------------------------------------------------------------------------------------------------
# Damaged checkpoints: every command that reads one says so in one line and exits non-zero


@pytest.fixture(scope="module")
def saved_run(corpus_path, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("saved_run")
    train.main(flags(corpus_path, out_dir, stop_after_iters=2))
    return out_dir


DAMAGES = {"truncated": lambda good: good[:len(good) // 2],
           "random bytes": lambda good: random.Random(0).randbytes(len(good))}


def damaged_run(saved_run: Path, damage: str, tmp_path: Path) -> Path:
    """A copy of the saved run whose last.pt and best.pt are damaged."""
    out_dir = tmp_path / "damaged"
    out_dir.mkdir()
    for name in ("last.pt", "best.pt"):
        (out_dir / name).write_bytes(DAMAGES[damage]((saved_run / name).read_bytes()))
    return out_dir


def exit_and_stderr(command, capsys) -> tuple[int, str]:
    """Run a command's main in-process: its exit code (its return value or SystemExit's) and its stderr."""
    try:
        code = command()
    except SystemExit as stop:
        code = stop.code
    if isinstance(code, str):  # SystemExit("error: ..."): Python prints it and exits with 1
        return 1, code + "\n"
    return code, capsys.readouterr().err


COMMANDS = {
    "train.py --resume": lambda out_dir: train.main(["--resume", "--out-dir", str(out_dir)]),
    "generate.py": lambda out_dir: generate.main(["--out-dir", str(out_dir), "--max-new-tokens", "5"]),
    "export.py": lambda out_dir: export.main(["--ckpt", str(out_dir / "best.pt"), "--out", str(out_dir / "hf")]),
    "inspect_model.py": lambda out_dir: inspect_model.main(["--out-dir", str(out_dir), "--port", "0",
                                                            "--device", "cpu"]),
}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_damaged_checkpoint_is_one_line_and_a_non_zero_exit_for_every_command(command, damage, saved_run,
                                                                                tmp_path, capsys):
    out_dir = damaged_run(saved_run, damage, tmp_path)
    before = {path.name: path.read_bytes() for path in out_dir.iterdir()}
    capsys.readouterr()
    exit_code, stderr = exit_and_stderr(lambda: COMMANDS[command](out_dir), capsys)
    assert exit_code not in (0, None) and stderr.count("\n") == 1, stderr
    assert stderr.startswith("error: ") and "is not a readable checkpoint" in stderr and "Traceback" not in stderr
    assert {path.name: path.read_bytes() for path in out_dir.iterdir()} == before  # nothing written or removed


SLOW_SAVE = """
import sys, time
from pathlib import Path
import torch
from machinery import checkpoint
real_save = torch.save
def slow_save(obj, file, *args, **kwargs):  # half of the file written, then a pause in which to be killed
    real_save(obj, file, *args, **kwargs)
    file.truncate(file.tell() // 2)
    file.flush()
    print("half written", flush=True)
    time.sleep(600)
checkpoint.torch.save = slow_save
saved = checkpoint.load_checkpoint(sys.argv[1])
saved["step"] += 1
checkpoint.save_checkpoint(saved, Path(sys.argv[1]))
"""


@pytest.mark.slow
def test_a_save_killed_midway_leaves_the_previous_checkpoint_intact(saved_run, tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes((saved_run / "last.pt").read_bytes())
    saver = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(path)], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert saver.stdout.readline() == "half written\n"
    finally:
        saver.kill()
    assert saver.wait() == -signal.SIGKILL
    assert path.read_bytes() == (saved_run / "last.pt").read_bytes()
    assert load_checkpoint(path)["step"] == 2
    assert len(list(tmp_path.glob(".last.pt.*.tmp"))) == 1  # the half-written file, for the next run to remove
