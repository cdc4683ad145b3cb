"""pyreft / pyvene's ``intkey_<key>.bin`` files: read as tensors only, checked, and converted to this package's
interventions (which pyreft class maps to which of ours: :mod:`reft.pyreft`).

Example:
    >>> sorted(KINDS)[:3]                # the pyreft classes read, each with the intervention of ours it becomes
    ['ConsreftIntervention', 'DireftIntervention', 'LobireftIntervention']
    >>> KINDS["LoreftIntervention"].ours.__name__
    'LoReFT'
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from interp import io as _io
from interp import sites as _sites
from interp.io import FormatError

from ..interventions import ConsReFT, DiReFT, LoBiReFT, LoDiReFT, LoReFT, NoReFT, ReftIntervention

if TYPE_CHECKING:  # a representation of config.json (reft.pyreft.config imports this module)
    from .config import Rep

_ROT = "rotate_layer"  # pyreft's LoReFT state_dict() stores the materialised (d, r) matrix under this name
_ROT_ORIGINAL = "rotate_layer.parametrizations.weight.original"  # the other classes keep torch's parametrisation
_ROT_BASE = "rotate_layer.parametrizations.weight.0.base"
_LS = ("learned_source.weight", "learned_source.bias")
_BUFFERS = ("embed_dim", "interchange_dim")  # pyvene's scalar buffers, in every default state_dict


@dataclass(frozen=True)
class _Kind:
    """How one pyreft class is stored (``required``/``optional`` keys) and which of ours computes the same edit."""

    ours: type[ReftIntervention]
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


KINDS = {
    "LoreftIntervention": _Kind(LoReFT, ("weight", "bias", _ROT)),
    "DireftIntervention": _Kind(LoDiReFT, (*_LS, _ROT_ORIGINAL, _ROT_BASE), _BUFFERS),
    "NodireftIntervention": _Kind(DiReFT, (*_LS, "proj_layer.weight"), ("proj_layer.bias", *_BUFFERS)),
    "NoreftIntervention": _Kind(NoReFT, (*_LS, "proj_layer.weight"), ("proj_layer.bias", *_BUFFERS)),
    "ConsreftIntervention": _Kind(ConsReFT, ("learned_source", _ROT_ORIGINAL, _ROT_BASE), _BUFFERS),
    "LobireftIntervention": _Kind(LoBiReFT, ("learned_source", _ROT_ORIGINAL, _ROT_BASE), _BUFFERS),
}


def check_files(cfg: _io.Config, folder: Path, reps: list[Rep]) -> None:
    want = {f"intkey_{r.key}.bin" for r in reps}
    have = {p.name for p in folder.glob("intkey_*.bin")}
    missing, stray = sorted(want - have), sorted(have - want)
    for name in sorted(want & have):  # a named pipe would block the read forever: refused before any is opened
        _io.check_regular(folder / name)
    if missing:
        raise FileNotFoundError(
            f"{folder / missing[0]} is missing: {cfg.file} names {len(want)} intervention(s) "
            f"({', '.join(sorted(want))}); the folder holds {sorted(have) or 'none'}"
        )
    if stray:
        raise cfg.error(
            None,
            f"names no intervention for {folder / stray[0]} (its representations give "
            f"{sorted(want)}); remove files left from another save",
        )
    if (folder / "pytorch_model.bin").exists():
        raise FormatError(
            f"{folder / 'pytorch_model.bin'}: the checkpoint also changes the model's own weights (saved with "
            "include_model=True: LoRA or a classifier head), which from_pyreft does not load; merge them into the "
            "model first and remove the file, or train the head here (reft.ClassifierHead)"
        )


def _read(file: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors, read with ``weights_only=True``: never unpickle anything else. The file's bytes
    are read once from a regular file (a named pipe or a device is refused, naming it)."""
    raw = _io.read_regular(file)
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own message advises weights_only=False: never repeat that
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        code = next((ln for ln in lines if "GLOBAL" in ln), None)
        if code is not None:
            raise FormatError(
                f"{file}: refused: it holds pickled objects other than tensors ({code}). from_pyreft reads tensors "
                "only (torch.load(weights_only=True)) and runs no code from a file; if you trust its source, re-save "
                "its state dict as plain tensors"
            ) from None
        why = next((ln for ln in lines if ln.startswith("Unsupported")), lines[-1] if lines else type(e).__name__)
        raise FormatError(
            f"cannot read {file}: torch.load(weights_only=True) finds no state dict of tensors in it ({why}); the "
            "file is damaged or not a state dict written by torch.save (from_pyreft runs no code from a file)"
        ) from None
    except Exception as e:  # not a torch.save file, truncated, ...
        raise FormatError(
            f"cannot read {file}: {type(e).__name__}: {e}; the file is damaged or not a state dict "
            "written by torch.save"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise FormatError(f"{file} holds a {type(data).__name__}, not a state dict of named tensors (as pyvene saves)")
    return data


def read_intervention(file: Path, rep: Rep, lm) -> tuple[ReftIntervention, dict]:
    """Read ``file`` strictly, check shapes against the site, and build ours with the same edit."""
    kind = KINDS[rep.kind]
    width = _sites.resolve(lm, rep.site).width
    if rep.dim is not None and rep.dim != width:
        raise FormatError(
            f"{file}: config.json gives intervention_dimensions {rep.dim}, but {rep.site!r} of this "
            f"model has width {width}; the checkpoint was trained on another model"
        )
    state = _read(file)
    missing = sorted(set(kind.required) - set(state))
    stray = sorted(set(state) - set(kind.required) - set(kind.optional))
    if missing or stray:
        found = [f"missing {missing}"] * bool(missing) + [f"unexpected {stray}"] * bool(stray)
        raise FormatError(
            f"{file}: {'; '.join(found)} for a {rep.kind} (expected {list(kind.required)}"
            f"{f' and optionally {list(kind.optional)}' if kind.optional else ''}); the file is damaged "
            "or config.json names another intervention class"
        )
    for name in _BUFFERS:
        if name in state and (state[name].numel() != 1 or int(state[name]) != width):
            raise FormatError(
                f"{file}: {name} is {state[name].tolist()}, but {rep.site!r} of this model has width "
                f"{width}; the checkpoint was trained on another model"
            )
    _io.check_finite(state, file)  # NaN or inf in any tensor: refused, naming it
    rank = _rank(file, rep, state, width)
    shapes = _shapes(width, rank)
    for k, want in shapes.items():
        if k in state and (tuple(state[k].shape) != want or not state[k].is_floating_point()):
            raise FormatError(
                f"{file}: tensor {k!r} is {state[k].dtype} of shape {tuple(state[k].shape)}; expected a float tensor "
                f"of shape {want} (d_model={width}, rank={rank}) for a {rep.kind} at {rep.site!r}; the checkpoint was "
                "trained on another model or the file is damaged"
            )
    rot = state.get(_ROT, state.get(_ROT_ORIGINAL))
    tol = 1e-3 if rot is None or rot.dtype in (torch.float32, torch.float64) else 3e-2  # bf16 rounds at ~4e-3
    raw = {k: v.detach().to(torch.float32) for k, v in state.items() if k not in _BUFFERS}
    ours = _convert(file, rep.kind, raw, tol)
    with _io.same_rng():  # building draws random numbers; the caller's stream stays as it was
        iv = kind.ours(width, rank)
        try:
            _io.load_compact(iv, ours, tol=tol)
        except FormatError as e:
            raise FormatError(f"{file}: {e}") from None
    return iv, raw


def _rank(file: Path, rep: Rep, state: dict, width: int) -> int:
    """The rank: config.json's low_rank_dimension, else the size of the learned source."""
    src = state.get("learned_source", state.get("learned_source.weight", state.get("weight")))
    got = src.shape[0] if src is not None and src.dim() >= 1 else None
    rank = rep.rank if rep.rank is not None else got
    if rank is None or not 1 <= rank <= width:
        raise FormatError(
            f"{file}: cannot tell the rank (low_rank_dimension {rep.rank!r}, learned source of shape "
            f"{None if src is None else tuple(src.shape)}); expected 1..{width}"
        )
    return rank


def _shapes(d: int, r: int) -> dict[str, tuple[int, ...]]:
    return {"weight": (r, d), "bias": (r,), _ROT: (d, r), _ROT_ORIGINAL: (d, r), _ROT_BASE: (d, d),
            "learned_source.weight": (r, d), "learned_source.bias": (r,), "learned_source": (r,),
            "proj_layer.weight": (r, d), "proj_layer.bias": (r,)}  # fmt: skip


def _convert(file: Path, kind: str, s: dict, tol: float) -> dict[str, torch.Tensor]:
    """Their tensors -> our intervention's compact state (:func:`interp.io.compact_state` names)."""
    if kind == "LoreftIntervention":
        return {"R.proj.weight": _orthonormal(file, s[_ROT], tol).T, "W.weight": s["weight"], "W.bias": s["bias"]}
    if kind in ("NoreftIntervention", "NodireftIntervention"):
        b = s[_LS[1]]
        if kind == "NoreftIntervention" and "proj_layer.bias" in s:  # W h + b1 - (P h + b2) = W h + (b1 - b2) - P h
            b = b - s["proj_layer.bias"]
        return {"R.weight": s["proj_layer.weight"], "W.weight": s[_LS[0]], "W.bias": b}
    Rw = _orthonormal(file, _parametrised(s[_ROT_ORIGINAL], s[_ROT_BASE]), tol)
    if kind == "DireftIntervention":
        return {"R.proj.weight": Rw.T, "W.weight": s[_LS[0]], "W.bias": s[_LS[1]]}
    return {"R.proj.weight": Rw.T, "b": s["learned_source"]}  # ConsReFT, LoBiReFT


@torch.no_grad()
def _parametrised(original: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """The (d, r) matrix torch's orthogonal parametrisation makes of a saved ``original`` and ``base`` (the
    default map, as pyreft builds ``rotate_layer``)."""
    holder = torch.nn.Module()
    holder.weight = torch.nn.Parameter(torch.eye(*original.shape))
    with _io.same_rng():
        torch.nn.utils.parametrizations.orthogonal(holder)
    holder.load_state_dict({"parametrizations.weight.original": original, "parametrizations.weight.0.base": base})
    return holder.weight.detach().clone()


def _orthonormal(file: Path, Rw: torch.Tensor, tol: float) -> torch.Tensor:
    """pyreft keeps ``rotate_layer``'s columns orthonormal; a matrix far from it was edited or damaged."""
    err = float((Rw.T @ Rw - torch.eye(Rw.shape[1])).abs().max())
    if not err <= tol:
        raise FormatError(
            f"{file}: the rotate_layer columns are not orthonormal (max |Rw^T Rw - I| = {err:.3g}); "
            "pyreft keeps them orthonormal, so the file was edited or is damaged"
        )
    return Rw
