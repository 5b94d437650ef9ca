"""The README's commands work when followed literally on a fresh copy of the repository, in order.

How the test runs them (so that it finishes in minutes on two CPU cores, with no GPU and no download):

- The copy: the tracked files, as they are in this working tree, are copied to a temporary folder, which
  is made a git repository with one commit. Tiny Shakespeare is copied to data/ there, as the offline
  note in docs/setup.md says.
- The commands: every line of every ```sh block and every ```python block, in the README's order, run in
  the copy; then those of the doc sections the README sends its reader on to (CONTINUED_IN), in that
  order. `uv run X.py ARGS` runs as `python X.py ARGS` with this test's interpreter and `uv run NAME ARGS`
  as the NAME script beside it: `uv run` only syncs .venv before running, and the environment running
  this test is synced already. Other shell lines (`cat ... > ...`) run in bash as written. A ```python
  block runs as `python -c BLOCK` in the copy.
- Toy size: TOY_FLAGS are appended to each script's command; argparse keeps the last value of a flag, so
  they win over the README's own. `uv run pytest` only collects the suite (running it would run this test
  again). Nothing is appended to a `--help`.
- Skipped: lines that need GPUs (`torchrun`); CI has none.

Each command must exit 0, and at the end `git status` in the copy must show nothing: every file a command
writes (checkpoints, the export, benchmark results, data) lands where git ignores it.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import common, report

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BIN = Path(sys.executable).parent  # where the environment's scripts (pytest, torchrun) are
TOY_TRAINING = ["--max-iters", "4", "--eval-interval", "2", "--eval-windows", "2", "--batch-size", "4",
                "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--sample-tokens", "20"]
TOY_FLAGS = {
    "train.py": TOY_TRAINING,
    "generate.py": ["--max-new-tokens", "20"],
    "bench.py train": ["--preset", "small", "--steps", "1", "--warmup-steps", "1", "--batch-size", "2",
                       "--block-size", "32"],
    "bench.py generate": ["--preset", "small", "--new-tokens", "4", "--warmup-tokens", "1", "--repeats", "1"],
    "pytest": ["--collect-only", "-q"],
}
NEEDS_A_GPU = ("torchrun",)
# Sections of the docs that the README links to for the rest of its walk-through: (page, heading).
CONTINUED_IN = [("docs/export.md", "Use it in transformers"), ("docs/training.md", "Several GPUs")]


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def shell_commands(body: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, blank and comment-only lines dropped."""
    lines = body.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def section(text: str, heading: str) -> str:
    """The text under a markdown heading (any level), up to the next heading; fenced blocks stay whole,
    so a `# comment` line in one does not end the section."""
    lines, inside, in_fence = [], False, False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            in_fence = not in_fence
        is_heading = not in_fence and re.match(r"#+ ", line)
        if is_heading and inside:
            break
        if inside:
            lines.append(line)
        inside = inside or bool(is_heading and line.strip().lstrip("#").strip() == heading)
    assert inside, f"no heading {heading!r}"
    return "".join(lines)


def guide_texts() -> list[str]:
    """The README, then each section it continues in, in order."""
    continued = [section((REPO / page).read_text(), heading) for page, heading in CONTINUED_IN]
    return [README.read_text(), *continued]


def readme_commands() -> list[tuple[str, str]]:
    """("sh", command) or ("python", code) for everything the README, and the doc sections it continues
    in, ask a reader to run, in order."""
    commands = []
    for language, body in (block for text in guide_texts() for block in readme_blocks(text)):
        if language == "sh":
            commands += [("sh", command) for command in shell_commands(body)]
        elif language == "python":
            commands.append(("python", body))
    return commands


def toy_argv(command: str) -> list[str] | None:
    """The argv that runs a `uv run ...` command at toy size here (see the module docstring); None for a
    line to run in bash as written."""
    words = shlex.split(command, comments=True)
    if words[:2] != ["uv", "run"]:
        return None
    program, args = words[2], words[3:]
    argv = [sys.executable, program, *args] if program.endswith(".py") else [str(BIN / program), *args]
    key = f"{program} {args[0]}" if args and f"{program} {args[0]}" in TOY_FLAGS else program
    return argv if "--help" in args else argv + TOY_FLAGS.get(key, [])


