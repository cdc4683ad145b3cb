"""Names that moved: they keep resolving for one release, with a DeprecationWarning that says where they live now.

Example:
    >>> import warnings
    >>> getattr_ = moved_names("interp", {"rows": "interp.batches"})
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     getattr_("rows").__name__, w[0].category.__name__
    ('rows', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable


def moved_names(package: str, moved: dict[str, str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``package``: each name of ``moved`` (name -> its home module) resolves
    with a DeprecationWarning naming its home; any other name is an AttributeError."""

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        home = moved[name]
        warnings.warn(
            f"{package}.{name} is not a public name of {package} any more and goes in the next release; "
            f"import it from its module: `from {home} import {name}`",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)

    return __getattr__
