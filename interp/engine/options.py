"""Engine options: which backend runs a plan and whether it runs as the unoptimised reference, set once per block.

Example:
    >>> from interp.engine import options, current
    >>> current().backend
    'nnsight'
    >>> with options(backend="hooks"):                    # every verb inside runs its plans on module hooks
    ...     current().backend, run(lm, base).logits.shape
    ('hooks', torch.Size([4, 97]))
    >>> current().backend                                 # restored on leaving the block
    'nnsight'

The verbs (``interchange``, ``intervene``, ``run``, ``collect``, ``cache``, ``logit_lens``, ``attribution_patching``)
no longer take ``backend=`` / ``full=``: :func:`interp.engine.execute` reads them from here. The options live in a
context variable, so a thread or task sees its own block; :func:`configure` sets the process-wide defaults that
apply outside any block. ``full=True`` is the reference a plain implementation pays (nothing stops early, logits
at every position): tests and benches compare against it.
"""

from __future__ import annotations

import contextlib
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, replace

from ..errors import ConfigError

BACKENDS = ("nnsight", "hooks")


@dataclass(frozen=True)
class Options:
    """The engine's options: ``backend`` (``"nnsight"`` or ``"hooks"``) and ``full`` (the unoptimised reference)."""

    backend: str = "nnsight"
    full: bool = False

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"engine backend must be one of {BACKENDS}; got {self.backend!r}")
        if not isinstance(self.full, bool):
            raise ConfigError(f"engine option full must be True or False; got {self.full!r}")


_defaults = [Options()]
_current: ContextVar[Options | None] = ContextVar("interp_engine_options", default=None)


def current() -> Options:
    """The options in force here: the innermost :func:`options` block, else the :func:`configure` defaults."""
    return _current.get() or _defaults[0]


def _merged(base: Options, backend: str | None, full: bool | None) -> Options:
    changes = {k: v for k, v in (("backend", backend), ("full", full)) if v is not None}
    return replace(base, **changes)


@contextlib.contextmanager
def options(*, backend: str | None = None, full: bool | None = None):
    """Within the block, the engine runs plans with these options (None keeps the one in force).

    Example:
        >>> with options(backend="hooks", full=True) as opts:
        ...     opts
        Options(backend='hooks', full=True)

    Raises:
        ConfigError: an unknown backend, or ``full`` not a bool (before the block runs).
    """
    token = _current.set(_merged(current(), backend, full))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def configure(*, backend: str | None = None, full: bool | None = None) -> Options:
    """Set the process-wide defaults (outside any :func:`options` block); returns the previous ones.

    Example:
        >>> old = configure(backend="hooks")
        >>> current().backend
        'hooks'
        >>> configure(backend=old.backend).backend             # back as it was
        'hooks'
    """
    old = _defaults[0]
    _defaults[0] = _merged(old, backend, full)
    return old


def legacy(verb: str, backend: str | None, full: bool | None):
    """The block a verb opens for a ``backend=`` / ``full=`` keyword passed the old way (a DeprecationWarning).

    Example:
        >>> with legacy("run", None, None):                   # nothing passed: nothing changes, no warning
        ...     current().backend
        'nnsight'
    """
    if backend is None and full is None:
        return contextlib.nullcontext()
    given = ", ".join(f"{k}={v!r}" for k, v in (("backend", backend), ("full", full)) if v is not None)
    warnings.warn(
        f"{verb}({given}) is deprecated and goes in the next release; run the call inside "
        f"`with interp.engine.options({given}):` instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return options(backend=backend, full=full)


__all__ = ["BACKENDS", "Options", "configure", "current", "legacy", "options"]
