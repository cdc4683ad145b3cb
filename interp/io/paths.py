"""Output paths checked before any work: folders and files a save may write, and what a saved folder holds.

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

from ..errors import SaveExistsError

CONFIG, WEIGHTS = "config.json", "weights.safetensors"
SAVED_FILES = {CONFIG, WEIGHTS, "das.json", "basis.safetensors"}  # what a save (of any version) writes


def check_output_dir(path: str | os.PathLike, *, overwrite: bool = False, what: str = "output folder") -> Path:
    """Refuse, before any work, an output folder that cannot be written: a file, a non-empty folder (unless
    ``overwrite``; :class:`interp.errors.SaveExistsError`, a FileExistsError), or a place where the nearest
    existing parent is not a writable folder. Creates nothing.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"{what} {str(path)!r} is a file; expected a folder to write into; choose another path"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise SaveExistsError(
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


def check_save_dir(path: str | os.PathLike, *, overwrite: bool = False, what: str = "output folder") -> Path:
    """:func:`check_output_dir`, and ``overwrite`` replaces only a saved result: a folder that holds other files
    (a model checkpoint, earlier work, checkpoints ``step-N/``) is never deleted by a save.

    Example:
        >>> (tmp / "notes").mkdir(); _ = (tmp / "notes" / "todo.txt").write_text("x")
        >>> check_save_dir(tmp / "notes", overwrite=True)
        Traceback (most recent call last):
        FileExistsError: output folder '.../notes' holds files that are not a saved result (todo.txt); overwrite=True
        replaces only a saved result; choose another path
    """
    path = check_output_dir(path, overwrite=overwrite, what=what)
    if path.is_dir():
        other = not_saved(path)
        if other:
            shown = ", ".join(other[:5]) + (f", ... ({len(other)} in all)" if len(other) > 5 else "")
            raise FileExistsError(
                f"{what} {str(path)!r} holds files that are not a saved result ({shown}); overwrite=True replaces "
                "only a saved result; choose another path"
            )
    return path


def not_saved(folder: Path) -> list[str]:
    """The names in ``folder`` that no save writes (folders shown with a trailing ``/``), sorted."""
    theirs = [p for p in folder.iterdir() if not (p.is_file() and p.name in SAVED_FILES)]
    return sorted(p.name + ("/" if p.is_dir() else "") for p in theirs)


def check_output_file(path, *, overwrite: bool, what: str) -> Path:
    """Refuse, before any work, an output file that exists (unless ``overwrite``), is a folder, or cannot be
    written (the nearest existing parent must be a writable folder); creates nothing.

    Example:
        >>> _ = (tmp / "r.json").write_text("{}")
        >>> check_output_file(tmp / "r.json", overwrite=False, what="--out")
        Traceback (most recent call last):
        FileExistsError: --out '.../r.json' already exists; pass --overwrite or choose another path
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is a folder; expected a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what} {str(path)!r} already exists; pass --overwrite or choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{what} {str(path)!r} is not writable; choose another path")
    check_output_dir(path.parent, overwrite=True, what=f"folder of {what}")
    return path


__all__ = ["CONFIG", "WEIGHTS", "SAVED_FILES", "check_output_dir", "check_save_dir", "check_output_file", "not_saved"]
