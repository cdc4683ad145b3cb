"""One registry of built-in tasks, shared by the ``interp`` and ``reft`` command lines.

Example:
    >>> from interp.tasks import registry
    >>> registry.names(kind="das")
    ('hierarchical-equality', 'ioi', 'gender', 'capitals')
    >>> registry.get("gender", kind="das").kind
    'das'
    >>> registry.get("genderr", kind="das")
    Traceback (most recent call last):
    interp.tasks.registry.UnknownTaskError: unknown task 'genderr'; known: hierarchical-equality, ioi, gender, capitals

A task is a name, a kind and a loader. The kind says what the loader gives and which command uses it:

- ``"patch"``: ``loader(n, *, seed) -> (PatchingPairs, positions)`` for ``interp patch``;
- ``"das"``: ``loader(*, n, seed, model) -> TaskSetup`` for ``interp das`` and ``interp sweep``;
- ``"reft"``: the task module (``load(...) -> TaskData`` and ``DEFAULTS``) for ``reft train | eval | compare``.

A loader may be given as ``"package.module:attribute"`` (or ``"package.module"`` for a module), imported on
first use, so that listing tasks imports nothing heavy. interp's own tasks are declared at the bottom of this
module; reft's register themselves when ``reft.tasks`` is imported (interp never imports reft).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KINDS = ("patch", "das", "reft")


class UnknownTaskError(ValueError):
    """A task name (or kind) that the registry does not hold."""


@dataclass(frozen=True)
class Task:
    """A registered task: ``name``, ``kind`` (one of :data:`KINDS`) and its ``loader``."""

    name: str
    kind: str
    loader: str | Callable[..., Any]
    help: str = ""

    def load(self) -> Any:
        """The loader itself, importing it first when it was registered as ``"module:attribute"``."""
        if not isinstance(self.loader, str):
            return self.loader
        module, _, attr = self.loader.partition(":")
        obj = importlib.import_module(module)
        return getattr(obj, attr) if attr else obj


_TASKS: dict[tuple[str, str], Task] = {}  # (kind, name) -> Task, in registration order


def register(name: str, *, kind: str, loader: str | Callable[..., Any], help: str = "") -> Task:
    """Add a task; registering the same task again is a no-op, a different loader under a taken name is an error.

    Example:
        >>> register("ioi", kind="patch", loader="interp.cli.patch:ioi_task")
        Task(name='ioi', kind='patch', loader='interp.cli.patch:ioi_task', help='IOI base/source pairs')
    """
    if kind not in KINDS:
        raise UnknownTaskError(f"task {name!r}: unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    old = _TASKS.get((kind, name))
    if old is not None:
        if old.loader != loader:
            raise ValueError(
                f"a {kind} task {name!r} is already registered (loader {old.loader!r}); choose another name"
            )
        return old
    task = Task(name, kind, loader, help)
    _TASKS[(kind, name)] = task
    return task


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered task names, in registration order; only those of ``kind`` when given."""
    if kind is not None and kind not in KINDS:
        raise UnknownTaskError(f"unknown kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return tuple(dict.fromkeys(n for (k, n) in _TASKS if kind is None or k == kind))


def get(name: str, *, kind: str | None = None) -> Task:
    """The task called ``name`` (of ``kind``, needed when a name is registered under several kinds).

    Raises:
        UnknownTaskError: naming the task asked for and listing the known ones.
    """
    found = [t for (k, n), t in _TASKS.items() if n == name and (kind is None or k == kind)]
    if not found:
        raise UnknownTaskError(f"unknown task {name!r}; known: {', '.join(names(kind))}")
    if len(found) > 1:
        kinds = ", ".join(t.kind for t in found)
        raise UnknownTaskError(f"task {name!r} is registered as several kinds ({kinds}); pass kind= one of them")
    return found[0]


# ---- interp's built-in tasks -----------------------------------------------------------------------------

register("ioi", kind="patch", loader="interp.cli.patch:ioi_task", help="IOI base/source pairs")
register(
    "hierarchical-equality",
    kind="das",
    loader="interp.cli.das:hierarchical_equality_setup",
    help="an MLP trained on hierarchical equality",
)
register("ioi", kind="das", loader="interp.cli.das:ioi_setup", help="IOI: which name position is the answer")
register("gender", kind="das", loader="interp.cli.das:gender_setup", help="the pronoun's gender")
register("capitals", kind="das", loader="interp.cli.das:capitals_setup", help="the country of a capital prompt")
