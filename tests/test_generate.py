"""What generation must guarantee: the KV cache and the compiled decode step change the speed and never the
text, top-k and top-p
keep exactly the candidates their rules name, temperature 0 is argmax, a seed repeats a sample, the
streamed text is the returned text, and every mistake on the command line is one clear error line."""

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import generate
import train
from generate import (
    default_prompt,
    filter_logits,
    generate_tokens,
    load,
    sample,
    sample_next,
    warm_up_compiled_step,
)
from machinery import compiling, device
from machinery.checkpoint import make_checkpoint, save_checkpoint
from machinery.compiling import compiled_before, compiled_step, forget_loaded_steps, package_path, step_key
from machinery.generation import (
    COMPILE_PAYS_OFF_AFTER,
    COMPILE_PAYS_OFF_AFTER_CACHED,
    StreamDecoder,
    compile_for_generation,
    compile_pays_off,
)
from model import GPT, PRESETS, GPTConfig
from tokenizer import BPETokenizer, CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN_PROMPT = "Roméo €"  # 'é' and '€' are not among Tiny Shakespeare's 65 characters


def tiny_model(preset: str, seed: int = 0, **overrides) -> GPT:
    """A 2-layer model with the switches of a named preset and a 32-token context, 65 characters."""
    switches = {name: PRESETS[preset][name] for name in ("norm", "mlp", "pos", "bias")}
    settings = dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**switches, **settings, **overrides})).eval()
    # Weights far larger than the training init spread the logits apart, so no greedy pick is a
    # near-tie that float rounding could decide differently on the two paths.
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


@pytest.fixture(scope="module")
def tokenizer(corpus_text: str) -> CharTokenizer:
    return CharTokenizer.from_text(corpus_text)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory, tokenizer: CharTokenizer) -> Path:
    """An out dir holding best.pt in the format train.py writes (the keys generation needs)."""
    out_dir = tmp_path_factory.mktemp("out")
    save_checkpoint(make_checkpoint(tiny_model("modern"), tokenizer), out_dir / "best.pt")
    return out_dir


@pytest.mark.parametrize("preset", ["vanilla", "modern"])
@pytest.mark.parametrize("prompt_len,new_tokens", [(6, 20), (50, 20), (6, 80)],
                         ids=["short prompt", "prompt longer than block_size", "generation past block_size"])
def test_text_is_identical_with_and_without_cache(preset, prompt_len, new_tokens, tokenizer, corpus_text):
    model = tiny_model(preset)
    prompt = corpus_text[:prompt_len]
    given_a_cache = []  # for each forward pass: was it given a KV cache? (proves both paths really ran)
    model.register_forward_pre_hook(lambda module, args, kwargs: given_a_cache.append("kv_cache" in kwargs),
                                    with_kwargs=True)
    # Greedy text is what the cache must not change; seeded sampling also wanders through varied text.
    for settings in (dict(temperature=0), dict(temperature=1.0, seed=0)):
        cached = sample(model, tokenizer, prompt, new_tokens, use_kv_cache=True, **settings)
        assert all(given_a_cache) and len(given_a_cache) == new_tokens
        given_a_cache.clear()
        uncached = sample(model, tokenizer, prompt, new_tokens, use_kv_cache=False, **settings)
        assert not any(given_a_cache) and len(given_a_cache) == new_tokens
        given_a_cache.clear()
        assert cached == uncached, settings
        assert cached.startswith(prompt) and len(cached) == prompt_len + new_tokens


