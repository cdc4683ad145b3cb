"""A DAS result's folder: ``config.json`` (``"kind": "das"``) and ``weights.safetensors`` (the rows R).

Example:
    >>> from interp.das import Alignment, DASConfig
    >>> path = save_das(das, tmp / "gender-l1")
    >>> fields = load_das(path, lm, make_config=DASConfig.from_dict, make_alignment=Alignment)
    >>> torch.equal(fields["basis"].weight, das.basis.weight), fields["site"]
    (True, Site('resid_post', 1, last()))

``config.json`` holds the site, the basis kind and shape, the variables and their row blocks, the DAS config, the
history (one list per field), the IIA, the model's fingerprint and the weights' SHA-256; ``weights.safetensors``
holds the basis rows R (rank x d) and, for Boundless, its boundary (a DBM ``Mask``: its logits, and its rows or its
SAE's weights, :mod:`interp.io.featurizers`). A load compares the basis's width with the
site's width in the model and its rank with the width before reading the weights' data or building anything, and
refuses rows that are not orthonormal (:func:`interp.io.state.check_orthonormal`) or not finite. Rows stored in
float16 or bfloat16 load as float32. :meth:`interp.DASResult.save` and :meth:`~interp.DASResult.load` call this.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .. import sites as _sites
from ..errors import FormatError
from ..subspace import Basis, Boundless, Coordinate, LowRankRotation, Rotation
from . import featurizers as feat
from .commit import clean_leftovers
from .fingerprint import MODEL, check_model, fingerprint
from .paths import CONFIG
from .positions import SITE, legacy_position, position_to_json, read_site, site_to_json
from .schema import FORMAT, Config, check_format
from .snapshot import Snapshot, read_consistent, save_result
from .state import check_orthonormal, load_compact, same_rng, tolerance

_NUMBER = (float, type(None))
KEYS = {"format": str, "kind": str, "model": dict, "site": dict, "basis": dict, "variables": list, "splits": list,
        "iia_train": _NUMBER, "iia_test": _NUMBER, "config": dict, "history": dict}  # fmt: skip
BASES = {"LowRankRotation": LowRankRotation, "Rotation": Rotation, "Boundless": Boundless, "Coordinate": Coordinate}
BASES |= feat.KINDS  # Fixed, Mask (DBM): interp.io.featurizers
_BASIS_EXTRA = {"Boundless": {"temperature": float}, "Coordinate": {"dims": list}}  # keys beyond kind, d_model, rank


def save_das(result, path, *, overwrite: bool = False) -> Path:
    """Write ``result`` (a :class:`interp.DASResult`) to the folder ``path`` in one commit; refuses, before writing
    anything, what a load could not restore (a user-defined Position or Basis subclass, no model fingerprint)."""
    b = result.basis
    kind = type(b).__name__
    if BASES.get(kind) is not type(b):
        raise FormatError(
            f"cannot save a DAS result with a {type(b).__qualname__} basis: a saved result restores only "
            f"{', '.join(BASES)}; fit with one of those"
        )
    basis = {"kind": kind, "d_model": b.d_model, "rank": b.rank}
    tensors = {"R": b.weight} if kind not in feat.KINDS else {}  # (rank, d)
    if kind in feat.KINDS:
        extra, tensors = feat.describe(b)
        basis |= extra
    try:
        if "R" in tensors:
            check_orthonormal(tensors["R"], "R")
    except FormatError:  # a save refuses what its load would refuse
        raise FormatError(
            "cannot save this DAS result: its basis rows are not orthonormal (NaN or inf in its parameters, or a "
            "diverged fit), and a load would refuse it; fit again (training stops at the first non-finite loss)"
        ) from None
    if isinstance(b, Boundless):
        basis["temperature"], tensors["boundary"] = b.temperature, b.boundary
    if isinstance(b, Coordinate):
        basis["dims"] = b.weight.argmax(-1).tolist()
    model = result.fingerprint
    if result.lm is not None and "weights" not in model:
        model = fingerprint(result.lm)
    if not set(MODEL) <= set(model):
        raise FormatError(
            "cannot save a DAS result with no model fingerprint (no lm attached); load or fit it with a model"
        )
    config = {
        "format": FORMAT,
        "kind": "das",
        "model": model,
        "site": site_to_json(result.site),
        "basis": basis,
        "variables": list(result.variables),
        "splits": list(result.splits),
        "iia_train": result.iia_train,
        "iia_test": result.iia_test,
        "config": result.config.to_dict(),
        "history": columns(result.history),
    }
    try:
        json.dumps(config)  # what JSON cannot hold fails here, before anything is written
    except (TypeError, ValueError) as e:
        raise FormatError(f"cannot save this DAS result: {e} (in its config or history)") from None
    return save_result(path, config, tensors, overwrite=overwrite, what="DAS result folder")


def load_das(path, lm, *, make_config: Callable[[dict], object], make_alignment: Callable) -> dict:
    """The fields of the :class:`interp.DASResult` saved at ``path``, rebuilt on ``lm`` (``make_config``: the
    DAS config from its dict; ``make_alignment(basis, splits)``: refuses splits that do not fit the basis)."""
    if hasattr(path, "hf") and not hasattr(lm, "hf"):
        raise TypeError(f"DASResult.load(path, lm): the folder comes first, then the model; got a model, then {lm!r}")
    path = Path(path)
    clean_leftovers(path.parent, path.name)  # first: a killed fallback commit's old result is put back
    hooks = (make_config, make_alignment)
    if not os.path.lexists(path / CONFIG) and (path / "das.json").is_file():
        return read_consistent(
            path, lambda snap: _legacy(snap, lm, hooks), config="das.json", weights="basis.safetensors"
        )

    def build(snap: Snapshot) -> dict:
        check_format(snap.config, "das")
        return _restore(snap.config, snap.config.section(None, KEYS), lm, snap, hooks)

    def missing() -> FileNotFoundError:
        return FileNotFoundError(
            f"no saved DAS result at {str(path)!r} (expected config.json and weights.safetensors); "
            "save one with DASResult.save(path)"
        )

    return read_consistent(path, build, missing=missing)


def _restore(cfg: Config, d: dict, lm, snap: Snapshot, hooks, legacy_read=None) -> dict:
    check_model(cfg, d["model"], lm, what="the DAS result")
    site = read_site(cfg, "site", d["site"])
    target = cfg.build("site", _sites.resolve, lm, site)
    kind = d["basis"].get("kind") if isinstance(d["basis"], dict) else None
    if kind not in BASES:
        raise cfg.error("basis.kind", f"unknown basis kind {kind!r}; known: {', '.join(BASES)}")
    extra = {**_BASIS_EXTRA, **feat.EXTRA}.get(kind, {})
    b = cfg.section("basis", {"kind": str, "d_model": int, "rank": int, **extra}, d["basis"])
    width = target.width  # sizes checked against the model before anything of their size is read or built
    if b["d_model"] != width:
        raise cfg.error(
            "basis.d_model",
            f"{b['d_model']}, but {site!r} of this model has width {width}: the file was edited or saved from "
            "another model",
        )
    if kind in feat.KINDS:
        if kind == "Mask" and b["features"] == "sae":
            cfg.section("basis.sae", feat.SAE_KEYS, b["sae"])
        cfg.size("basis.rank", b["rank"], 1, width if kind == "Fixed" or b["features"] == "rows" else 1 << 24)
        shapes = cfg.build("basis", feat.shapes, kind, b, b["d_model"], b["rank"])
        with same_rng():
            basis = cfg.build("basis", feat.build, kind, b, b["d_model"], b["rank"], snap.tensors(shapes))
        return _finish(cfg, d, basis, site, width, hooks, lm)
    cfg.size("basis.rank", b["rank"], 1, width)
    shapes = {"R": (b["rank"], b["d_model"])} | ({"boundary": ()} if kind == "Boundless" else {})
    tensors = legacy_read(shapes) if legacy_read else snap.tensors(shapes)
    R = tensors["R"]
    dtype = torch.float64 if R.dtype == torch.float64 else torch.float32  # float16 / bfloat16 rows: upcast
    where = f"{snap.weights_file}: tensor 'R'"
    with same_rng():  # building a basis draws random numbers; the caller's stream stays as it was
        basis = _build(cfg, b, dtype)
        if basis.rank != b["rank"]:
            raise cfg.error("basis", f"a {kind} of d_model {b['d_model']} has rank {basis.rank}, not {b['rank']}")
        if kind == "Coordinate":
            if not torch.equal(R.to(basis.weight.dtype), basis.weight):
                raise cfg.error("basis.dims", f"dims {b['dims']} do not match the saved rows R")
        else:
            check_orthonormal(R, where)
            state = {"proj.weight": R} | ({"boundary": tensors["boundary"]} if kind == "Boundless" else {})
            try:
                load_compact(basis, state, tol=tolerance(R.dtype))
            except FormatError as e:
                raise FormatError(f"{snap.weights_file}: {e}") from None
    return _finish(cfg, d, basis, site, width, hooks, lm)


def _finish(cfg: Config, d: dict, basis: Basis, site, width: int, hooks, lm) -> dict:
    make_config, make_alignment = hooks
    cfg.build("basis", basis.check_width, width, f"vectors at {site!r}")
    for key, t in (("variables", str), ("splits", int)):
        for x in d[key]:
            cfg.check(key, x, t)
    if len(d["variables"]) != len(d["splits"]):
        raise cfg.error("splits", f"{len(d['splits'])} row blocks for {len(d['variables'])} variables {d['variables']}")
    cfg.build("splits", make_alignment, basis, tuple(d["splits"]))
    config = cfg.build("config", make_config, d["config"])
    cols = d["history"]
    if any(not isinstance(v, list) for v in cols.values()) or len({len(v) for v in cols.values()}) > 1:
        raise cfg.error("history", "expected one list per field, all of the same length")
    n = len(next(iter(cols.values()), []))
    history = [{k: v[i] for k, v in cols.items() if v[i] is not None} for i in range(n)]
    basis.to(lm.device)
    return dict(site=site, basis=basis, variables=tuple(d["variables"]), splits=tuple(d["splits"]), history=history,
                iia_train=d["iia_train"], iia_test=d["iia_test"], config=config, fingerprint=d["model"],
                lm=lm)  # fmt: skip


def _legacy(snap: Snapshot, lm, hooks) -> dict:
    """A folder of the previous layout (``das.json``, ``interp-das/1``; ``basis.safetensors`` with the basis's
    whole state dict); saving the loaded result again writes the current layout."""
    cfg = snap.config
    check_format(cfg, "das")
    old = {k: v for k, v in KEYS.items() if k not in ("kind", "model")} | {"history": list, "fingerprint": dict}
    d = cfg.section(None, old)
    site = cfg.section("site", {**SITE, "pos": str}, d["site"])
    for h in d["history"]:
        cfg.check("history", h, dict)

    def read(shapes):  # the basis dict and its width are checked by then
        with same_rng():
            fresh = _build(cfg, d["basis"], torch.float32)
        want = {k: tuple(v.shape) for k, v in fresh.state_dict().items()} | {"weight": shapes["R"]}
        t = snap.tensors(want, by="das.json")
        return {"R": t["weight"]} | ({"boundary": t["boundary"]} if "boundary" in shapes else {})

    new = {
        **{k: d[k] for k in ("basis", "variables", "splits", "iia_train", "iia_test", "config")},
        "model": d["fingerprint"],
        "site": {**site, "pos": position_to_json(cfg.build("site.pos", legacy_position, site["pos"]))},
        "history": columns(d["history"]),
    }
    return _restore(cfg, new, lm, snap, hooks, legacy_read=read)


def columns(history: list[dict]) -> dict[str, list]:
    """History records -> one list per field (None where a record lacks it): a third of the size in JSON."""
    return {k: [h.get(k) for h in history] for k in dict.fromkeys(k for h in history for k in h)}


def _build(cfg: Config, b: dict, dtype) -> Basis:
    kind = b["kind"]
    if kind == "Coordinate":
        return cfg.build("basis", Coordinate, b["d_model"], b["dims"])
    if kind == "LowRankRotation":
        return cfg.build("basis", LowRankRotation, b["d_model"], b["rank"], dtype=dtype)
    if kind == "Rotation":
        return cfg.build("basis", Rotation, b["d_model"], dtype=dtype)
    return cfg.build("basis", Boundless, b["d_model"], temperature=b["temperature"], dtype=dtype)


__all__ = ["save_das", "load_das", "columns", "BASES"]
