"""The notebook never rots: its .ipynb is the same notebook as the reviewable .py beside it, it is committed
without outputs, and it runs from top to bottom, headless, at toy size (train, plot, generate, the ladder)."""

import json
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "learn_tinygpt.ipynb"
SCRIPT = NOTEBOOK.with_suffix(".py")


def test_ipynb_is_the_py_script_and_has_no_outputs():
    from_script = jupytext.read(SCRIPT)
    committed = nbformat.read(NOTEBOOK, as_version=4)
    assert [(cell.cell_type, cell.source) for cell in committed.cells] == \
        [(cell.cell_type, cell.source) for cell in from_script.cells], \
        "the .ipynb differs from the .py: run jupytext --sync notebooks/learn_tinygpt.py"
    assert all(not cell.get("outputs") for cell in committed.cells)


@pytest.mark.slow  # a kernel process, which trains and runs the ladder's train.py processes
def test_notebook_runs_headless_at_toy_size(tmp_path, corpus_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_NOTEBOOK_TOY", "1")
    monkeypatch.setenv("TINYGPT_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("TINYGPT_DATA", str(corpus_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))
    assert "ROMEO:" in printed and "best val loss" in printed
    result = json.loads((tmp_path / "results" / "ladder_partial.json").read_text())
    assert [rung["name"] for rung in result["rungs"]] == ["bigram", "one-head"]
    assert (tmp_path / "docs" / "plots" / "ladder_partial.png").exists()
