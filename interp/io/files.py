"""The files of a save: a readable ``config.json`` and ``weights.safetensors``, written and read as bytes.

Example:
    >>> blob = encode_tensors({"R": torch.eye(2, 4)})
    >>> header_of(blob[:8 + int.from_bytes(blob[:8], "little")], "w.safetensors")
    {'R': ('F32', (2, 4))}
    >>> print(dumps({"format": "interp/2", "splits": [1]}), end="")
    {
     "format": "interp/2",
     "splits": [1]
    }

A weights file is read from one open file (never a pipe or a device): its header first (8 bytes of length, then
JSON of at most :data:`MAX_HEADER_BYTES`), compared with the shapes the config and the model give before the
tensors' bytes are read, so an edited or hostile file is refused before anything of its size is read or built.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes

from ..errors import FormatError

MAX_HEADER_BYTES = 16 << 20  # safetensors allows 100 MB; a save's header is a few hundred bytes per tensor
FLOATS = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "F8_E4M3": "float8_e4m3fn",
           "F8_E5M2": "float8_e5m2", "I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8",
           "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool"}  # fmt: skip


# --------------------------------------------------------------------------------------------------- writing


def write_bytes(file: Path, data: bytes) -> None:
    """Write ``data`` to a new file (the commit fsyncs it)."""
    with open(file, "xb") as f:
        f.write(data)


def write_json(file: Path, obj: dict) -> None:
    """Write a config: one top-level key per line (a list of objects: one per line), values compact."""
    write_bytes(Path(file), dumps(obj).encode("utf-8"))


def dumps(obj: dict) -> str:
    """JSON text of ``obj`` with one top-level key per line, and one line per item of a list of objects or per
    field of an object of lists (a DAS history), so that a config stays small and readable in a diff."""
    lines = []
    for k, v in obj.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            v = "[\n" + ",\n".join("  " + json.dumps(x) for x in v) + "\n ]"
        elif isinstance(v, dict) and v and all(isinstance(x, list) for x in v.values()):
            v = "{\n" + ",\n".join(f"  {json.dumps(a)}: {json.dumps(b)}" for a, b in v.items()) + "\n }"
        else:
            v = json.dumps(v)
        lines.append(f" {json.dumps(k)}: {v}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def encode_tensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors bytes of ``tensors`` (CPU, contiguous copies).

    A non-finite tensor (NaN or inf) is refused here, before a save writes anything: a load would refuse it, so
    a save never leaves behind what cannot be loaded (the path keeps the old result, or nothing).
    """
    for name, t in tensors.items():
        if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise FormatError(
                f"cannot save tensor {name!r}: {bad} of its {t.numel()} values are NaN or inf, and a load would "
                "refuse it; training stops at the first non-finite loss (NonFiniteError): save from before it"
            )
    return save_bytes({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})