@pytest.mark.slow  # compiling takes half a minute for each model
@pytest.mark.parametrize("preset", ["vanilla", "modern"])
def test_compiled_decode_step_gives_the_greedy_tokens_of_the_eager_step_and_of_no_cache(preset):
    model = tiny_model(preset)
    prompt = torch.randint(65, (2, 6), generator=torch.Generator().manual_seed(0))  # a batch of two
    # 80 new tokens after 6: the 32-token window slides, and each slide refills the cache eagerly.
    eager = generate.generate(model, prompt, 80, temperature=0)
    assert torch.equal(eager, generate.generate(model, prompt, 80, temperature=0, use_kv_cache=False))
    assert torch.equal(eager, generate.generate(model, prompt, 80, temperature=0, compile_step=True))
    # The weights are the compiled step's inputs, not part of it: other weights, the same compiled step.
    other = tiny_model(preset, seed=1)
    assert step_key(other, 2) == step_key(model, 2)
    assert torch.equal(generate.generate(other, prompt, 80, temperature=0),
                       generate.generate(other, prompt, 80, temperature=0, compile_step=True))


@pytest.mark.slow  # compiling takes half a minute
def test_a_later_run_loads_the_compiled_step_an_earlier_one_built_and_gives_its_text(tokenizer, monkeypatch):
    model = tiny_model("modern", block_size=64)  # a model no other test compiles
    builds = []
    build = compiling.build_package
    monkeypatch.setattr(compiling, "build_package", lambda *args: builds.append(args[-1]) or build(*args))
    warm_up_compiled_step(model)
    assert builds == [package_path(step_key(model))] and compiled_before(step_key(model))
    first = sample(model, tokenizer, "ROMEO:", 100, temperature=1.0, seed=0, compile_step=True)
    forget_loaded_steps()  # what a new process knows: only what is on disk
    assert sample(model, tokenizer, "ROMEO:", 100, temperature=1.0, seed=0, compile_step=True) == first
    assert len(builds) == 1  # loaded, not built again, past a window slide (100 tokens, 64-token window)
    assert first == sample(model, tokenizer, "ROMEO:", 100, temperature=1.0, seed=0)  # the eager text


def candidates(logits: list[float], draws: int = 4000, **settings) -> set[int]:
    """The token ids sample_next picks in many draws from one distribution: the candidates it kept."""
    batch = torch.tensor(logits).repeat(draws, 1)
    picks = sample_next(batch, generator=torch.Generator().manual_seed(0), **settings)
    return set(picks.flatten().tolist())


def test_top_k_keeps_exactly_k_and_ties_at_the_boundary_go_to_lower_ids():
    logits = [1.0, 3.0, 3.0, 3.0, 0.0, 3.0]  # four tokens tie for first place
    assert candidates(logits, top_k=1) == {1}
    assert candidates(logits, top_k=2) == {1, 2}
    assert candidates(logits, top_k=4) == {1, 2, 3, 5}
    assert candidates(logits, top_k=5) == {0, 1, 2, 3, 5}
    assert candidates(logits, top_k=100) == set(range(6))  # more than the vocabulary: all kept


def test_top_p_keeps_the_fewest_most_likely_tokens_that_reach_p():
    uniform = [0.0] * 4  # probabilities of exactly 0.25 each, so sums are exact
    assert candidates(uniform, top_p=0.5) == {0, 1}  # the second token reaches 0.5 exactly: enough
    assert candidates(uniform, top_p=0.51) == {0, 1, 2}
    assert candidates(uniform, top_p=0.25) == {0}
    assert candidates([2.0, 1.0, 0.0, -1.0], top_p=1.0) == {0, 1, 2, 3}  # 1.0 keeps everything
    dominant = [10.0, 0.0, 0.0, 0.0]  # token 0 has 99.99% of the probability
    assert candidates(dominant, top_p=0.9) == {0}
    assert candidates(dominant, top_p=0.01) == {0}  # the most likely token is always kept


