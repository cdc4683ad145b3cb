"""Where the benchmarks' public data is read from, and the error that says where to get a missing file.

Nothing of the benchmarks is copied into this repository: the data is read by path, from ``--data`` (or
``data=``), else the environment variable ``INTERP_BENCHMARKS``, else ``../shared/benchmarks`` beside the checkout.

Example:
    >>> root = data_root(tmp)
    >>> require(root, "mib-ioi", "IOI_task/names.json")
    Traceback (most recent call last):
    interp.errors.BenchmarkDataError: mib-ioi needs '.../IOI_task/names.json', which is missing; get it from ...
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from interp.errors import BenchmarkDataError, BenchmarkOptionError

ENV = "INTERP_BENCHMARKS"
DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "benchmarks"  # ../shared/benchmarks beside the checkout

# benchmark -> (folder under the data root, public repository @ commit, folder in that repository)
SOURCES = {
    "ravel": ("ravel", "explanare/ravel (commit e421fc9)", ""),
    "mib-mcqa": ("mib_variable_track", "aaronmueller/MIB (commit cc2a160)", "MIB-causal-variable-track/tasks/"),
    "mib-ioi": ("mib_variable_track", "aaronmueller/MIB (commit cc2a160)", "MIB-causal-variable-track/tasks/"),
    "mib-ravel": ("mib_variable_track", "aaronmueller/MIB (commit cc2a160)", "MIB-causal-variable-track/tasks/"),
    "axbench-concept10": ("axbench_concept10", "stanfordnlp/axbench (commit e9b8cd4)", "axbench/concept10/"),
}


def data_root(data=None) -> Path:
    """The folder that holds the benchmarks' data: ``data``, else ``$INTERP_BENCHMARKS``, else the default.

    Example:
        >>> data_root("/data/benchmarks")
        PosixPath('/data/benchmarks')
    """
    given = data if data is not None else os.environ.get(ENV)
    root = Path(given).expanduser() if given else DEFAULT
    if root.exists() and not root.is_dir():
        raise BenchmarkDataError(f"the benchmark data folder {str(root)!r} is a file; give the folder that holds them")
    return root


def require(root: Path, benchmark: str, relative: str, *, upstream: str | None = None) -> Path:
    """``root / <benchmark's folder> / relative``, or a :class:`BenchmarkDataError` saying where to get it
    (``upstream``: the file's path in the public repository, when it is not the benchmark's folder + ``relative``)."""
    if benchmark not in SOURCES:
        raise BenchmarkDataError(f"unknown benchmark {benchmark!r}; known: {', '.join(SOURCES)}")
    folder, repo, prefix = SOURCES[benchmark]
    path = Path(root) / folder / relative
    if not path.is_file():
        where = upstream or f"{prefix}{relative}"
        raise BenchmarkDataError(
            f"{benchmark} needs {str(path)!r}, which is missing; get it from {repo}, path {where}, and put it "
            f"there (or pass --data / set {ENV} to the folder that holds {folder}/)"
        )
    return path


def check_options(name: str, *, layers, methods, known: Sequence[str], n_layers: int | None) -> None:
    """Refuse unknown methods or bad layers before any work (BenchmarkOptionError names the value)."""
    if methods is not None:
        if isinstance(methods, str) or not all(isinstance(m, str) for m in methods) or not list(methods):
            raise BenchmarkOptionError(f"{name}: methods must be a non-empty list of names from {list(known)}; "
                                       f"got {methods!r}")  # fmt: skip
        bad = [m for m in methods if m not in known]
        if bad:
            raise BenchmarkOptionError(f"{name}: unknown methods {bad}; known: {list(known)}")
    if layers is not None:
        if isinstance(layers, (str, int)) or not list(layers):
            raise BenchmarkOptionError(f"{name}: layers must be a non-empty list of layer indices; got {layers!r}")
        top = n_layers if n_layers is not None else None
        bad = [x for x in layers if isinstance(x, bool) or not isinstance(x, int) or x < 0
               or (top is not None and x >= top)]  # fmt: skip
        if bad:
            span = f"[0, {top})" if top is not None else "non-negative"
            raise BenchmarkOptionError(f"{name}: layers {bad} are out of range; give integers in {span}")



__all__ = ["DEFAULT", "ENV", "SOURCES", "check_options", "data_root", "require"]
