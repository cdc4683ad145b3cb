"""The filesystem steps of a commit: ``renameat2`` (through ctypes), fsync, the hidden names saves use, a lock.

Example:
    >>> renameat2(tmp / "nowhere", tmp / "there", NOREPLACE)
    Traceback (most recent call last):
    FileNotFoundError: [Errno 2] No such file or directory: '.../nowhere' -> '.../there'
    >>> temp_path(tmp / "run").name.startswith(f".run.interp-{HOST}-{os.getpid()}-")
    True

A temporary name carries the writer's host (a hash of its name) and pid, so that what a killed save left can be
told from a live save's folder: :func:`alive` says whether the pid still runs. :data:`RENAMEAT2` is None where the
C library has no ``renameat2``; :func:`renameat2` then raises :class:`RenameUnsupported`, as it does for a
filesystem that answers EINVAL or ENOSYS, and the commit takes its fallback (:func:`path_lock`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the fallback commit runs without a lock (see interp.io.commit)
    fcntl = None

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]  # a leftover of another host is never touched
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


RENAMEAT2 = _libc_renameat2()  # None where the C library lacks it: every commit takes the fallback


def renameat2(src: str | os.PathLike, dst: str | os.PathLike, flags: int) -> None:
    """``rename(src, dst)`` with ``flags`` (:data:`NOREPLACE` or :data:`EXCHANGE`), or the OSError it raised
    (FileExistsError, FileNotFoundError, ...); :class:`RenameUnsupported` where the system cannot do it."""
    if RENAMEAT2 is None:
        raise RenameUnsupported(errno.ENOSYS, "renameat2 is not available")
    if RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
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


def lock_file(path: Path) -> Path:
    """The fallback commit's lock file of ``path``, ``.<name>.interp.lock`` beside it (none exists where every
    commit is a ``renameat2``; none is used where ``fcntl`` is missing)."""
    return path.with_name(f".{path.name}.interp.lock")


@contextlib.contextmanager
def path_lock(path: Path, *, shared: bool = False) -> Iterator[None]:
    """The fallback commit's lock: ``flock`` on ``.<name>.interp.lock`` beside ``path`` (released if the holder
    dies); no lock where ``fcntl`` is missing."""
    if fcntl is None:
        yield
        return
    fd = os.open(lock_file(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


__all__ = ["HOST", "NOREPLACE", "EXCHANGE", "RENAMEAT2", "RenameUnsupported", "renameat2", "temp_path", "alive",
           "fsync_dir", "sync_tree", "remove", "path_lock", "lock_file"]  # fmt: skip
