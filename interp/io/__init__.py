"""Saving and loading for both packages (DAS results and ReFTs): checks before work, atomic writes, strict loads.

Example:
    >>> check_output_dir(tmp / "new-run")            # fine: does not exist yet (nothing is created)
    PosixPath('.../new-run')
    >>> (tmp / "a-file").write_text("x")
    1
    >>> check_output_dir(tmp / "a-file")
    Traceback (most recent call last):
    NotADirectoryError: output folder '.../a-file' is a file; expected a folder to write into; choose another path
    >>> position_to_json(token(" Mary", 1) + last())              # every position kind, as plain JSON
    {'kind': 'sum', 'parts': [{'kind': 'token', 'text': ' Mary', 'occurrence': 1}, {'kind': 'last', 'n': 1}]}
    >>> sorted(fingerprint(lm))                                    # what a saved result checks on load
    ['architecture', 'd_model', 'n_layers', 'parameters', 'shapes', 'weights', 'weights_bf16']

One format for both kinds of saved result: a folder with ``config.json`` (``"format": "interp/2"``, ``"kind":
"das"`` or ``"reft"``, the model's fingerprint, sites with structured positions) and ``weights.safetensors``
(never pickle). A save refuses, before writing anything, what a load could not rebuild; it writes into a fresh
hidden folder next to the target and renames it into place, so the target holds the complete old result or
the complete new one, never a mix. A load refuses unknown, missing and mistyped keys, missing and stray
tensors and wrong shapes, each error naming the file; the files of the previous layouts (``interp-das/1``,
``reft-interventions/1``) still load, and saving the loaded result again converts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import positions as _p
from .errors import FormatError, WeightsChangedWarning  # noqa: F401  (defined in interp.errors, re-exported here)
from .positions import Position
from .sites import Site

FORMAT = "interp/2"
LEGACY = {"das": "interp-das/1", "reft": "reft-interventions/1"}  # the layouts before FORMAT, still read
CONFIG, WEIGHTS = "config.json", "weights.safetensors"
SAVED_FILES = {CONFIG, WEIGHTS, "das.json", "basis.safetensors"}  # what a save (of any version) writes


# ------------------------------------------------------------------------------------------- output folders


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
        theirs = [p for p in path.iterdir() if not (p.is_file() and p.name in SAVED_FILES)]
        other = sorted(p.name + ("/" if p.is_dir() else "") for p in theirs)
        if other:
            shown = ", ".join(other[:5]) + (f", ... ({len(other)} in all)" if len(other) > 5 else "")
            raise FileExistsError(
                f"{what} {str(path)!r} holds files that are not a saved result ({shown}); overwrite=True replaces "
                "only a saved result; choose another path"
            )
    return path


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False, what: str = "output folder") -> Iterator[Path]:
    """Write a folder all at once: ``with atomic_folder(path) as tmp:`` write every file into ``tmp``.

    ``tmp`` is a fresh hidden folder next to ``path`` with a unique name; on leaving the block it is renamed
    to ``path``. A saved result already there (``overwrite=True``) is first moved aside to another unique
    name, then deleted once the new one is in place. On any failure the old result is put back and only what
    this call created is removed (the temporary folder, and parent folders it made): ``path`` holds the
    complete old result or the complete new one, and no other path is touched.

    Example:
        >>> with atomic_folder(tmp / "run") as folder:
        ...     _ = (folder / "config.json").write_text("{}")
        >>> sorted(p.name for p in tmp.iterdir() if p.name.startswith(".run"))   # nothing left behind
        []
    """
    path = check_save_dir(path, overwrite=overwrite, what=what)
    path = Path(os.path.abspath(path))
    made = []  # parent folders this call creates, deepest first
    parent = path.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique(path, "tmp")
    try:
        tmp.mkdir()
        yield tmp
        if path.exists():
            old = _unique(path, "old")
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()  # only if still empty
        raise


def _unique(path: Path, tag: str) -> Path:
    while True:
        p = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.{tag}")
        if not os.path.lexists(p):
            return p


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


def write_file_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write one text file all at once: into a hidden file beside it, then renamed into place (``overwrite``:
    replacing an existing file; otherwise an existing one is refused and kept).

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp())
        >>> write_file_atomic(d / "r.json", "{}").read_text()
        '{}'
        >>> write_file_atomic(d / "r.json", "[]")
        Traceback (most recent call last):
        FileExistsError: ... exists; pass overwrite=True to replace it
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{str(path)!r} is a folder; expected a file path")
    tmp = _unique(path, "tmp")
    try:
        _write_text(tmp, text)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails, leaving the existing file, if one appeared meanwhile
            except FileExistsError:
                raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def write_json(file: Path, obj: dict) -> None:
    """Write a config: one top-level key per line (a list of objects: one per line), values compact."""
    _write_text(Path(file), dumps(obj))


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


def _write_text(file: Path, text: str) -> None:
    with open(file, "w", encoding="utf-8") as f:
        f.write(text)


def write_tensors(file: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors (CPU, contiguous copies)."""
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(file))


