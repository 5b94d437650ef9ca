"""The learning path keeps its promises: every measured block in docs/learn/ is what the report writes from
the committed results (so nothing in it was typed), no chapter cites a figure outside those blocks that the
results do not hold, every link to the code points at the lines that define what it names, every test a
chapter names exists, and the chapters are linked in order."""

import ast
import re
import shutil
from pathlib import Path

import pytest

from experiments import common, report

LEARN = common.ROOT / "docs" / "learn"
CHAPTERS = sorted(LEARN.glob("[0-9][0-9]-*.md"))
PAGES = [LEARN / "README.md", *CHAPTERS]
MEASURED_BLOCK = re.compile(r"<!-- measured:([\w-]+):start -->\n(.*?)<!-- measured:\1:end -->", re.S)
FIGURE = re.compile(r"(?<![\w.])\d+\.\d+|(?<![\w.,])\d{1,3}(?:,\d{3})+")  # 1.2345, 0.01, 812,288


def prose(text: str) -> str:
    """A page without its measured blocks, code blocks (fenced or indented) and inline code."""
    text = MEASURED_BLOCK.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    return re.sub(r"`[^`]*`", "", text)


def test_measured_blocks_are_what_the_report_writes_from_the_results(tmp_path):
    copy = tmp_path / "learn"
    shutil.copytree(LEARN, copy)
    report.build_report(common.RESULTS_DIR, tmp_path)  # fills tmp_path/learn from the committed results
    for page in PAGES:
        assert (copy / page.name).read_text() == page.read_text(), \
            f"{page.name} is not what python -m experiments.report writes: run it"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_measured_block_is_filled(page):
    for name, body in MEASURED_BLOCK.findall(page.read_text()):
        assert "Not measured yet" not in body, f"{page.name}: block {name} has no results"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_chapter_cites_a_figure_that_is_not_in_the_results(page):
    measured = "\n".join(body for page in PAGES for _, body in MEASURED_BLOCK.findall(page.read_text()))
    for figure in FIGURE.findall(prose(page.read_text())):
        assert figure in measured, f"{page.name} cites {figure}, which no measured block holds"


def test_the_figure_check_sees_a_typed_figure():
    text = ("The loss fell to 1.7151 (see `1.9999`).\n\n    4.2 in a formula\n"
            "<!-- measured:x:start -->\n3.3\n<!-- measured:x:end -->")
    assert FIGURE.findall(prose(text)) == ["1.7151"]


CODE_LINK = re.compile(r"\[`([\w.]+)`\]\(((?:\.\./)+)([\w/]+\.py)#L(\d+)-L(\d+)\)")


@pytest.mark.parametrize("page", [*PAGES, common.ROOT / "lessons" / "README.md"], ids=lambda page: page.name)
def test_code_links_point_at_the_lines_that_define_what_they_name(page):
    for name, up, file, first, last in CODE_LINK.findall(page.read_text()):
        lines = (page.parent / up / file).resolve().read_text().splitlines()
        first, last = int(first), int(last)
        short = name.split(".")[-1]
        definition = re.compile(rf"^\s*(?:(?:async )?def |class ){short}\b|^\s*{short}\s*[:=]")
        assert definition.match(lines[first - 1]), f"{page.name}: {name} is not defined at {file} line {first}"
        assert first <= last <= len(lines)
        body = lines[first:last]
        next_line = lines[last] if last < len(lines) else ""
        indent = len(lines[first - 1]) - len(lines[first - 1].lstrip())
        assert all(not line.strip() or len(line) - len(line.lstrip()) > indent or line.strip()[0] in ")]}"
                   for line in body), f"{page.name}: {file} lines {first}-{last} run past {name}"
        assert not next_line.strip() or len(next_line) - len(next_line.lstrip()) <= indent, \
            f"{page.name}: {file} lines {first}-{last} stop before the end of {name}"


NAMED_TEST = re.compile(r"(tests/test_\w+\.py)::(test_\w+)")


@pytest.mark.parametrize("page", [*PAGES, common.ROOT / "lessons" / "README.md"], ids=lambda page: page.name)
def test_every_test_a_chapter_names_exists(page):
    for file, name in NAMED_TEST.findall(page.read_text()):
        tree = ast.parse((common.ROOT / file).read_text())
        assert name in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, \
            f"{page.name} names {file}::{name}, which does not exist"


def test_the_chapters_are_listed_and_linked_in_order():
    index = (LEARN / "README.md").read_text()
    listed = re.findall(r"\]\((\d\d-[\w-]+\.md)\)", index)
    assert listed == [chapter.name for chapter in CHAPTERS]
    for chapter, following in zip(CHAPTERS, CHAPTERS[1:], strict=False):
        assert f"]({following.name})" in chapter.read_text().split("Next:")[-1], f"{chapter.name} does not lead on"


def test_relative_links_lead_to_files():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).resolve().exists(), f"{page.name} links to {target}, which is missing"
    assert Path(common.ROOT / "README.md").read_text().count("docs/learn/README.md") >= 1


def run_it_commands(page: Path) -> list[str]:
    """The commands of a chapter's "Run it." paragraph: the code block that follows it."""
    match = re.search(r"\*\*Run it\.\*\*.*?```\n(.*?)```", page.read_text(), re.S)
    return [] if match is None else [line for line in match.group(1).splitlines() if line.strip()]


def test_each_chapter_runs_its_own_rung_and_no_two_chapters_give_the_same_command():
    commands = {page.name: run_it_commands(page) for page in CHAPTERS if run_it_commands(page)}
    assert "01-counting.md" in commands and "02-bigram.md" in commands
    seen: dict[str, str] = {}
    for name, lines in commands.items():
        for line in lines:
            assert line not in seen, f"{name} gives the same command as {seen.get(line)}: {line}"
            seen[line] = name
    assert commands["01-counting.md"] == ["uv run python -m experiments.ladder --count-only"]


def test_the_paths_first_command_is_not_the_whole_ladder():
    first = re.search(r"```\n(.*?)\n", (LEARN / "README.md").read_text()).group(1)
    assert "--count-only" in first, first


def test_every_rung_block_says_how_long_training_the_rung_alone_took():
    for page in CHAPTERS:
        text = page.read_text()
        if "The command that trained it" in text or "To train this rung alone" in text:
            assert re.search(r"To train this rung alone, .*took \d+ s here", text), page.name
