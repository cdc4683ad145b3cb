"""Config and weights bound together: a save records the weights' SHA-256 in ``config.json``, a load reads one
consistent snapshot.

Example:
    >>> path = save_result(tmp / "run", {"format": "demo"}, {"R": torch.eye(2, 4)}, what="demo folder")
    >>> print((path / "config.json").read_text(), end="")      # readable; the hash binds it to its weights
    {
     "format": "demo",
     "weights_sha256": "..."
    }
    >>> read_consistent(path, lambda snap: snap.tensors({"R": (2, 4)})["R"].shape)
    torch.Size([2, 4])

A load opens ``config.json``, then ``weights.safetensors`` (each once, both kept open until it is done), reads
the weights' header and compares it with what the config and the model give, then reads the weights' bytes once
into memory and checks their SHA-256 against the config's record. If they differ, or any check fails, while a
save replaced the folder meanwhile (a file at the path is no longer the one opened), it reads both again (at most
:data:`RETRIES` times); if they differ and nothing changed, the weights file comes from another save (copied or
linked in) and the load is refused, naming the file. Folders saved before the hash was recorded load as before
(their config and weights are read as they are, and still re-read if a check fails while the folder changes).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from ..errors import FormatError
from .commit import atomic_folder, clean_leftovers, wait_for_commit
from .files import (
    check_header,
    decode_tensors,
    encode_tensors,
    header_of,
    open_regular,
    read_exactly,
    read_header,
    sha256,
    write_bytes,
    write_json,
)
from .paths import CONFIG, WEIGHTS
from .schema import MAX_CONFIG_BYTES, Config, parse_json, show_value

SHA_KEY = "weights_sha256"
RETRIES = 20
T = TypeVar("T")


def save_result(path, config: dict, tensors: dict[str, torch.Tensor], *, overwrite: bool = False,
                what: str = "output folder") -> Path:  # fmt: skip
    """Write ``config.json`` (``config`` and the weights' SHA-256) and ``weights.safetensors`` as one commit."""
    data = encode_tensors(tensors)
    with atomic_folder(path, overwrite=overwrite, what=what) as tmp:
        write_json(tmp / CONFIG, {**config, SHA_KEY: sha256(data)})
        write_bytes(tmp / WEIGHTS, data)
    return Path(path)


class Torn(Exception):
    """The weights read do not hash to what the config read records."""

    def __init__(self, snap: Snapshot, got: str):
        super().__init__(got)
        self.error = FormatError(
            f"{snap.weights_file} does not match {snap.config_file.name}: its SHA-256 is {got[:16]}..., the config "
            f"records {snap.sha[:16]}...: the weights file comes from another save (copied or linked in) or was "
            "edited; save the result again"
        )


def _ident(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class Snapshot:
    """The config and weights files of one saved folder, each opened once (see the module's docstring)."""

    def __init__(self, folder: str | os.PathLike, *, config: str = CONFIG, weights: str = WEIGHTS):
        self.folder = Path(folder)
        self.config_file, self.weights_file = self.folder / config, self.folder / weights
        self._fds: list[int] = []
        self._opened: dict[Path, tuple[int, int] | None] = {}  # None: found missing
        self._head = self._header = None
        try:
            fd, st = open_regular(self.config_file)
        except FileNotFoundError:
            raise FileNotFoundError(f"no saved result at {str(self.folder)!r}: {config} is missing") from None
        self._keep(self.config_file, fd, st)
        if st.st_size > MAX_CONFIG_BYTES:
            self.close()
            raise FormatError(f"{self.config_file} is {st.st_size} bytes; a saved config is at most {MAX_CONFIG_BYTES}")
        try:
            data = parse_json(read_exactly(fd, st.st_size, self.config_file), self.config_file)
        except BaseException:
            self.close()
            raise
        self.sha = data.pop(SHA_KEY, None)
        self.config = Config(self.config_file, data)
        if self.sha is not None and not (isinstance(self.sha, str) and re.fullmatch(r"[0-9a-f]{64}", self.sha)):
            self.close()
            raise self.config.error(SHA_KEY, f"{show_value(self.sha)}; expected the 64 hex digits of a SHA-256")

    def _keep(self, file: Path, fd: int, st: os.stat_result) -> None:
        self._fds.append(fd)  # kept open: the inode cannot be reused while :meth:`replaced` compares it
        self._opened[file] = _ident(st)

    def header(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """``{name: (dtype, shape)}`` of the weights file, read from its header only."""
        if self._header is None:
            try:
                fd, st = open_regular(self.weights_file)
            except FileNotFoundError:
                self._opened[self.weights_file] = None
                raise FileNotFoundError(
                    f"{self.weights_file} is missing; the folder holds an incomplete result: save it again"
                ) from None
            self._keep(self.weights_file, fd, st)
            self._fd, self._size = fd, st.st_size
            self._head = read_header(fd, st.st_size, self.weights_file)
            self._header = header_of(self._head, self.weights_file, st.st_size)
        return self._header

    def tensors(self, shapes: dict[str, tuple[int, ...]], *, by: str | None = None) -> dict[str, torch.Tensor]:
        """The weights, exactly the names and float shapes of ``shapes`` (checked on the header before the data is
        read), finite, and (where the config records it) the file the config was saved with."""
        check_header(self.weights_file, self.header(), shapes, by or self.config_file.name)
        blob = self._head + read_exactly(self._fd, self._size - len(self._head), self.weights_file)
        if self.sha is not None:
            got = sha256(blob)
            if got != self.sha:
                raise Torn(self, got)
        return decode_tensors(blob, self.weights_file)

    def replaced(self) -> bool:
        """Whether a file this snapshot opened (or found missing) is no longer the one at its path."""
        for file, ident in self._opened.items():
            try:
                now = _ident(os.stat(file))
            except OSError:
                now = None
            if now != ident:
                return True
        return False

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_consistent(folder: str | os.PathLike, build: Callable[[Snapshot], T], *, config: str = CONFIG,
                    weights: str = WEIGHTS, retries: int = RETRIES,
                    missing: Callable[[], Exception] | None = None) -> T:  # fmt: skip
    """``build(snapshot)`` on one consistent snapshot of ``folder`` (see the module's docstring); what killed
    saves left at that path is cleaned first. ``build`` must not change anything outside what it returns: it runs
    again when a save replaced the folder meanwhile. ``missing()``: the error when nothing is saved there."""
    folder = Path(folder)
    clean_leftovers(folder.parent, folder.name)
    for attempt in range(retries):
        last = attempt == retries - 1
        try:
            snap = Snapshot(folder, config=config, weights=weights)
        except FileNotFoundError:
            # The folder found on the way in was replaced and deleted before its config was opened (the path
            # holds the new one now), or a fallback commit is between its two renames: read again.
            if not last and (os.path.lexists(folder / config) or wait_for_commit(folder)):
                continue
            if missing is None:
                raise
            raise missing() from None
        with snap:
            try:
                return build(snap)
            except Torn as torn:
                if last or not snap.replaced():
                    raise torn.error from None
            except Exception:
                if last or not snap.replaced():
                    raise
        time.sleep(0.001 * (attempt + 1))
    raise AssertionError("unreachable")


__all__ = ["save_result", "read_consistent", "Snapshot", "SHA_KEY"]
