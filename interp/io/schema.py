"""Strict reads of a saved config: JSON that must be an object, sections checked against a schema, the format.

Example:
    >>> _ = (tmp / "c.json").write_text('{"rank": "4"}')
    >>> Config(tmp / "c.json").section(None, {"rank": int})
    Traceback (most recent call last):
    interp.errors.FormatError: .../c.json: rank is '4' (a string); expected an integer

Every error names the file and the key. A config that Python's JSON reader cannot hold (nested deeper than its
recursion limit, an integer of more than 4300 digits, more than :data:`MAX_CONFIG_BYTES`) is a
:class:`interp.errors.FormatError` naming the file, like a damaged one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import FormatError
from .files import open_regular, read_exactly

FORMAT = "interp/2"
LEGACY = {"das": "interp-das/1", "reft": "reft-interventions/1"}  # the layouts before FORMAT, still read
KINDS = {"das": ("a DAS result", "DASResult.load(path, lm)"), "reft": ("a ReFT", "reft.load(path, lm)")}
MAX_CONFIG_BYTES = 64 << 20  # a config of 800 DAS steps is 30 KB

TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
              dict: "an object", type(None): "null"}  # fmt: skip


def show_value(value) -> str:
    """``'4' (a string)``: a value as an error message shows it."""
    name = next((n for k, n in TYPE_NAMES.items() if type(value) is k), type(value).__name__)
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:60] + '...'} ({name})"


def is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_config_bytes(file: str | os.PathLike) -> bytes:
    """The bytes of a config file: a regular file (never a pipe or a device) of at most :data:`MAX_CONFIG_BYTES`."""
    fd, st = open_regular(file)
    try:
        if st.st_size > MAX_CONFIG_BYTES:
            raise FormatError(
                f"{file} is {st.st_size} bytes; a saved config is at most {MAX_CONFIG_BYTES} bytes: the file is "
                "damaged or not a config; save the result again"
            )
        return read_exactly(fd, st.st_size, file)
    finally:
        os.close(fd)


def parse_json(raw: bytes, file: str | os.PathLike) -> dict:
    """The JSON object in ``raw`` (the bytes of ``file``); anything else is a :class:`FormatError` naming it."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(
            f"{file} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): the file is damaged or "
            "was edited by hand; save the result again"
        ) from None
    except UnicodeDecodeError:
        raise FormatError(f"{file} is not a UTF-8 text file: it is damaged; save the result again") from None
    except RecursionError:
        raise FormatError(
            f"{file} nests JSON lists or objects deeper than Python's recursion limit: no saved config does; the "
            "file was edited or is not a config; save the result again"
        ) from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise FormatError(f"{file} holds a value JSON cannot be read into ({e}); save the result again") from None
    if not isinstance(data, dict):
        raise FormatError(f"{file} holds a JSON {type(data).__name__}; expected an object {{...}}; save it again")
    return data


def read_json(file: str | os.PathLike) -> dict:
    """The JSON object in ``file``; a damaged file is a :class:`FormatError` naming it."""
    return parse_json(read_config_bytes(file), file)


class Config:
    """A config file being read: sections checked against a schema, every error naming the file and the key.

    Example:
        >>> _ = (tmp / "c.json").write_text('{"rank": "4"}')
        >>> Config(tmp / "c.json").section(None, {"rank": int})
        Traceback (most recent call last):
        interp.errors.FormatError: .../c.json: rank is '4' (a string); expected an integer
    """

    def __init__(self, file: str | os.PathLike, data: dict | None = None):
        self.file = Path(file)
        self.data = read_json(self.file) if data is None else data

    def error(self, where: str | None, message: str) -> FormatError:
        return FormatError(f"{self.file}: {where + ': ' if where else ''}{message}")

    def section(self, where: str | None, schema: dict, data=None, *, optional: dict | None = None) -> dict:
        """``data`` (default: the whole file) checked against ``{key: type or tuple of types}``: unknown keys,
        missing keys and values of other types are refused. ``optional`` keys may be absent."""
        data = self.data if data is None else data
        optional = optional or {}
        if not isinstance(data, dict):
            raise self.error(where, f"{show_value(data)}; expected an object with keys {sorted(schema)}")
        unknown = sorted(set(data) - set(schema) - set(optional))
        if unknown:
            raise self.error(where, f"unknown key {unknown[0]!r} (known: {', '.join(sorted({**schema, **optional}))});"
                             " the file was edited or written by another version")  # fmt: skip
        missing = sorted(set(schema) - set(data))
        if missing:
            raise self.error(where, f"missing key {missing[0]!r}; the file was edited or is incomplete")
        for key, kind in {**schema, **optional}.items():
            if key in data:
                self.check(f"{where}.{key}" if where else key, data[key], kind)
        return data

    def check(self, where: str, value, kind) -> None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = any((isinstance(value, k) and not isinstance(value, bool)) or (k is float and is_real(value))
                 for k in kinds)  # fmt: skip
        ok = ok or (bool in kinds and isinstance(value, bool))
        if not ok:
            want = " or ".join(TYPE_NAMES[k] for k in kinds)
            raise self.error(None, f"{where} is {show_value(value)}; expected {want}")

    def size(self, where: str, value, low: int, high: int) -> int:
        """An integer ``value`` in ``[low, high]`` (a width or rank, checked before anything of that size is built)."""
        self.check(where, value, int)
        if not low <= value <= high:
            raise self.error(None, f"{where} is {value}; expected {low}..{high}")
        return value

    def build(self, where: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, its refusal (a bad value in the file) reported with the file's name."""
        try:
            return fn(*args, **kwargs)
        except FormatError as e:
            raise self.error(where, str(e)) from None
        except (ValueError, TypeError) as e:
            raise self.error(where, f"{e}; the file was edited or written by another version") from None


def check_format(config: Config, kind: str) -> str:
    """The file's ``format``: :data:`FORMAT` with ``"kind": kind``, or ``kind``'s previous layout; anything else
    (another kind, another version) is refused with what to do instead."""
    fmt, got = config.data.get("format"), config.data.get("kind")
    if fmt == FORMAT and got == kind or fmt == LEGACY[kind]:
        return fmt
    old = {v: k for k, v in LEGACY.items()}.get(fmt) if isinstance(fmt, str) else None
    if fmt == FORMAT and isinstance(got, str) and got in KINDS or old is not None:
        name, loader = KINDS[got if old is None else old]
        raise config.error(None, f"holds {name}, not {KINDS[kind][0]}; load it with {loader}")
    if fmt == FORMAT:
        raise config.error("kind", f"{got!r} is not a kind this version reads; expected {kind!r}")
    raise config.error(
        "format",
        f"{fmt!r} is not a format this version reads ({FORMAT!r}, or the previous {LEGACY[kind]!r}); a newer "
        "version wrote it, or it was edited: load it with the version that wrote it",
    )


__all__ = ["FORMAT", "LEGACY", "KINDS", "Config", "check_format", "read_json", "parse_json", "show_value"]
