"""The project writes every command one way, the way the README teaches it: `uv run train.py ...`,
`uv run python -m lessons.float16`. The pip route (`python train.py`) is named once, in docs/setup.md's
sections for a machine without uv. The docs, the lessons, the notebook and every string in the code (its
messages, its docstrings) are held to it; generated results sections are written that way by
experiments/report.py (as_taught), whatever the results files recorded.
"""

import ast
import re
from pathlib import Path

from experiments.report import BARE_PYTHON_COMMAND, as_taught

ROOT = Path(__file__).resolve().parents[1]
# The sections of docs/setup.md that are about running without uv, where `python train.py` is the point.
PIP_SECTIONS = ("## Without uv", "## On Colab")
# `uv run python train.py` works too, but it is not how the README writes it.
UV_RUN_PYTHON_SCRIPT = re.compile(r"uv run python [\w/]*\w\.py\b")


def text_files() -> list[Path]:
    pages = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("lessons/*.md"), ROOT / "experiments" /
             "README.md"]
    return pages


def python_files() -> list[Path]:
    files = [*ROOT.glob("*.py"), *ROOT.glob("machinery/*.py"), *ROOT.glob("lessons/*.py"),
             *ROOT.glob("experiments/*.py"), ROOT / "notebooks" / "learn_tinygpt.py"]
    return files


def without_pip_sections(text: str) -> str:
    sections = re.split(r"(?m)^(?=## )", text)
    return "".join(section for section in sections if not section.startswith(PIP_SECTIONS))


def string_constants(path: Path) -> list[str]:
    """Every string in a Python file (docstrings and messages; each piece of an f-string), and its comments."""
    source = path.read_text()
    strings = [node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return [*strings, *re.findall(r"#.*", source)]


def bare_commands(text: str) -> list[str]:
    matches = [*BARE_PYTHON_COMMAND.finditer(text), *UV_RUN_PYTHON_SCRIPT.finditer(text)]
    return [text[max(0, match.start() - 20):match.end() + 20].replace("\n", " ") for match in matches]


def test_as_taught_writes_recorded_commands_with_uv_run():
    assert as_taught("Made by `python -m experiments.ladder`") == "Made by `uv run python -m experiments.ladder`"
    assert as_taught("python train.py --preset vanilla") == "uv run train.py --preset vanilla"
    assert as_taught("uv run train.py; uv run python -m lessons.float16") == \
        "uv run train.py; uv run python -m lessons.float16"
    assert as_taught("!python train.py in a notebook; python's own sys module") == \
        "!python train.py in a notebook; python's own sys module"


def test_docs_lessons_and_messages_write_every_command_with_uv_run():
    found = {}
    for page in text_files():
        text = page.read_text()
        if page.name == "setup.md":
            text = without_pip_sections(text)
        found.update({f"{page.relative_to(ROOT)}: {hit}": None for hit in bare_commands(text)})
    for path in python_files():
        for string in string_constants(path):
            found.update({f"{path.relative_to(ROOT)}: {hit}": None for hit in bare_commands(string)})
    assert not found, "written as `python ...`, not as the README teaches (uv run):\n" + "\n".join(found)


def test_the_pip_route_is_named_in_setup_md():
    assert "python train.py" in (ROOT / "docs" / "setup.md").read_text().split("## Without uv", 1)[1]