def test_filter_logits_divides_by_the_temperature_and_puts_minus_infinity_on_dropped_tokens():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0]])
    assert torch.equal(filter_logits(logits, temperature=2.0), (logits - 3.0) / 2.0)  # less the max: same softmax
    inf = float("inf")
    assert torch.equal(filter_logits(logits, temperature=2.0, top_k=2),
                       torch.tensor([[-inf, 0.0, 0.0, -inf, -inf, -inf]]))  # ties at the boundary: lower ids
    greedy = filter_logits(logits, temperature=0, top_k=4)
    assert greedy[0].isfinite().nonzero().flatten().tolist() == [1]  # the first of the maxima, whatever top_k says


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_tiny_temperatures_sample_the_most_likely_token_without_crashing(temperature):
    logits = torch.randn(8, 65, generator=torch.Generator().manual_seed(0)) * 10
    picked = sample_next(logits, temperature=temperature, generator=torch.Generator().manual_seed(1))
    assert torch.equal(picked, logits.argmax(dim=-1, keepdim=True))


def test_temperature_zero_is_argmax(tokenizer):
    logits = torch.randn(8, 65)
    expected = logits.argmax(dim=-1, keepdim=True)
    assert torch.equal(sample_next(logits, temperature=0), expected)
    assert torch.equal(sample_next(logits, temperature=0, top_k=3, top_p=0.5), expected)
    # and end to end: each new character is the argmax of a full forward pass over the text so far
    model = tiny_model("modern")
    ids = tokenizer.encode("ROMEO:")
    for _ in range(10):
        logits, _ = model(torch.tensor([ids]))
        ids.append(logits[0, -1].argmax().item())
    assert sample(model, tokenizer, "ROMEO:", 10, temperature=0) == tokenizer.decode(ids)


@pytest.mark.parametrize("settings,message", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=0), "top-k"), (dict(top_p=0.0), "top-p"),
    (dict(top_p=1.5), "top-p"), (dict(temperature=float("nan")), "temperature"),
])
def test_sampling_refuses_settings_out_of_range(settings, message):
    with pytest.raises(ValueError, match=message):
        sample_next(torch.zeros(1, 5), **settings)


def test_same_seed_gives_the_same_text_and_different_seeds_differ(tokenizer):
    model = tiny_model("modern")
    first = sample(model, tokenizer, "ROMEO:", 60, temperature=1.0, seed=1)
    assert sample(model, tokenizer, "ROMEO:", 60, temperature=1.0, seed=1) == first
    assert sample(model, tokenizer, "ROMEO:", 60, temperature=1.0, seed=2) != first


@pytest.mark.parametrize("tokenizer_kind", ["char", "bytes"])
def test_streamed_text_is_the_returned_text(tokenizer_kind, tokenizer):
    if tokenizer_kind == "bytes":  # random bytes: characters cut across tokens, invalid UTF-8 on the way
        tokenizer = BPETokenizer([])
    model = tiny_model("vanilla", vocab_size=tokenizer.vocab_size)
    pieces = []
    text = sample(model, tokenizer, "JULIET:", 200, temperature=1.0, seed=0, stream=pieces.append)
    assert pieces[0] == "JULIET:"  # the prompt is shown first
    assert "".join(pieces) == text


def test_stream_decoder_never_prints_half_a_character():
    tokenizer = BPETokenizer([])  # byte-level with no merges: every byte is its own token
    text = "Roméo — 🌹!"  # characters of 2, 3 and 4 bytes
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(byte) for byte in text.encode()] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    decoder.push("é".encode()[0])  # a character cut off by the end of generation
    assert decoder.flush() == "\ufffd"


def test_sampling_uses_eval_mode_and_gives_the_mode_back(tokenizer):
    model = tiny_model("modern", dropout=0.5)
    expected = sample(model, tokenizer, "ROMEO:", 20, temperature=0)
    model.train()  # as train.py leaves it: dropout would change the text if it were on
    assert sample(model, tokenizer, "ROMEO:", 20, temperature=0) == expected
    assert model.training


def test_default_prompt_is_a_newline_or_the_first_token():
    assert default_prompt(CharTokenizer(list("\nab"))) == "\n"
    assert default_prompt(CharTokenizer(list("xyz"))) == "x"


