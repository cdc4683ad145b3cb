"""The README's and docs pages' Python blocks run as written (in a fresh interpreter, on the real model), and every
file they link to exists."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks():
    return [(p, b) for p in PAGES for b in re.findall(r"```python\n(.*?)```", p.read_text(), flags=re.S)]


def test_readme_has_a_quickstart():
    assert re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S), "README.md has no ```python block"


BLOCK_IDS = [f"{p.name}-{i}" for i, (p, _) in enumerate(python_blocks())]


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(BLOCK_IDS)), ids=BLOCK_IDS)
def test_readme_block_runs(i, tmp_path):
    script = tmp_path / f"block_{i}.py"  # nnsight reads trace bodies from a file, not stdin
    script.write_text(python_blocks()[i][1])
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    print(r.stdout)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_linked_files_exist(page):
    """Every file a page links to is committed, so a reader sees it without running anything."""
    links = [u for u in re.findall(r"\]\(([^)#]+)\)", page.read_text()) if "://" not in u]
    missing = [u for u in links if not (page.parent / u).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_readme_links_every_docs_page():
    text = README.read_text()
    unlinked = [p.name for p in PAGES[1:] if f"docs/{p.name}" not in text]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"
