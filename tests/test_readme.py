"""The README's Python blocks run as written (in a fresh interpreter, on the real model)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_quickstart():
    assert python_blocks(), "README.md has no ```python block"


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(python_blocks())))
def test_readme_block_runs(i, tmp_path):
    script = tmp_path / f"readme_block_{i}.py"  # nnsight reads trace bodies from a file, not stdin
    script.write_text(python_blocks()[i])
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    print(r.stdout)


def test_linked_results_exist():
    """Every figure or JSON the README links to is committed, so a reader sees it without running anything."""
    links = re.findall(r"\]\(((?:results|notebooks)/[^)]+)\)", README.read_text())
    assert links, "README links no results"
    missing = [p for p in links if not (README.parent / p).exists()]
    assert not missing, f"README links to missing files: {missing}"
