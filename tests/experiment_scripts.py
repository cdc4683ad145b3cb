"""The scripts of ``experiments/`` as modules, for the tests: :func:`script` loads one by its path.

Example:
    >>> script("memorise").prefix_match([1, 2], [1, 3])
    1
"""

from __future__ import annotations

import doctest
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


def script(name: str) -> ModuleType:
    """``experiments/<name>.py`` as the module ``experiments.<name>`` (loaded once; ``reft.memorise`` shares it)."""
    module = f"experiments.{name}"
    if module not in sys.modules:
        spec = importlib.util.spec_from_file_location(module, EXPERIMENTS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[module] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[module]
            raise
    return sys.modules[module]


def run_help(name: str) -> str:
    """``python experiments/<name>.py --help`` run from the repository's root, as a reader would: its stdout."""
    r = subprocess.run(
        [sys.executable, f"experiments/{name}.py", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def run_doctests(name: str, **globs) -> doctest.TestResults:
    """The docstring examples of ``experiments/<name>.py`` with ``globs`` (e.g. a tiny ``lm``); every one must pass."""
    mod = script(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(exclude_empty=True).find(mod, mod.__name__, globs={**vars(mod), **globs}):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0 and results.attempted > 0, results
    return results
