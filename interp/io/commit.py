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
import ctypes
import errno
import hashlib
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import SaveExistsError
from .paths import SAVED_FILES, check_save_dir

try:
    import fcntl
except ImportError:  # not POSIX: the fallback commit runs without a lock (see the module's docstring)
    fcntl = None

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]  # a leftover of another host is never touched
LEFTOVER = re.compile(r"\.(?P<name>.+)\.interp-(?P<host>[0-9a-f]{6})-(?P<pid>\d{1,10})-[0-9a-f]{12}\.(?P<tag>tmp|old)")
LEGACY_OLD = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.old")  # the previous version's result moved aside
NOREPLACE, EXCHANGE = 1, 2  # renameat2 flags (linux/fs.h)
_AT_FDCWD = -100


class RenameUnsupported(OSError):
    """``renameat2`` is not available here (another system, an old C library, or a filesystem without it)."""


def _libc_renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _libc_renameat2()


def renameat2(src: str | os.PathLike, dst: str | os.PathLike, flags: int) -> None:
    """``rename(src, dst)`` with ``flags`` (:data:`NOREPLACE` or :data:`EXCHANGE`), or the OSError it raised
    (FileExistsError, FileNotFoundError, ...); :class:`RenameUnsupported` where the system cannot do it."""
    if _RENAMEAT2 is None:
        raise RenameUnsupported(errno.ENOSYS, "renameat2 is not available")
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        raise RenameUnsupported(code, f"renameat2 not supported here: {os.strerror(code)}", str(dst))
    raise OSError(code, os.strerror(code), str(src), None, str(dst))


def temp_path(path: Path, tag: str = "tmp") -> Path:
    """A fresh hidden name beside ``path`` that only saves use: ``.<name>.interp-<host>-<pid>-<uuid>.<tag>``."""
    return path.with_name(f".{path.name}.interp-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}.{tag}")


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie counts as running until its parent reaps it)."""
    if os.name != "posix" or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # not a pid at all
        return False
    return True


# ------------------------------------------------------------------------------------------------ durability


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a folder's entries (a rename into it) durable."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:  # a system where folders cannot be opened (Windows): nothing to sync
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """fsync every file under ``folder``, then each folder, deepest first."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(root)


def remove(path: str | os.PathLike) -> None:
    """Delete a file or folder tree if it is there (ignoring what another remover took first)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


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
        remove(tmp)  # the old result, now under the temporary name
        return


@contextlib.contextmanager
def path_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """The fallback commit's lock: ``flock`` on ``.<name>.interp.lock`` beside ``path`` (released if the holder
    dies); no lock where ``fcntl`` is missing."""
    if fcntl is None:
        yield
        return
    fd = os.open(path.with_name(f".{path.name}.interp.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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
    if fcntl is None or not path.with_name(f".{path.name}.interp.lock").exists():
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