def fresh_copy(destination: Path, corpus: Path) -> Path:
    """The tracked files of this working tree in a new git repository, with the corpus in data/."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    (destination / "data").mkdir(exist_ok=True)
    shutil.copy(corpus, destination / "data" / "tinyshakespeare.txt")
    git = ["git", "-c", "user.name=readme", "-c", "user.email=readme@example.com"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fresh copy"]):
        subprocess.run([*git, *step], cwd=destination, check=True, capture_output=True)
    return destination


def test_readme_commands_run_with_uv_run():
    """Copied as written, a `python ...` line fails outside the environment uv made (no torch there)."""
    programs = {shlex.split(command)[0] for language, command in readme_commands() if language == "sh"}
    assert programs <= {"uv", "cat"}, programs


@pytest.mark.slow
def test_readme_commands_work_in_order_on_a_fresh_copy(tmp_path, corpus_path):
    copy = fresh_copy(tmp_path / "tinygpt", corpus_path)
    env = {name: value for name, value in os.environ.items() if name not in ("TINYGPT_DATA", "PYTHONPATH")}
    env["HF_HUB_OFFLINE"] = "1"  # the transformers example loads a local folder: nothing to download
    env["OMP_NUM_THREADS"] = "1"  # toy models gain nothing from a second thread (see conftest.one_cpu_thread)
    ran, skipped = [], []
    for language, command in readme_commands():
        if language == "python":
            argv = [sys.executable, "-c", command]
        elif any(word in NEEDS_A_GPU for word in shlex.split(command, comments=True)):
            skipped.append(command)
            continue
        else:
            argv = toy_argv(command) or ["bash", "-c", command]
        done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        ran.append(command)
    assert skipped and all("torchrun" in command for command in skipped)
    assert len(ran) >= 10, ran  # the Quick start, the Using it list, the transformers example
    status = subprocess.run(["git", "status", "--porcelain"], cwd=copy, capture_output=True, text=True, check=True)
    assert status.stdout == "", f"the README's commands left files git would commit:\n{status.stdout}"


@pytest.mark.parametrize("page, heading", CONTINUED_IN)
def test_the_readme_links_to_each_section_it_continues_in(page, heading):
    anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")  # GitHub's anchor for a heading
    assert f"]({page}#{anchor})" in README.read_text(), f"the README does not link to {page}#{anchor}"
    assert readme_blocks(section((REPO / page).read_text(), heading)), f"{page}: {heading!r} has no commands"


def test_a_section_ends_at_the_next_heading_but_not_at_a_comment_in_a_block():
    text = "# Page\n## Wanted\ntext\n```sh\n# a comment\nuv run x.py\n```\n### Next\nmore\n"
    assert section(text, "Wanted") == "text\n```sh\n# a comment\nuv run x.py\n```\n"


@pytest.mark.parametrize("command, expected", [
    ("uv run train.py --resume  # continue", [sys.executable, "train.py", "--resume", *TOY_TRAINING]),
    ("uv run bench.py generate", [sys.executable, "bench.py", "generate", *TOY_FLAGS["bench.py generate"]]),
    ("uv run train.py --help", [sys.executable, "train.py", "--help"]),
    ("uv run pytest", [str(BIN / "pytest"), "--collect-only", "-q"]),
    ("cat docs/*.md > data/docs.txt", None),
])
def test_commands_are_translated_as_the_docstring_says(command, expected):
    assert toy_argv(command) == expected


def test_quick_start_figures_are_the_ones_the_results_files_give(tmp_path):
    """Download size, model size and the val loss to expect come from experiments/results, never typed:
    rebuilding the block from the results files changes nothing."""
    lines = report.quickstart_lines(report.load_results(common.RESULTS_DIR))
    assert any("downloads" in line for line in lines) and any("best val loss" in line for line in lines)
    rebuilt = shutil.copy(README, tmp_path / "README.md")
    report.fill_marked_block(Path(rebuilt), "quickstart", lines, "docs/")
    assert Path(rebuilt).read_text() == README.read_text()


def budget_study(name: str, cells: list[tuple[float, str, float, float]]) -> dict:
    """A budget results file with one run per (budget_s, recipe, best val, tokens/s)."""
    runs = [{"budget_s": seconds, "recipe": recipe, "seed": 1337, "params": 2_669_184, "tokens_per_sec": speed,
             "best_val_loss_whole_split": loss, "device": "CPU (two cores)"} for seconds, recipe, loss, speed in cells]
    return {"name": name, "kind": "budget", "runs": runs}


def test_the_budget_line_adds_another_machines_study_with_how_fast_it_trains_the_same_recipe():
    study = budget_study("budget_cpu", [(180.0, "cpu", 1.50, 30_000.0), (600.0, "cpu-10m", 1.45, 15_000.0)])
    slower = budget_study("budget_cpu_slower", [(600.0, "cpu-10m", 1.48, 9_000.0)])
    _, line = report.budget_quickstart([slower, study])  # the study comes first whatever the order
    assert line.index("3 min: 1.50 (cpu, 2.7M parameters, 30,000 tokens/s") < line.index("`budget_cpu`")
    assert "On another machine, which trains the same recipe 0.60x as fast (`budget_cpu_slower`): 10 min: 1.48" in line
    assert report.speed_ratio(budget_study("budget_cpu_x", [(60.0, "cpu", 1.7, 1.0)]), study) is None  # no shared cell
    assert report.budget_quickstart([slower]) == []  # another machine's study alone is not the study
