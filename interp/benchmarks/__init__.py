"""The field's benchmarks, one runner each: ``interp bench <name> --json`` or :func:`run` from Python.

Example:
    >>> sorted(RUNNERS)
    ['axbench-concept10', 'mib-ioi', 'mib-mcqa', 'ravel']
    >>> run("nope")
    Traceback (most recent call last):
    interp.errors.UnknownTaskError: unknown benchmark 'nope'; known: axbench-concept10, mib-ioi, mib-mcqa, ravel

Each runner is a module of this package with ``run(lm=None, *, data=None, quick=False, layers=None, seed=0,
progress=True, methods=None) -> dict`` (a JSON-able result: ``table``, a list of rows; ``sizes``; ``published``;
``seconds``), raising :class:`interp.errors.BenchmarkDataError` for missing data before loading anything heavy.
Data is read by path (:mod:`interp.benchmarks.data`); ``quick=True`` is the small version the test suite runs.
"""

from __future__ import annotations

import importlib

from interp.errors import UnknownTaskError

RUNNERS = {  # benchmark name -> module of this package
    "ravel": "ravel",
    "mib-mcqa": "mib_mcqa",
    "mib-ioi": "mib_ioi",
    "axbench-concept10": "axbench",
}


def runner(name: str):
    """The module that runs benchmark ``name``."""
    if name not in RUNNERS:
        raise UnknownTaskError(f"unknown benchmark {name!r}; known: {', '.join(sorted(RUNNERS))}")
    return importlib.import_module(f"interp.benchmarks.{RUNNERS[name]}")


def run(name: str, lm=None, **options) -> dict:
    """Run benchmark ``name`` (on ``lm``, default the embedded Gemma-3-270M) and return its result dict."""
    return runner(name).run(lm, **options)


__all__ = ["RUNNERS", "run", "runner"]
