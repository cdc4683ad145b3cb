"""Save and load DAS alignments: safetensors weights + a JSON description; never pickle.

Example:
    >>> path = das.save(tmp / "gender-l6")
    >>> sorted(f.name for f in path.iterdir())
    ['basis.safetensors', 'das.json']
    >>> das = DASResult.load(path, lm)
    >>> DASResult.load(path, interp.LM(tiny_model))   # refuses a model with another fingerprint
    Traceback (most recent call last):
    interp.batches.DASError: the alignment at ... was fitted on {'architecture': 'LlamaForCausalLM', ...} but this
    model is {'architecture': 'GPT2LMHeadModel', ...}; load the same model

The JSON holds the site (its position as the typed expression it prints as, e.g. ``at(-2)``), the basis kind and
shape, the variables and their row blocks, the config, history, IIA and the model fingerprint.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from . import positions as _positions
from .sites import Site
from .subspace import Basis, Boundless, Coordinate, LowRankRotation, Rotation

FORMAT = "interp-das/1"
_POSITIONS = {"last": _positions.last, "first": _positions.first, "at": _positions.at, "span": _positions.span}
_POSITIONS["token"] = _positions.token


def save(result, path, *, overwrite: bool = False) -> Path:
    from .batches import DASError

    path = Path(path)
    files = [path / "basis.safetensors", path / "das.json"]
    if any(f.exists() for f in files) and not overwrite:
        raise FileExistsError(f"{path} already holds a saved alignment; pass overwrite=True or choose another path")
    if path.exists() and not path.is_dir():
        raise DASError(f"{path} is a file; expected a directory to write basis.safetensors and das.json into")
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in result.basis.state_dict().items()}
    tensors["weight"] = result.basis.weight.detach().cpu().contiguous()  # materialised R, for any reader
    save_file(tensors, str(files[0]))
    meta = {
        "format": FORMAT,
        "site": _site_to_dict(result.site),
        "basis": _basis_to_dict(result.basis),
        "variables": list(result.variables),
        "splits": list(result.splits),
        "iia_train": result.iia_train,
        "iia_test": result.iia_test,
        "config": result.config.to_dict(),
        "history": result.history,
        "fingerprint": result.fingerprint,
    }
    files[1].write_text(json.dumps(meta, indent=1))
    return path


def load(path, lm):
    from .batches import DASError
    from .das import DASConfig, DASResult

    path = Path(path)
    files = [path / "basis.safetensors", path / "das.json"]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(f"no saved alignment at {path}: missing {missing}; save one with DASResult.save")
    meta = json.loads(files[1].read_text())
    if meta.get("format") != FORMAT:
        raise DASError(f"{files[1]} has format {meta.get('format')!r}; expected {FORMAT!r}")
    want, have = meta["fingerprint"], lm.spec.fingerprint()
    if want != have:
        raise DASError(f"the alignment at {path} was fitted on {want} but this model is {have}; load the same model")
    tensors = load_file(str(files[0]))
    tensors.pop("weight")
    basis = _basis_from_dict(meta["basis"])
    basis.load_state_dict(tensors)
    basis.to(lm.device)
    cfg = meta["config"]
    cfg["temperature"] = tuple(cfg["temperature"])
    return DASResult(
        site=_site_from_dict(meta["site"]),
        basis=basis,
        variables=tuple(meta["variables"]),
        splits=tuple(meta["splits"]),
        history=meta["history"],
        iia_train=meta["iia_train"],
        iia_test=meta["iia_test"],
        config=DASConfig.from_dict(cfg),
        fingerprint=want,
        lm=lm,
    )


def _site_to_dict(site: Site) -> dict:
    return {
        "component": site.component,
        "layer": site.layer,
        "pos": repr(site.pos),
        "head": site.head,
        "path": site.path,
        "io": site.io,
    }


def _site_from_dict(d: dict) -> Site:
    return Site(d["component"], d["layer"], parse_position(d["pos"]), d["head"], d["path"], d["io"])


def parse_position(text: str) -> _positions.Position:
    """The Position a repr such as ``first(1)+last(1)`` or ``token(' Mary', occurrence=1)`` stands for.

    Only the position constructors, literal arguments and ``+`` are accepted (no eval).
    """
    try:
        return _eval(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, TypeError) as e:
        raise ValueError(
            f"cannot read position {text!r}: {e}; expected e.g. last(), at(-2), span(1, 4), first(1)+last(1)"
        ) from None


def _eval(node):
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _eval(node.left) + _eval(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _POSITIONS:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        return _POSITIONS[node.func.id](*args, **kwargs)
    raise ValueError(f"unexpected expression {ast.dump(node)[:60]}")


def _basis_to_dict(b: Basis) -> dict:
    d = {"kind": type(b).__name__, "d_model": b.d_model, "rank": b.rank}
    if isinstance(b, Boundless):
        d["temperature"] = b.temperature
    if isinstance(b, Coordinate):
        d["dims"] = b.weight.argmax(-1).tolist()
    return d


def _basis_from_dict(d: dict) -> Basis:
    kind = d["kind"]
    if kind == "Boundless":
        return Boundless(d["d_model"], temperature=d["temperature"])
    if kind == "Rotation":
        return Rotation(d["d_model"])
    if kind == "LowRankRotation":
        return LowRankRotation(d["d_model"], d["rank"])
    if kind == "Coordinate":
        return Coordinate(d["d_model"], d["dims"])
    raise ValueError(f"unknown basis kind {kind!r}; known: LowRankRotation, Rotation, Boundless, Coordinate")