# ---------------------------------------------------------------------------------------------- strict reads


def read_json(file: str | os.PathLike) -> dict:
    """The JSON object in ``file``; a damaged file is a :class:`FormatError` naming it."""
    file = Path(file)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(
            f"{file} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): the file is damaged or "
            "was edited by hand; save the result again"
        ) from None
    except UnicodeDecodeError:
        raise FormatError(f"{file} is not a UTF-8 text file: it is damaged; save the result again") from None
    if not isinstance(data, dict):
        raise FormatError(f"{file} holds a JSON {type(data).__name__}; expected an object {{...}}; save it again")
    return data


def read_tensors(file: str | os.PathLike, shapes: dict[str, tuple[int, ...]], *, by: str = CONFIG) -> dict:
    """The tensors in a safetensors ``file``, exactly the names of ``shapes`` with exactly those shapes.

    Missing and unexpected tensors are both refused (a missing basis would otherwise stay random), naming the
    file and the tensors; ``by`` names the file the expected shapes come from.
    """
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing; the folder holds an incomplete result: save it again")
    try:
        tensors = load_file(str(file))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise FormatError(f"cannot read {file}: {e}; the file is damaged; save the result again") from None
    missing, stray = sorted(set(shapes) - set(tensors)), sorted(set(tensors) - set(shapes))
    if missing or stray:
        found = [f"missing tensors {missing}"] * bool(missing) + [f"unexpected tensors {stray}"] * bool(stray)
        raise FormatError(
            f"{file} does not match {by}: {'; '.join(found)}; the files were edited or come from different saves; "
            "save the result again"
        )
    for k, shape in shapes.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(shape) or not t.is_floating_point():
            raise FormatError(
                f"{file}: tensor {k!r} is {t.dtype} of shape {tuple(t.shape)}; expected a float tensor of shape "
                f"{tuple(shape)} (from {by}); save the result again"
            )
    return tensors


_TYPES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
          dict: "an object", type(None): "null"}  # fmt: skip


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
            raise self.error(where, f"{_show(data)}; expected an object with keys {sorted(schema)}")
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
        ok = any((isinstance(value, k) and not isinstance(value, bool)) or (k is float and _real(value)) for k in kinds)
        ok = ok or (bool in kinds and isinstance(value, bool))
        if not ok:
            raise self.error(None, f"{where} is {_show(value)}; expected {' or '.join(_TYPES[k] for k in kinds)}")

    def build(self, where: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, its refusal (a bad value in the file) reported with the file's name."""
        try:
            return fn(*args, **kwargs)
        except FormatError as e:
            raise self.error(where, str(e)) from None
        except (ValueError, TypeError) as e:
            raise self.error(where, f"{e}; the file was edited or written by another version") from None

    def position(self, where: str, data) -> Position:
        return self.build(where, position_from_json, data)

    def site(self, where: str, data) -> Site:
        return self.build(where, site_from_json, data)


KINDS = {"das": ("a DAS result", "DASResult.load(path, lm)"), "reft": ("a ReFT", "reft.load(path, lm)")}


def check_format(config: Config, kind: str) -> str:
    """The file's ``format``: :data:`FORMAT` with ``"kind": kind``, or ``kind``'s previous layout; anything else
    (another kind, another version) is refused with what to do instead."""
    fmt, got = config.data.get("format"), config.data.get("kind")
    if fmt == FORMAT and got == kind or fmt == LEGACY[kind]:
        return fmt
    old = {v: k for k, v in LEGACY.items()}.get(fmt)
    if fmt == FORMAT and got in KINDS or old is not None:
        name, loader = KINDS[got if old is None else old]
        raise config.error(None, f"holds {name}, not {KINDS[kind][0]}; load it with {loader}")
    if fmt == FORMAT:
        raise config.error("kind", f"{got!r} is not a kind this version reads; expected {kind!r}")
    raise config.error(
        "format",
        f"{fmt!r} is not a format this version reads ({FORMAT!r}, or the previous {LEGACY[kind]!r}); a newer "
        "version wrote it, or it was edited: load it with the version that wrote it",
    )


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value) -> str:
    name = next((n for k, n in _TYPES.items() if type(value) is k), type(value).__name__)
    return f"{value!r} ({name})"


