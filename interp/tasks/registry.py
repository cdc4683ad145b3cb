"""One registry of built-in tasks, shared by the ``interp`` and ``reft`` command lines.

Example:
    >>> from interp.tasks import registry
    >>> registry.names("das")
    ('hierarchical-equality', 'ioi', 'gender', 'capitals')
    >>> registry.get("genderr", "das")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    interp.errors.UnknownTaskError: unknown das task 'genderr'; known: hierarchical-equality, ioi, ...

A task is a kind, a name and a loader, given as ``"package.module:attribute"`` (or ``"package.module"``) and
imported on first use, so listing tasks imports nothing heavy. Kinds: ``"patch"`` (``loader(n, *, seed) ->
(Pairs, positions)``, for ``interp patch``), ``"das"`` (``loader(*, n, seed, model) -> TaskSetup``, for
``interp das`` and ``interp sweep``) and ``"reft"`` (a task module with ``load`` and ``DEFAULTS``, for the
``reft`` commands). reft's tasks register themselves when ``reft.tasks`` is imported (interp never imports reft).
interp's own loaders live in :mod:`interp.tasks.setups`: the library never imports its command line.
"""

from __future__ import annotations

import importlib

from ..errors import UnknownTaskError  # noqa: F401  (defined in interp.errors, re-exported here)

_TASKS: dict[str, dict[str, str]] = {"patch": {}, "das": {}, "reft": {}}  # kind -> name -> loader


def _kind(kind: str) -> dict[str, str]:
    if kind not in _TASKS:
        raise UnknownTaskError(f"unknown kind of task {kind!r}; known: {', '.join(_TASKS)}")
    return _TASKS[kind]


def register(name: str, kind: str, loader: str) -> None:
    """Add a task (again with the same loader: a no-op; another loader under a taken name: an error)."""
    tasks = _kind(kind)
    if tasks.setdefault(name, loader) != loader:
        raise ValueError(f"a {kind} task {name!r} is already registered ({tasks[name]!r}); choose another name")


def names(kind: str | None = None) -> tuple[str, ...]:
    """Registered task names in registration order (of one kind, when given)."""
    kinds = [_kind(kind)] if kind is not None else _TASKS.values()
    return tuple(dict.fromkeys(n for tasks in kinds for n in tasks))


def get(name: str, kind: str):
    """The loader of task ``name`` of ``kind``, imported; the error names the task and lists the known ones."""
    tasks = _kind(kind)
    if name not in tasks:
        raise UnknownTaskError(f"unknown {kind} task {name!r}; known: {', '.join(tasks)}")
    module, _, attr = tasks[name].partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


register("ioi", "patch", "interp.tasks.setups:ioi_patch_task")
register("hierarchical-equality", "das", "interp.tasks.setups:hierarchical_equality_setup")
register("ioi", "das", "interp.tasks.setups:ioi_setup")
register("gender", "das", "interp.tasks.setups:gender_setup")
register("capitals", "das", "interp.tasks.setups:capitals_setup")
