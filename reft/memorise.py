"""Moved: the memorisation experiment is the script ``experiments/memorise.py`` of the source repository.

It reproduces a result (ReFT paper, appendix F) rather than offering a capability, so it left the package. For one
release ``import reft.memorise`` still works in a source checkout, with a DeprecationWarning: its names are the
script's (loaded from the ``experiments/`` folder beside the package). Run the experiment as
``python experiments/memorise.py --help`` from the repository's root.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "memorise.py"
NAME = "experiments.memorise"  # the script's module name, as `import experiments.memorise` from the root gives

warnings.warn(
    "reft.memorise moved out of the package to the script experiments/memorise.py (run it from the repository's "
    "root, or import its functions from there); this alias goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
if NAME in sys.modules:
    _script = sys.modules[NAME]
elif SCRIPT.is_file():
    _spec = importlib.util.spec_from_file_location(NAME, SCRIPT)
    _script = importlib.util.module_from_spec(_spec)
    sys.modules[NAME] = _script
    try:
        _spec.loader.exec_module(_script)
    except BaseException:
        del sys.modules[NAME]
        raise
else:
    raise ImportError(
        "reft.memorise moved out of the package: the memorisation experiment is the script experiments/memorise.py "
        f"of the source repository (no {SCRIPT} here); clone the repository and run "
        "`python experiments/memorise.py --help` from its root"
    )

__all__ = list(_script.__all__)
globals().update({name: getattr(_script, name) for name in __all__})


def __getattr__(name: str):
    """The script's other names (``greedy_prefix``, ``MAX_LENGTH``, ...)."""
    if not name.startswith("__") and hasattr(_script, name):
        return getattr(_script, name)
    raise AttributeError(f"module 'reft.memorise' has no attribute {name!r}")
