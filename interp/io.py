"""Saving and loading for both packages (DAS results and ReFTs): checks before work, atomic writes, strict loads.

Example:
    >>> check_output_dir(tmp / "new-run")            # fine: does not exist yet (nothing is created)
    PosixPath('.../new-run')
    >>> (tmp / "a-file").write_text("x")
    1
    >>> check_output_dir(tmp / "a-file")
    Traceback (most recent call last):
    NotADirectoryError: output folder '.../a-file' is a file; expected a folder to write into; choose another path
"""

from __future__ import annotations

import os
from pathlib import Path


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False, what: str = "output folder") -> Path:
    """Refuse, before any work, an output folder that cannot be written: a file, a non-empty folder (unless
    ``overwrite``), or a place where the nearest existing parent is not a writable folder. Creates nothing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"{what} {str(path)!r} is a file; expected a folder to write into; choose another path"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{what} {str(path)!r} already exists and is not empty; pass overwrite=True (CLI: --overwrite) "
            "or choose another path"
        )
    parent = path if path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"cannot create {what} {str(path)!r}: {str(parent)!r} is a file; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"cannot write {what} {str(path)!r}: {str(parent)!r} is not writable; choose another path"
        )
    return path