def test_load_reads_an_out_dir_or_a_file(checkpoint_dir, tokenizer):
    for where in (checkpoint_dir, checkpoint_dir / "best.pt"):
        model, loaded_tokenizer = load(where, device="cpu", dtype="float32")
        assert not model.training
        assert loaded_tokenizer.state_dict() == tokenizer.state_dict()
    assert sample(model, loaded_tokenizer, "ROMEO:", 20, temperature=0) == \
        sample(tiny_model("modern"), tokenizer, "ROMEO:", 20, temperature=0)


@pytest.fixture
def decode_cache(tmp_path, monkeypatch):
    """An empty folder for what generation remembers (the compiled steps, the faster precision)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    return tmp_path


def fake_measurements(monkeypatch, bfloat16: float, float32: float) -> list:
    """Make measure_decode_dtypes report these seconds; returns the list of its calls."""
    calls = []
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(device, "measure_decode_dtypes",
                        lambda matrices: calls.append(len(matrices)) or {"bfloat16": bfloat16, "float32": float32})
    return calls


def test_without_native_bf16_auto_generates_in_float32_and_a_named_precision_is_kept(checkpoint_dir, monkeypatch,
                                                                                      decode_cache):
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    for dtype, expected in (("auto", torch.float32), ("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        model, _ = load(checkpoint_dir, device="cpu", dtype=dtype)
        assert {param.dtype for param in model.parameters()} == {expected}
    assert not (decode_cache / device.DECODE_DTYPES_LIST).exists()  # nothing to measure: nothing remembered


@pytest.mark.parametrize(("bfloat16", "float32", "expected"), [
    (2.0e-3, 1.0e-3, torch.float32),   # float32 twice as fast (an Intel Xeon's bf16 vector products)
    (1.0e-3, 2.0e-3, torch.bfloat16),  # bf16 twice as fast (an AMD EPYC's)
    (1.05e-3, 1.0e-3, torch.bfloat16),  # float32 faster, but within FLOAT32_MARGIN: bf16, half the memory
])
def test_auto_on_a_cpu_with_native_bf16_decodes_in_the_precision_measured_faster(checkpoint_dir, monkeypatch,
                                                                                 decode_cache, bfloat16, float32,
                                                                                 expected):
    fake_measurements(monkeypatch, bfloat16, float32)
    model, _ = load(checkpoint_dir, device="cpu", dtype="auto")
    assert {param.dtype for param in model.parameters()} == {expected}
    model, _ = load(checkpoint_dir, device="cpu", dtype="bfloat16")  # a named precision is never second-guessed
    assert {param.dtype for param in model.parameters()} == {torch.bfloat16}


def test_the_faster_precision_is_measured_once_per_model_shape_and_remembered(checkpoint_dir, monkeypatch,
                                                                             decode_cache):
    calls = fake_measurements(monkeypatch, 2.0e-3, 1.0e-3)
    for _ in range(2):
        model, _ = load(checkpoint_dir, device="cpu", dtype="auto")
    assert len(calls) == 1 and {param.dtype for param in model.parameters()} == {torch.float32}
    listed = device.remembered_decode_dtypes()
    assert listed == {device.decode_key(device.weight_matrices(model)): {"bfloat16": 2.0e-3, "float32": 1.0e-3}}
    other = tiny_model("vanilla")
    assert device.pick_decode_dtype(other, torch.device("cpu")) == torch.float32
    assert len(calls) == 2  # another shape of model: measured for itself
    monkeypatch.setattr(torch, "__version__", "0.0.0")  # a new torch, maybe other kernels: measured again
    device.pick_decode_dtype(other, torch.device("cpu"))
    assert len(calls) == 3


def test_a_precision_choice_that_cannot_be_remembered_is_said_and_measured_again(checkpoint_dir, monkeypatch,
                                                                                decode_cache, capsys):
    calls = fake_measurements(monkeypatch, 2.0e-3, 1.0e-3)
    (decode_cache / device.DECODE_DTYPES_LIST).mkdir()  # a list that cannot be written (nor read)
    for _ in range(2):
        model, _ = load(checkpoint_dir, device="cpu", dtype="auto")
        assert {param.dtype for param in model.parameters()} == {torch.float32}
    assert len(calls) == 2
    assert capsys.readouterr().err.count("the next run will measure it again") == 2


def test_a_broken_list_of_precision_measurements_is_measured_anew(checkpoint_dir, monkeypatch, decode_cache):
    calls = fake_measurements(monkeypatch, 1.0e-3, 2.0e-3)
    for broken in ("{not json", "[1, 2]", '{"KEY": {"bfloat16": "fast", "float32": 1.0}}'):
        model = tiny_model("modern")
        key = device.decode_key(device.weight_matrices(model))
        (decode_cache / device.DECODE_DTYPES_LIST).write_text(broken.replace("KEY", key))
        assert device.pick_decode_dtype(model, torch.device("cpu")) == torch.bfloat16
    assert len(calls) == 3


def test_the_precision_measurement_times_both_precisions_of_the_real_weights():
    seconds = device.measure_decode_dtypes(device.weight_matrices(tiny_model("modern")), rounds=1)
    assert set(seconds) == {"bfloat16", "float32"} and all(value > 0 for value in seconds.values())


def test_load_refuses_a_checkpoint_without_a_tokenizer(tmp_path):
    save_checkpoint(make_checkpoint(tiny_model("modern"), tokenizer=None), tmp_path / "best.pt")
    with pytest.raises(ValueError, match="no tokenizer"):
        load(tmp_path, device="cpu")


def assert_one_error_line(returncode: int, stderr: str, *expected: str) -> None:
    """Exit code 2 and stderr exactly one `error:` line containing each expected text; no traceback."""
    assert returncode == 2
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: "), stderr
    for text in expected:
        assert text in stderr


@pytest.mark.parametrize("flag,value", [("--temperature", "-0.5"), ("--temperature", "nan"), ("--top-k", "0"),
                                        ("--top-k", "two"), ("--top-p", "0"), ("--top-p", "1.5"),
                                        ("--max-new-tokens", "0"), ("--num-samples", "0")])
def test_out_of_range_flags_are_one_error_line(flag, value, checkpoint_dir, capsys):
    try:
        returncode = generate.main(["--out-dir", str(checkpoint_dir), flag, value])
    except SystemExit as exit:  # argparse exits by itself on a value that is not a number
        returncode = exit.code
    assert_one_error_line(returncode, capsys.readouterr().err, flag.removeprefix("--"))


def test_compile_without_the_kv_cache_is_one_error_line(checkpoint_dir, capsys):
    returncode = generate.main(["--out-dir", str(checkpoint_dir), "--compile", "--no-kv-cache"])
    assert_one_error_line(returncode, capsys.readouterr().err, "--compile", "--no-kv-cache")


@pytest.fixture(scope="module")
def cli(checkpoint_dir, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Each command-line case run as its own `python generate.py` process.

    They are started together because each process spends seconds importing torch.
    """
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "corrupt.pt").write_bytes(b"this is not a checkpoint")
    (tmp / "prompt.txt").write_text(UNKNOWN_PROMPT + "\n", encoding="utf-8")
    out_dir = ["--out-dir", str(checkpoint_dir), "--device", "cpu", "--dtype", "float32"]
    cases = {
        "unknown characters": [*out_dir, "--prompt", UNKNOWN_PROMPT],
        "dropped characters, prompt file, two samples": [
            *out_dir, "--prompt-file", str(tmp / "prompt.txt"), "--drop-unknown", "--num-samples", "2",
            "--max-new-tokens", "30", "--seed", "7"],
        "missing checkpoint": ["--out-dir", str(tmp / "no-such-dir")],
        "corrupt checkpoint": ["--ckpt", str(tmp / "corrupt.pt")],
        "bad flag": [*out_dir, "--top-p", "2"],
        "compiled": [*out_dir, "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "3", "--compile"],
    }
    # One thread each: the processes share the machine's cores, and idle spinning threads would slow them.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    processes = {name: subprocess.Popen([sys.executable, str(ROOT / "generate.py"), *args], env=env, text=True,
                                        encoding="utf-8", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for name, args in cases.items()}
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


