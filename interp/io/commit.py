"""The one commit of a save: a fresh hidden folder beside the target, fsynced, put in place in one step.

Example:
    >>> with atomic_folder(tmp / "run") as folder:
    ...     _ = (folder / "config.json").write_text("{}")
    >>> sorted(p.name for p in tmp.iterdir())                  # nothing left behind
    ['run']
    >>> with atomic_folder(tmp / "run") as folder:             # overwrite=False: an exclusive create
    ...     pass
    Traceback (most recent call last):
    interp.errors.SaveExistsError: output folder '.../run' already exists and is not empty; pass overwrite=True ...

How (Linux): files are written into ``.<name>.interp-<host>-<pid>-<uuid>.tmp`` beside the target, each file and
the folder fsynced, then ``renameat2`` commits in one step that never leaves the path empty: with
``RENAME_EXCHANGE`` for ``overwrite=True`` (the old result then sits under the temporary name and is deleted),
with ``RENAME_NOREPLACE`` for ``overwrite=False`` (of two racing saves exactly one succeeds; the other gets
:class:`interp.errors.SaveExistsError`); the parent folder is fsynced after. Where ``renameat2`` is missing (other
systems, or a filesystem that answers EINVAL/ENOSYS) the commit takes an exclusive ``flock`` on
``.<name>.interp.lock`` beside the target and renames the old result aside (``...old``) before renaming the new one
in; a reader that finds the path missing waits for that lock and reads again, and a kill between the two renames
is undone by the next save or load (the ``.old`` folder is renamed back).

What a killed save leaves (names of the pattern above only, and only when the pid in the name is of this host and
no longer alive) is removed by the next save into the same folder or the next load of that path; a leftover of a
live save, of another host, or of a name outside the pattern is never touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from ..errors import SaveExistsError
from .paths import SAVED_FILES, check_save_dir, not_saved
from .rename import (
    EXCHANGE,
    HOST,
    NOREPLACE,
    RenameUnsupported,
    alive,
    fsync_dir,
    lock_file,
    path_lock,
    remove,
    renameat2,
    sync_tree,
    temp_path,
)

LEFTOVER = re.compile(r"\.(?P<name>.+)\.interp-(?P<host>[0-9a-f]{6})-(?P<pid>\d{1,10})-[0-9a-f]{12}\.(?P<tag>tmp|old)")
LEGACY_OLD = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.old")  # the previous version's result moved aside


# ------------------------------------------------------------------------------------------------- the commit


def exists_error(path: Path, what: str) -> SaveExistsError:
    return SaveExistsError(
        f"{what} {str(path)!r} already exists: another save committed a result there first (overwrite=False never "
        "replaces one); pass overwrite=True or choose another path"
    )


def commit(tmp: Path, path: Path, *, overwrite: bool, what: str = "output folder") -> None:
    """Put the complete folder ``tmp`` at ``path`` in one step (see the module's docstring), then fsync the parent."""
    try:
        _exchange_or_create(tmp, path, overwrite, what)
    except RenameUnsupported:
        _commit_locked(tmp, path, overwrite, what)
    with contextlib.suppress(OSError):
        fsync_dir(path.parent)


def _exchange_or_create(tmp: Path, path: Path, overwrite: bool, what: str) -> None:
    if not overwrite:
        try:
            return renameat2(tmp, path, NOREPLACE)
        except FileExistsError:
            pass
        try:  # an empty folder is no result: it may go (rmdir refuses, atomically, a folder another save filled)
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise exists_error(path, what) from None
        try:
            return renameat2(tmp, path, NOREPLACE)
        except FileExistsError:
            raise exists_error(path, what) from None
    while True:  # ends: each turn either commits or finds the path's state changed by another save
        try:
            renameat2(tmp, path, EXCHANGE)
        except FileNotFoundError:  # nothing at the path yet
            try:
                return renameat2(tmp, path, NOREPLACE)
            except FileExistsError:  # another save created it meanwhile: exchange with that one
                continue
        _check_replaced(tmp, path, what, lambda: renameat2(tmp, path, EXCHANGE))
        remove(tmp)  # the old result, now under the temporary name
        return


def _check_replaced(old: Path, path: Path, what: str, undo) -> None:
    """A folder made at ``path`` after the checks, holding files no save writes, is put back (``undo``) and kept:
    ``overwrite`` replaces only a saved result."""
    try:
        other = not_saved(old)
    except OSError:
        return
    if other:
        undo()
        raise FileExistsError(
            f"{what} {str(path)!r} holds files that are not a saved result ({', '.join(other[:5])}), put there while "
            "this save was writing; overwrite=True replaces only a saved result; choose another path"
        )


def _commit_locked(tmp: Path, path: Path, overwrite: bool, what: str) -> None:
    with path_lock(path):
        if os.path.isdir(path) and not overwrite:
            with contextlib.suppress(OSError):
                os.rmdir(path)  # only if empty
        if os.path.lexists(path):
            if not overwrite:
                raise exists_error(path, what)
            aside = temp_path(path, "old")
            os.rename(path, aside)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(aside, path)
                raise
            _check_replaced(aside, path, what, lambda: (os.rename(path, tmp), os.rename(aside, path)))
            remove(aside)
            return
        os.rename(tmp, path)


# ------------------------------------------------------------------------------------------------- leftovers


def clean_leftovers(folder: str | os.PathLike, name: str | None = None) -> list[str]:
    """Remove what killed saves left in ``folder`` (only of the target ``name`` if given); returns their names.

    Only names of the save's own pattern whose pid is of this host and no longer alive: a temporary folder, or an
    old result after an exchange, is deleted; an old result the fallback commit moved aside is renamed back when
    nothing took its place. A result the previous version moved aside (``.<name>.<12 hex>.old``) is renamed back
    when its path is missing. Errors (a read-only folder) are ignored: cleaning is never why a load fails.

    Example:
        >>> dead = f".run.interp-{HOST}-999999999-0123456789ab.tmp"      # no such pid: a killed save's
        >>> (tmp / dead).mkdir()
        >>> clean_leftovers(tmp, "run") == [dead], (tmp / dead).exists()
        (True, False)
    """
    folder = Path(folder)
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return []
    done = []
    for entry in entries:
        m = LEFTOVER.fullmatch(entry)
        if m is None or (name is not None and m["name"] != name):
            continue
        if m["host"] != HOST or alive(int(m["pid"])):
            continue
        try:
            if m["tag"] == "old" and _restore(folder / entry, folder / m["name"]):
                done.append(entry)
                continue
            remove(folder / entry)
            done.append(entry)
        except OSError:
            continue
    if name is not None and not os.path.lexists(folder / name):
        for entry in entries:
            m = LEGACY_OLD.fullmatch(entry)
            if m and m["name"] == name and _only_saved(folder / entry) and _restore(folder / entry, folder / name):
                done.append(entry)
                break
    return done


def _only_saved(folder: Path) -> bool:
    try:
        return folder.is_dir() and all(p.name in SAVED_FILES for p in folder.iterdir())
    except OSError:
        return False


def _restore(old: Path, path: Path) -> bool:
    """Rename a result moved aside back to ``path`` unless something is there now; whether it was."""
    try:
        renameat2(old, path, NOREPLACE)
        return True
    except FileExistsError:
        return False
    except RenameUnsupported:
        pass
    with path_lock(path):  # the fallback: no commit of that path runs meanwhile
        if os.path.lexists(path):
            return False
        os.rename(old, path)
    return True


def wait_for_commit(path: Path) -> bool:
    """Wait until a fallback commit of ``path`` in progress (between its two renames) ends; whether one may have
    run. Commits by ``renameat2`` never leave the path missing and take no lock: then nothing to wait for."""
    if not lock_file(path).exists():
        return False
    with contextlib.suppress(OSError), path_lock(path, shared=True):
        pass
    return True


# ------------------------------------------------------------------------------------------------ the writers


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False, what: str = "output folder") -> Iterator[Path]:
    """Write a folder all at once: ``with atomic_folder(path) as tmp:`` write every file into ``tmp``.

    Leaving the block fsyncs every file and commits ``tmp`` at ``path`` in one step (module docstring): ``path``
    holds the complete old result or the complete new one at every instant, for a reader in another process too.
    ``overwrite=False`` is an exclusive create (a result there, or one committed meanwhile by another process,
    is :class:`interp.errors.SaveExistsError`); ``overwrite=True`` replaces only a saved result. On any failure
    only what this call created is removed (the temporary folder, parent folders it made); what killed saves left
    in the folder is cleaned first (:func:`clean_leftovers`).

    Example:
        >>> with atomic_folder(tmp / "exp") as folder:
        ...     _ = (folder / "config.json").write_text("{}")
        >>> sorted(p.name for p in tmp.iterdir() if p.name.startswith(".exp"))   # nothing left behind
        []
    """
    path = Path(os.path.abspath(path))
    clean_leftovers(path.parent)
    check_save_dir(path, overwrite=overwrite, what=what)
    made = []  # parent folders this call creates, deepest first
    parent = path.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        tmp.mkdir()
        yield tmp
        sync_tree(tmp)
        commit(tmp, path, overwrite=overwrite, what=what)
    except BaseException:
        if os.path.lexists(tmp):
            remove(tmp)
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()  # only if still empty
        raise


def write_file_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write one text file all at once: into a hidden file beside it (fsynced), then renamed into place
    (``overwrite``: replacing an existing file; otherwise an existing one, or one made meanwhile, is refused).

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp())
        >>> write_file_atomic(d / "r.json", "{}").read_text()
        '{}'
        >>> write_file_atomic(d / "r.json", "[]")
        Traceback (most recent call last):
        interp.errors.SaveExistsError: ... exists; pass overwrite=True to replace it
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; expected a file path")
    clean_leftovers(path.parent, path.name)
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails, leaving the existing file, if one appeared meanwhile
            except FileExistsError:
                raise SaveExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it") from None
        with contextlib.suppress(OSError):
            fsync_dir(path.parent)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


__all__ = ["atomic_folder", "write_file_atomic", "commit", "clean_leftovers", "temp_path", "renameat2", "alive"]
