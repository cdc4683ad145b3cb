"""Every notebook executes top to bottom on the real model (assertions live in its cells), and its stored
.ipynb is the paired jupytext script without outputs."""

from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))


def test_there_are_notebooks():
    assert SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_ipynb_is_paired_and_stored_without_outputs(script):
    ipynb = script.with_suffix(".ipynb")
    assert ipynb.exists(), f"missing {ipynb.name}: run `jupytext --sync {script.relative_to(ROOT)}`"
    stored, paired = jupytext.read(ipynb), jupytext.read(script)
    assert [c.source for c in stored.cells] == [c.source for c in paired.cells], f"{ipynb.name} is out of sync"
    assert not any(c.get("outputs") for c in stored.cells if c.cell_type == "code"), f"{ipynb.name} has outputs"


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_notebook_executes(script):
    from nbclient import NotebookClient

    nb = jupytext.read(script)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