@pytest.mark.slow
def test_cli_refuses_unknown_prompt_characters_and_names_them(cli):
    result = cli["unknown characters"]
    assert_one_error_line(result.returncode, result.stderr, "'é'", "'€'", "--drop-unknown")
    assert result.stdout == ""


@pytest.mark.slow
def test_cli_drops_unknown_characters_when_asked_and_says_which(cli):
    result = cli["dropped characters, prompt file, two samples"]
    assert result.returncode == 0, result.stderr
    assert "dropping 2 character(s) not in the vocabulary from the prompt: 'é', '€'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_compiles_the_decode_step_when_asked_and_prints_the_eager_text(cli, checkpoint_dir):
    result = cli["compiled"]
    assert result.returncode == 0, result.stderr
    assert "[compiled the decode step in" in result.stderr and "decode step compiled" in result.stderr
    model, tokenizer = load(checkpoint_dir, device="cpu", dtype="float32")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # as the command ran (OMP_NUM_THREADS=1)
        assert compiled_before(step_key(model))  # kept in the cache, for the next run
    finally:
        torch.set_num_threads(threads)
    text = sample(model, tokenizer, "ROMEO:", 40, seed=3)
    assert result.stdout == text + ("" if text.endswith("\n") else "\n")


@pytest.mark.slow
def test_cli_reports_a_missing_checkpoint(cli):
    result = cli["missing checkpoint"]
    assert_one_error_line(result.returncode, result.stderr, "no checkpoint at", "best.pt")