def write_tensors(file: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors as safetensors; returns the SHA-256 of the file's bytes (what ``config.json`` records)."""
    data = encode_tensors(tensors)
    write_bytes(Path(file), data)
    return sha256(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------- reading


def open_regular(file: str | os.PathLike) -> tuple[int, os.stat_result]:
    """An open descriptor of ``file`` and its stat, refusing at once (without blocking) anything but a regular
    file: a named pipe would block a reader forever, a device would never end."""
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise FormatError(f"cannot open {file}: {e.strerror}; expected a regular file") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        mode = st.st_mode
        kind = ("a folder" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")  # fmt: skip
        raise FormatError(f"{file} is {kind}, not a regular file: it is not what a save writes; refusing to read it")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd, st


def check_regular(file: str | os.PathLike) -> None:
    """Refuse at once, naming it, a ``file`` that is not a regular file (it is opened without blocking)."""
    fd, _ = open_regular(file)
    os.close(fd)


def read_regular(file: str | os.PathLike) -> bytes:
    """The bytes of ``file``, read once from one open descriptor; anything but a regular file (a named pipe, a
    device, a folder) is refused at once, naming it (:func:`open_regular`).

    Example:
        >>> import os; os.mkfifo(tmp / "pipe.bin")
        >>> read_regular(tmp / "pipe.bin")
        Traceback (most recent call last):
        interp.errors.FormatError: .../pipe.bin is a named pipe (FIFO), not a regular file: it is not what a save
        writes; refusing to read it
    """
    fd, st = open_regular(file)
    try:
        return read_exactly(fd, st.st_size, file)
    finally:
        os.close(fd)


def read_exactly(fd: int, n: int, file) -> bytes:
    """``n`` bytes from ``fd``; a file that ends sooner (truncated meanwhile) is a :class:`FormatError`."""
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 24))
        if not chunk:
            raise FormatError(f"{file} ended after {n - left} of {n} bytes: it is truncated; save the result again")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_header(fd: int, size: int, file) -> bytes:
    """The first ``8 + n`` bytes of a safetensors file (the length, then the JSON header), ``n`` bounded."""
    if size < 8:
        raise FormatError(f"cannot read {file}: {size} bytes, shorter than a safetensors header; save it again")
    head = read_exactly(fd, 8, file)
    n = int.from_bytes(head, "little")
    if n > min(MAX_HEADER_BYTES, size - 8):
        raise FormatError(
            f"cannot read {file}: its header claims {n} bytes (the file has {size}; at most {MAX_HEADER_BYTES}): "
            "the file is damaged or not safetensors; save the result again"
        )
    return head + read_exactly(fd, n, file)


def header_of(head: bytes, file, size: int | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (dtype, shape)}`` from a safetensors header (its first ``8 + n`` bytes), checked: known dtypes,
    shapes of non-negative integers, data offsets that tile the rest of the file (of ``size`` bytes) exactly."""
    try:
        meta = json.loads(head[8:].decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise FormatError(f"cannot read {file}: its header is not JSON ({e}); the file is damaged") from None
    if not isinstance(meta, dict):
        raise FormatError(f"cannot read {file}: its header is not an object; the file is damaged; save it again")
    meta.pop("__metadata__", None)
    out, spans = {}, []
    for name, t in meta.items():
        ok = isinstance(t, dict) and set(t) == {"dtype", "shape", "data_offsets"} and t["dtype"] in _DTYPES
        ok = ok and isinstance(t["shape"], list) and all(type(x) is int and x >= 0 for x in t["shape"])
        ok = ok and isinstance(t["data_offsets"], list) and len(t["data_offsets"]) == 2
        ok = ok and all(type(x) is int and x >= 0 for x in t["data_offsets"])
        if not ok:
            raise FormatError(f"cannot read {file}: tensor {name!r} has a malformed header entry; save it again")
        out[name] = (t["dtype"], tuple(t["shape"]))
        spans.append(tuple(t["data_offsets"]))
    end = 0
    for start, stop in sorted(spans):
        if start != end or stop < start:
            raise FormatError(f"cannot read {file}: its tensors' data offsets overlap or leave gaps; save it again")
        end = stop
    if size is not None and end != size - len(head):
        raise FormatError(
            f"cannot read {file}: its header describes {end} bytes of data but the file holds {size - len(head)}: "
            "the file is truncated or damaged; save the result again"
        )
    return out


def check_header(file, header: dict, shapes: dict[str, tuple[int, ...]], by: str) -> None:
    """Exactly the tensors of ``shapes``, each a float tensor of that shape (``by``: where the shapes come from)."""
    missing, stray = sorted(set(shapes) - set(header)), sorted(set(header) - set(shapes))
    if missing or stray:
        found = [f"missing tensors {missing}"] * bool(missing) + [f"unexpected tensors {stray}"] * bool(stray)
        raise FormatError(
            f"{file} does not match {by}: {'; '.join(found)}; the files were edited or come from different saves; "
            "save the result again"
        )
    for k, shape in shapes.items():
        dtype, got = header[k]
        if got != tuple(shape) or dtype not in FLOATS:
            raise FormatError(
                f"{file}: tensor {k!r} is torch.{_DTYPES[dtype]} of shape {got}; expected a float tensor of shape "
                f"{tuple(shape)} (from {by}); save the result again"
            )


def decode_tensors(blob: bytes, file) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file's bytes, each finite (NaN and inf are refused, naming the tensor)."""
    try:
        tensors = load_bytes(blob)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise FormatError(f"cannot read {file}: {e}; the file is damaged; save the result again") from None
    check_finite(tensors, file)
    return tensors


def check_finite(tensors: dict[str, torch.Tensor], file) -> None:
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise FormatError(
                f"{file}: tensor {k!r} holds {bad} non-finite value(s) (NaN or inf) of {v.numel()}: a run that "
                "diverged, or a damaged file; train again (or load an earlier checkpoint)"
            )


def read_tensors(file: str | os.PathLike, shapes: dict[str, tuple[int, ...]], *, by: str = "config.json") -> dict:
    """The tensors in a safetensors ``file``, exactly the names of ``shapes`` with exactly those shapes, finite.

    Missing and unexpected tensors are both refused (a missing basis would otherwise stay random), naming the
    file and the tensors; ``by`` names the file the expected shapes come from. The header is checked before
    the data is read. (A saved folder is read with :class:`interp.io.snapshot.Snapshot`, which also checks that
    the file is the one its config records.)
    """
    file = Path(file)
    try:
        fd, st = open_regular(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"{file} is missing; the folder holds an incomplete result: save it again") from None
    try:
        head = read_header(fd, st.st_size, file)
        check_header(file, header_of(head, file, st.st_size), shapes, by)
        blob = head + read_exactly(fd, st.st_size - len(head), file)
    finally:
        os.close(fd)
    return decode_tensors(blob, file)


__all__ = [
    "write_json",
    "write_tensors",
    "encode_tensors",
    "dumps",
    "read_tensors",
    "open_regular",
    "read_regular",
    "check_regular",
    "check_finite",
    "sha256",
]