# ---------------------------------------------------------------------------------------- positions and sites

_KINDS = {  # kind -> (class, constructor, fields with their JSON types)
    "first": (_p._First, _p.first, {"n": int}),
    "last": (_p._Last, _p.last, {"n": int}),
    "at": (_p._At, _p.at, {"i": int}),
    "span": (_p._Span, _p.span, {"start": int, "stop": int}),
    "token": (_p._Token, _p.token, {"text": str, "occurrence": int}),
    "generated": (_p._Generated, _p.generated, {}),
    "recent": (_p._Recent, _p.recent, {"k": int}),
}
_KIND_OF = {cls: kind for kind, (cls, _, _) in _KINDS.items()}


def position_to_json(pos: Position) -> dict:
    """A position as plain JSON: ``{"kind": "last", "n": 1}``, ``{"kind": "sum", "parts": [...]}``.

    Refuses a position a file could not restore (a user-defined Position subclass), before anything is written.
    """
    if type(pos) is _p.Concat:
        return {"kind": "sum", "parts": [position_to_json(p) for p in pos.items]}
    kind = _KIND_OF.get(type(pos))
    if kind is None:
        raise FormatError(
            f"cannot save position {pos!r}: {type(pos).__qualname__} is not one of interp.positions' kinds "
            f"({', '.join(_KINDS)} and their sums), so a saved file could not restore it; use those kinds"
        )
    return {"kind": kind, **{f: getattr(pos, f) for f in _KINDS[kind][2]}}


def position_from_json(data) -> Position:
    """Inverse of :func:`position_to_json`: ``position_from_json({"kind": "at", "i": -2}) == at(-2)``."""
    if not isinstance(data, dict) or "kind" not in data:
        raise FormatError(f"position {data!r} is not an object with a 'kind'; expected e.g. {{'kind': 'last', 'n': 1}}")
    kind = data["kind"]
    if kind == "sum":
        if set(data) != {"kind", "parts"} or not isinstance(data["parts"], list) or not data["parts"]:
            raise FormatError(f"position {data!r}: a sum has exactly the keys 'kind' and 'parts' (a non-empty list)")
        return _p.Concat(tuple(position_from_json(p) for p in data["parts"]))
    if kind not in _KINDS:
        raise FormatError(f"unknown position kind {kind!r} in {data!r}; known: {', '.join(_KINDS)}, sum")
    _, make, fields = _KINDS[kind]
    unknown, missing = sorted(set(data) - {"kind", *fields}), sorted(set(fields) - set(data))
    if unknown or missing:
        bad = f"unknown field {unknown[0]!r}" if unknown else f"missing field {missing[0]!r}"
        raise FormatError(f"position {data!r}: {bad}; {kind} has the fields {', '.join(fields)}")
    for f, t in fields.items():
        if not isinstance(data[f], t) or isinstance(data[f], bool):
            raise FormatError(f"position {data!r}: {kind}.{f} is {_show(data[f])}; expected {_TYPES[t]}")
    return make(*(data[f] for f in fields))


def site_to_json(site: Site) -> dict:
    """A site as JSON (its position structured); refuses one a file could not restore."""
    if type(site) is not Site:
        raise FormatError(f"cannot save site {site!r}: a {type(site).__name__}, not an interp.Site")
    return {
        "component": site.component,
        "layer": site.layer,
        "pos": position_to_json(site.pos),
        "head": site.head,
        "path": site.path,
        "io": site.io,
    }


SITE = {"component": str, "layer": (int, type(None)), "pos": dict, "head": (int, type(None)),
         "path": (str, type(None)), "io": str}  # fmt: skip


def site_from_json(data) -> Site:
    if not isinstance(data, dict) or set(data) != set(SITE):
        raise FormatError(f"site {data!r} must have exactly the keys {sorted(SITE)}")
    for k, t in SITE.items():
        ts = t if isinstance(t, tuple) else (t,)
        if not isinstance(data[k], ts) or isinstance(data[k], bool):
            raise FormatError(f"site {data!r}: {k} is {_show(data[k])}; expected {' or '.join(_TYPES[x] for x in ts)}")
    pos = position_from_json(data["pos"])
    if data["component"] == "module":
        return Site.module(data["path"], pos, io=data["io"])
    return Site(data["component"], data["layer"], pos, data["head"])