@pytest.mark.slow
def test_cli_reports_a_corrupt_checkpoint(cli):
    result = cli["corrupt checkpoint"]
    assert_one_error_line(result.returncode, result.stderr, "corrupt.pt", "not a readable checkpoint")


@pytest.mark.slow
def test_cli_reports_a_bad_flag_value(cli):
    result = cli["bad flag"]
    assert_one_error_line(result.returncode, result.stderr, "top-p")


@pytest.mark.slow
def test_cli_prints_what_sample_returns_for_a_prompt_file_and_two_samples(cli, checkpoint_dir):
    result = cli["dropped characters, prompt file, two samples"]
    model, tokenizer = load(checkpoint_dir, device="cpu", dtype="float32")
    expected = ""
    for i in range(2):  # sample i of --num-samples uses seed + i
        text = sample(model, tokenizer, UNKNOWN_PROMPT + "\n", 30, seed=7 + i, drop_unknown=True)
        assert text.startswith("Romo \n")
        expected += f"--- sample {i + 1} of 2 ---\n" + text + ("" if text.endswith("\n") else "\n")
    assert result.stdout == expected


@pytest.mark.parametrize("preset", ["vanilla", "modern"])
def test_in_bfloat16_cached_logits_agree_with_uncached_to_bfloat16_precision(preset, tokenizer, corpus_text):
    # The promise in --help and docs/generation.md: identical text in float32 (the test above); in bfloat16
    # the two paths add in another order, so the logits agree to bf16 precision, and greedy text can part
    # where two tokens are nearly tied.
    model = tiny_model(preset).to(torch.bfloat16)
    prompt = torch.tensor([tokenizer.encode(corpus_text[:8])])
    steps = list(generate_tokens(model, prompt, 24, temperature=0, use_kv_cache=True))  # stays in the window
    seq = torch.cat([prompt, *(token for token, _ in steps)], dim=1)
    for t, (_, cached_logits) in enumerate(steps):
        with torch.no_grad():
            full_logits = model(seq[:, :prompt.size(1) + t])[0][:, -1, :].float()
        scale = full_logits.abs().max().item()
        # A few roundings of bf16's 8-bit mantissa (2^-8 relative) through 2 layers, at the logits' scale.
        assert (cached_logits - full_logits).abs().max().item() <= 8 * 2**-8 * scale, f"step {t}"