def legacy_position(text: str) -> Position:
    """The position a repr such as ``first(1)+last()`` or ``token(' Mary', occurrence=1)`` stands for (the
    files of the previous layouts stored positions so). Only position constructors, literals and ``+``.
    """
    import ast

    def value(node):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return value(node.left) + value(node.right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _KINDS:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            return _KINDS[node.func.id][1](*args, **kwargs)
        raise ValueError("not a position constructor")

    try:
        return value(ast.parse(str(text), mode="eval").body)
    except (SyntaxError, ValueError, TypeError) as e:
        raise FormatError(
            f"cannot read position {text!r}: {e}; expected e.g. last(), at(-2), first(1)+last()"
        ) from None


# ------------------------------------------------------------------------------------------ model fingerprint

SAMPLE = 4096  # values hashed per parameter


def fingerprint(lm) -> dict:
    """What a saved result records about the model it came from, and checks when loaded.

    ``architecture``, ``d_model``, ``n_layers`` and ``parameters`` (the count); ``shapes``, a hash of every
    parameter's name and shape (a model with other shapes is refused); ``weights``, a hash of every parameter's
    name, shape, dtype and a fixed strided sample of its values: up to 4096 values evenly spaced through the
    flattened tensor (all of them in a small one); ``weights_bf16``, the same sample rounded to bf16 without the
    dtype, so the same checkpoint loaded in float32 or bf16 is recognised. Offloaded parameters (accelerate) are
    read through their hooks. Hashing samples keeps this fast for any model size (0.03 s on
    Gemma-3-270M, so it is not cached); a change that falls between the sampled values goes unnoticed.
    """
    shapes, weights, rounded, n = hashlib.sha256(), hashlib.sha256(), hashlib.sha256(), 0
    tied = set(getattr(lm.hf, "all_tied_weights_keys", None) or ())  # e.g. lm_head.weight: a copy of the embedding
    for name, p in lm.hf.named_parameters():
        if name in tied:  # listed only where offloading broke the tie; the same values as its source
            continue
        n += p.numel()
        sample = _sample(lm, name, p)
        shapes.update(f"{name}:{tuple(p.shape)};".encode())
        weights.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        weights.update(sample.view(torch.uint8).numpy().tobytes())
        rounded.update(f"{name}:{tuple(p.shape)};".encode())
        if sample.is_floating_point():
            sample = sample.to(torch.bfloat16)
        rounded.update(sample.view(torch.uint8).numpy().tobytes())
    return {**lm.spec.fingerprint(), "parameters": n, "shapes": shapes.hexdigest()[:16],
            "weights": weights.hexdigest()[:16], "weights_bf16": rounded.hexdigest()[:16]}  # fmt: skip


def _sample(lm, name: str, p: torch.Tensor) -> torch.Tensor:
    """Up to :data:`SAMPLE` evenly spaced values of parameter ``name`` on the CPU, also when accelerate offloaded
    it (a meta tensor outside a forward: its values are read through the module's hook)."""
    if p.device.type == "meta":
        from .models import onloaded

        path, _, leaf = name.rpartition(".")
        module = lm.hf.get_submodule(path)
        with onloaded(module):
            return _sample(lm, name, getattr(module, leaf))
    t = p.detach().reshape(-1)
    return t[:: max(1, t.numel() // SAMPLE)][:SAMPLE].cpu().contiguous()


MODEL = {"architecture": str, "d_model": int, "n_layers": int}
MODEL_HASHES = {"parameters": int, "shapes": str, "weights": str, "weights_bf16": str}


def check_model(config: Config, saved: dict, lm, *, what: str = "the result") -> None:
    """Refuse a model whose architecture, sizes or parameter shapes differ from those ``saved`` records; warn
    (:class:`WeightsChangedWarning`) when only the weights differ. Files of the previous layouts record no
    hashes: only architecture, d_model and n_layers are compared."""
    config.section("model", MODEL, saved, optional=MODEL_HASHES)
    have = fingerprint(lm) if "shapes" in saved or "weights" in saved else lm.spec.fingerprint()
    diff = [k for k in MODEL if saved[k] != have[k]]
    if diff:
        raise FormatError(
            f"{what} in {str(config.file.parent)!r} was saved from a different model: "
            + ", ".join(f"{k} saved {saved[k]!r}, this model {have[k]!r}" for k in diff)
            + "; load it into the model it was trained on"
        )
    if "shapes" in saved and saved["shapes"] != have["shapes"]:
        raise FormatError(
            f"{what} in {str(config.file.parent)!r} was saved from a model with other parameter shapes (same "
            f"architecture, d_model and n_layers; {saved.get('parameters', '?')} parameters saved, this model "
            f"{have['parameters']}); load it into the model it was trained on"
        )
    # The same weights in another precision (saved from float32, loaded into bf16 or the reverse) agree once
    # rounded to bf16: no warning then.
    same_rounded = "weights_bf16" in saved and saved["weights_bf16"] == have.get("weights_bf16")
    if "weights" in saved and saved["weights"] != have["weights"] and not same_rounded:
        warnings.warn(
            WeightsChangedWarning(
                f"{what} in {str(config.file.parent)!r} was saved from a model with the same shapes but other weights "
                f"(weights hash saved {saved['weights']}, this model {have['weights']}): another checkpoint, dtype "
                "or an edited model; its numbers may not carry over"
            ),
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------ orthogonal parametrisation

_ORIGINAL = "parametrizations.weight.original"
_BASE = "parametrizations.weight.0.base"


def compact_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each orthogonal parametrisation stored as its (rank, d) matrix ``R`` only
    (``<prefix>.weight``): torch keeps a (d, d) ``base`` per parametrisation (1.6 MB at d = 640).

    Example:
        >>> {k: tuple(v.shape) for k, v in compact_state(LowRankRotation(640, rank=1)).items()}
        {'proj.weight': (1, 640)}
    """
    out = {}
    for k, v in module.state_dict().items():
        if k.endswith(_BASE):
            continue
        if k.endswith(_ORIGINAL):
            prefix = k[: -len(_ORIGINAL)]
            v = module.get_submodule(prefix.rstrip(".")).weight  # the materialised R
            k = prefix + "weight"
        out[k] = v.detach().contiguous().cpu()
    return out


@torch.no_grad()
def load_compact(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`compact_state`, reproducing each R bit for bit; ``state`` must have exactly its keys.

    An orthogonal parametrisation of a wide R computes ``R^T = base @ Q(original)``; with ``original = -I``
    the Householder map gives ``Q = [I; 0]`` exactly, so R^T is the first ``rank`` columns of ``base``: set
    them to the saved R^T and complete ``base`` to an orthogonal matrix, so training can continue from there.
    A square R (a full rotation) is ``base @ matrix_exp(original)``: ``base = R`` and ``original = 0``.
    """
    want = {k: tuple(v.shape) for k, v in compact_state(module).items()}
    if set(state) != set(want) or any(tuple(state[k].shape) != want[k] for k in want):
        raise FormatError(
            f"saved weights do not fit {type(module).__name__}: expected { {k: list(s) for k, s in want.items()} }, "
            f"got { {k: list(v.shape) for k, v in state.items()} }"
        )
    plain = {}
    for k, v in state.items():
        prefix = k[: -len("weight")].rstrip(".") if k == "weight" or k.endswith(".weight") else None
        mod = None if prefix is None else module.get_submodule(prefix) if prefix else module
        par = getattr(getattr(mod, "parametrizations", None), "weight", None)
        if par is not None and hasattr(par[0], "base"):
            R = v.to(par.original.dtype)  # (r, d)
            r, d = R.shape
            if r == d:  # a full rotation: not transposed, and matrix_exp(0) = I, so R = base
                par[0].base.copy_(R)
                par.original.zero_()
                continue
            q, _ = torch.linalg.qr(torch.cat([R.T, torch.randn(d, d - r, dtype=R.dtype)], 1))
            par[0].base.copy_(torch.cat([R.T, q[:, r:]], 1))  # (d, d): R^T, then an orthonormal complement
            par.original.copy_(-torch.eye(r, d, dtype=R.dtype))  # wide R, Householder map: Q(-I) = [I; 0]
            continue
        plain[k] = v
    missing, unexpected = module.load_state_dict(plain, strict=False)
    missing = [m for m in missing if not m.endswith((_ORIGINAL, _BASE))]
    if missing or unexpected:
        raise FormatError(
            f"saved weights do not fit {type(module).__name__}: missing {missing}, unexpected {unexpected}"
        )


def same_rng():
    """Building modules to load into draws random numbers: keep the caller's random state as it was."""
    return torch.random.fork_rng(devices=[])


__all__ = [
    "FORMAT",
    "FormatError",
    "WeightsChangedWarning",
    "check_output_dir",
    "check_save_dir",
    "atomic_folder",
    "write_json",
    "write_tensors",
    "read_json",
    "read_tensors",
    "Config",
    "position_to_json",
    "position_from_json",
    "site_to_json",
    "site_from_json",
    "fingerprint",
    "check_model",
    "compact_state",
    "load_compact",
]