def test_compiling_says_so_before_the_wait_and_drops_torchs_no_cuda_runtime_line(capsys, caplog, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    said_before = []

    def warm_up() -> float:  # what compiling does on a CPU-only machine with a CUDA toolkit installed
        said_before.append(capsys.readouterr().err)
        logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found, using CUDA_HOME='%s'",
                                                               "/usr/local/cuda")
        logging.getLogger("torch.utils.cpp_extension").warning("another warning")
        return 12.5

    assert compile_for_generation(warm_up, asked=False, cached=False)
    assert said_before == ["compiling the decode step (half a minute, once: later runs load it)...\n"]
    assert [record.getMessage() for record in caplog.records] == ["another warning"]
    assert capsys.readouterr().err.endswith("another warning\n[compiled the decode step in 12.5 s]\n")
    assert compile_for_generation(lambda: 0.01, asked=False, cached=True)
    assert capsys.readouterr().err == "[loaded the compiled decode step an earlier run built in 0.0 s]\n"


def test_the_compiled_step_is_kept_in_the_cache_dir_built_again_if_damaged_and_said_where_it_cannot_be_kept(
        capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = []

    def build(step, model, batch_size, path):  # stands in for half a minute of compiling: writes the file
        built.append((path, os.environ.get("TORCHINDUCTOR_CACHE_DIR")))
        with compiling.atomic_file(path) as file:
            file.write(b"a package")

    monkeypatch.setattr(compiling, "build_package", build)

    def loader(path):  # stands in for torch's loader, which refuses a file that is not a package
        loaded = path.read_bytes()
        if loaded != b"a package":
            raise RuntimeError("not a package")
        return lambda inputs: loaded  # the step answers with the file it loaded

    def compiled(model):  # the compiled step's answer to one token
        return compiled_step(generate.decode_step, model)(model, torch.zeros((1, 1), dtype=torch.long),
                                                           model.new_kv_cache())

    monkeypatch.setattr(compiling, "load_package", loader)
    forget_loaded_steps()
    model, cache = tiny_model("modern", n_embd=16), tmp_path / "tinygpt" / "compiled"
    assert compile_for_generation(lambda: compiled(model) and 1.0, False, False)
    key = step_key(model)
    assert built == [(cache / "decode-steps" / f"{key}.pt2", str(cache))]  # torch's own cache there too
    assert compiled_before(key) and "TORCHINDUCTOR_CACHE_DIR" not in os.environ  # set while compiling only
    forget_loaded_steps()
    assert compiled(model) == b"a package" and len(built) == 1  # loaded
    (cache / "decode-steps" / f"{key}.pt2").write_bytes(b"half a package")  # damaged: compiled again, and said
    forget_loaded_steps()
    assert compiled(model) == b"a package" and len(built) == 2
    assert "cannot be loaded (not a package): compiling it again" in capsys.readouterr().err
    shutil.rmtree(cache / "decode-steps")
    (cache / "decode-steps").write_text("a file where the folder should be")  # the folder cannot be made
    forget_loaded_steps()
    assert compiled(model) == b"a package" and len(built) == 3  # compiled all the same
    assert "the next run will compile it again" in capsys.readouterr().err  # and said
    assert not compiled_before(key)
    forget_loaded_steps()


def test_the_cache_keeps_the_most_recently_used_compiled_steps(tmp_path, monkeypatch):
    """Every model shape, precision, batch and edit of the code gets its own package: building one deletes all
    but the KEPT_PACKAGES most recently used, and loading one counts as a use."""
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = tmp_path / "tinygpt" / "compiled" / "decode-steps"
    folder.mkdir(parents=True)
    older = [folder / f"older-{n}.pt2" for n in range(compiling.KEPT_PACKAGES + 2)]
    for age, package in enumerate(older):  # older-0 used last, a day apart
        package.write_bytes(b"a package")
        os.utime(package, (1e9 - age * 86400, 1e9 - age * 86400))
    (folder / "notes.txt").write_text("not a package")

    def build(step, model, batch_size, path):
        path.write_bytes(b"a package")

    monkeypatch.setattr(compiling, "build_package", build)
    monkeypatch.setattr(compiling, "load_package", lambda path: lambda inputs: None)
    forget_loaded_steps()
    model = tiny_model("modern", n_embd=16)
    compiling.compiled_step(generate.decode_step, model)  # built: the oldest three are deleted
    newest = package_path(step_key(model))
    kept = set(folder.glob("*.pt2"))
    assert kept == {newest, *older[:compiling.KEPT_PACKAGES - 1]} and (folder / "notes.txt").exists()
    os.utime(newest, (1e8, 1e8))  # as if last used long ago
    forget_loaded_steps()
    compiling.compiled_step(generate.decode_step, model)  # loaded: now the most recently used
    assert newest.stat().st_mtime > older[0].stat().st_mtime
    forget_loaded_steps()


@pytest.mark.slow  # compiling takes seconds
def test_after_one_run_with_compile_later_runs_load_the_compiled_step_by_default(checkpoint_dir, tmp_path,
                                                                                 monkeypatch, capsys):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # a machine that never compiled
    forget_loaded_steps()
    command = ["--out-dir", str(checkpoint_dir), "--device", "cpu", "--dtype", "float32", "--seed", "1",
               "--max-new-tokens", str(COMPILE_PAYS_OFF_AFTER_CACHED)]
    assert generate.main(command) == 0
    first = capsys.readouterr()
    assert "decode step eager (run once with --compile" in first.err
    assert generate.main([*command, "--compile"]) == 0
    assert "[compiled the decode step in" in capsys.readouterr().err
    forget_loaded_steps()  # the next run is a new process: it finds the step on disk
    assert generate.main(command) == 0
    later = capsys.readouterr()
    assert "[loaded the compiled decode step an earlier run built in" in later.err
    assert "decode step compiled" in later.err and later.out == first.out  # float32: the eager text
    forget_loaded_steps()


def test_compiling_pays_off_for_fewer_tokens_once_an_earlier_run_compiled_the_step():
    assert COMPILE_PAYS_OFF_AFTER_CACHED <= COMPILE_PAYS_OFF_AFTER
    for cached, threshold in ((False, COMPILE_PAYS_OFF_AFTER), (True, COMPILE_PAYS_OFF_AFTER_CACHED)):
        assert not compile_pays_off(None, True, threshold - 1, cached)
        assert compile_pays_off(None, True, threshold, cached)
        assert not compile_pays_off(None, False, threshold, cached)  # it compiles the step through the cache
        assert compile_pays_off(True, True, 1, cached) and not compile_pays_off(False, True, 10**9, cached)


def test_a_compiled_step_is_named_by_what_it_is_compiled_for():
    key = step_key(tiny_model("modern"))
    assert step_key(tiny_model("modern", seed=1)) == key  # other weights, the same graph
    assert step_key(tiny_model("modern").to(torch.bfloat16)) != key
    assert step_key(tiny_model("vanilla")) != key
    assert step_key(tiny_model("modern"), batch_size=2) != key
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # the generated CPU code is made for a number of threads
        assert step_key(tiny_model("modern")) != key
    finally:
        torch.set_num_threads(threads)


def test_generate_help_wraps_as_wide_as_train_help(capsys):
    with pytest.raises(SystemExit):
        generate.main(["--help"])
    generate_lines = capsys.readouterr().out.splitlines()
    with pytest.raises(SystemExit):
        train.main(["--help"])
    train_width = max(map(len, capsys.readouterr().out.splitlines()))
    assert max(map(len, generate_lines)) > 90 and max(map(len, generate_lines)) <= train_width
