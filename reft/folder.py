"""A ReFT's folder on disk: ``config.json`` + ``weights.safetensors`` in :mod:`interp.io`'s format, one commit.

Example:
    >>> path = write(rlm, tmp / "style")
    >>> read(path, lm).interventions[0].rank
    4

``config.json`` (``"format": "interp/2"``, ``"kind": "reft"``) records the model fingerprint, ``tied``, each
intervention's class and constructor arguments, per placement the site (its positions structured), the part and
the intervention, the classifier head's size if there is one, and the weights' SHA-256. ``weights.safetensors``
holds the interventions' (``"<i>.<name>"``) and the head's (``"head.<name>"``) weights, each orthonormal basis as
its rank x d rows. A read resolves every site and compares each intervention's width with its sites' widths in the
model, and each rank with its width, before anything is built or the weights' data is read; it refuses weights
that are not finite and bases whose rows are not orthonormal. :func:`reft.save` and :func:`reft.load` call this
for local folders (:mod:`reft.hub` for ``hf://`` paths).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from interp import io as _io
from interp import sites as _sites

from .head import ClassifierHead
from .interventions import REGISTRY, ReftIntervention
from .model import Placement, ReftModel, check_head, to_model

_KEYS = {"format": str, "kind": str, "model": dict, "tied": bool, "interventions": list, "placements": list,
         "head": (dict, type(None))}  # fmt: skip
_PLACEMENT = {"site": dict, "part": (int, type(None)), "intervention": int}


def write(rlm: ReftModel, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the folder ``path`` in one commit (:func:`interp.io.save_result`); refuses, before writing, an
    intervention class, position or head that a read could not rebuild."""
    _io.check_save_dir(path, overwrite=overwrite, what="ReFT folder")
    index = {id(iv): i for i, iv in enumerate(rlm.interventions)}
    ivs = [_describe(iv) for iv in rlm.interventions]
    placements = [
        {"site": _io.site_to_json(pl.site), "part": pl.part, "intervention": index[id(pl.intervention)]}
        for pl in rlm.placements
    ]
    head = None
    if rlm.head is not None:
        if type(rlm.head) is not ClassifierHead:
            raise _io.FormatError(f"cannot save a {type(rlm.head).__qualname__} head: a load rebuilds a ClassifierHead")
        head = {"d_model": rlm.head.in_features, "n_labels": rlm.head.out_features}
    config = {
        "format": _io.FORMAT,
        "kind": "reft",
        "model": _io.fingerprint(rlm.lm),
        "tied": rlm.tied,
        "interventions": ivs,
        "placements": placements,
        "head": head,
    }
    try:
        json.dumps(config)  # what JSON cannot hold fails here, before anything is written
    except (TypeError, ValueError) as e:
        raise _io.FormatError(f"cannot save these interventions: {e} (in an intervention's config())") from None
    tensors = {f"{i}.{k}": v for i, iv in enumerate(rlm.interventions) for k, v in _io.compact_state(iv).items()}
    if rlm.head is not None:
        tensors.update({f"head.{k}": v for k, v in rlm.head.state_dict().items()})
    return _io.save_result(path, config, tensors, overwrite=overwrite, what="ReFT folder")


def _describe(iv: ReftIntervention) -> dict:
    """``{"class", "config"}``, checked now: the class is the registered one of its name and its config rebuilds
    an intervention with the same weights' names and shapes."""
    name = type(iv).__name__
    if REGISTRY.get(name) is not type(iv):
        other = REGISTRY.get(name)
        why = f"another class named {name!r} ({other.__module__}) registered later" if other else "it is not registered"
        raise _io.FormatError(
            f"cannot save a {type(iv).__qualname__}: a load finds intervention classes by name and {why}; "
            "give each ReftIntervention subclass its own name"
        )
    cfg = dict(iv.config())
    with _io.same_rng():
        try:
            fresh = type(iv)(cfg.pop("d_model"), cfg.pop("rank"), **cfg)
        except (TypeError, ValueError, KeyError) as e:
            raise _io.FormatError(
                f"cannot save a {name}: its config() {iv.config()} does not rebuild it ({type(e).__name__}: {e}); "
                "pass extra constructor options to ReftIntervention.__init__ as keywords so config() records them"
            ) from None
    have = {k: tuple(v.shape) for k, v in _io.compact_state(iv).items()}
    want = {k: tuple(v.shape) for k, v in _io.compact_state(fresh).items()}
    if have != want:
        raise _io.FormatError(
            f"cannot save a {name}: its config() {iv.config()} rebuilds one with weights {want}, but it has {have}; "
            "record every constructor option in config()"
        )
    return {"class": name, "config": iv.config()}


def read(path: str | os.PathLike, lm) -> ReftModel:
    """Rebuild the :class:`ReftModel` saved in the local folder ``path`` on ``lm`` (one consistent snapshot of
    the folder, :func:`interp.io.read_consistent`)."""
    path = Path(path)
    _io.clean_leftovers(path.parent, path.name)  # first: a killed fallback commit's old result is put back

    def missing() -> FileNotFoundError:
        return FileNotFoundError(f"no ReFT run at {str(path)!r} (expected config.json and weights.safetensors)")

    return _io.read_consistent(path, lambda snap: _rebuild(snap, lm), missing=missing)


def _rebuild(snap: _io.Snapshot, lm) -> ReftModel:
    cfg = snap.config
    if _io.check_format(cfg, "reft") != _io.FORMAT:
        cfg = _io.Config(cfg.file, _upgrade(cfg))
    d = cfg.section(None, _KEYS)
    _io.check_model(cfg, d["model"], lm, what="the ReFT")
    specs = [_spec(cfg, f"interventions[{i}]", s) for i, s in enumerate(d["interventions"])]
    placed = [_placement(cfg, j, p, len(specs), lm) for j, p in enumerate(d["placements"])]
    for i, (_, args) in enumerate(specs):  # sizes against the model, before anything of their size is built
        where = f"interventions[{i}].config"
        sites = [(site, target.width) for site, target, k, _ in placed if k == i]
        if not sites:
            raise cfg.error(f"interventions[{i}]", "is placed at no site; the file was edited")
        for site, width in sites:
            if args["d_model"] != width:
                raise cfg.error(
                    f"{where}.d_model",
                    f"{args['d_model']}, but the intervention is placed at {site!r}, of width {width} in this model: "
                    "the file was edited or saved from another model",
                )
        cfg.size(f"{where}.rank", args["rank"], 1, args["d_model"])
    head = None
    if d["head"] is not None:
        h = cfg.section("head", {"d_model": int, "n_labels": int}, d["head"])
        cfg.size("head.d_model", h["d_model"], lm.d_model, lm.d_model)
        cfg.size("head.n_labels", h["n_labels"], 2, max(2, lm.spec.vocab_size))
        head = cfg.build("head", ClassifierHead, h["d_model"], h["n_labels"])
    with _io.same_rng():  # building interventions draws random numbers; the caller's stream stays as it was
        ivs = [cfg.build(f"interventions[{i}]", cls, args["d_model"], args["rank"], **args["options"])
               for i, (cls, args) in enumerate(specs)]  # fmt: skip  # float32, kept on any model dtype
    shapes = {f"{i}.{k}": tuple(v.shape) for i, iv in enumerate(ivs) for k, v in _io.compact_state(iv).items()}
    if head is not None:
        shapes.update({f"head.{k}": tuple(v.shape) for k, v in head.state_dict().items()})
    weights = snap.tensors(shapes)
    with _io.same_rng():
        for i, iv in enumerate(ivs):
            state = {k.split(".", 1)[1]: v for k, v in weights.items() if k.split(".", 1)[0] == str(i)}
            try:
                _io.load_compact(iv, state)
            except _io.FormatError as e:
                raise _io.FormatError(f"{snap.weights_file}: intervention {i}: {e}") from None
    placements = []
    for j, (site, target, i, part) in enumerate(placed):
        cfg.build(f"placements[{j}]", ivs[i].check, target.width)
        placements.append(Placement(site, target, ivs[i], part))
    for iv in ivs:
        to_model(iv, lm)
    if head is not None:
        head.load_state_dict({k[len("head.") :]: v for k, v in weights.items() if k.startswith("head.")})
        cfg.build("head", check_head, head, lm)
        to_model(head, lm)
    for p in lm.hf.parameters():
        p.requires_grad_(False)
    return ReftModel(lm, placements, tied=d["tied"], head=head)


def _spec(cfg: _io.Config, where: str, spec) -> tuple[type, dict]:
    """An intervention's class and its constructor arguments (``d_model``, ``rank``, ``options``), checked."""
    spec = cfg.section(where, {"class": str, "config": dict}, spec)
    cls = REGISTRY.get(spec["class"])
    if cls is None:
        raise cfg.error(
            where,
            f"unknown intervention class {spec['class']!r}; import the module that defines it before loading "
            f"(subclasses of ReftIntervention register themselves; known: {', '.join(sorted(REGISTRY))})",
        )
    args = dict(spec["config"])
    cfg.section(f"{where}.config", {"d_model": int, "rank": int}, {k: args.get(k) for k in ("d_model", "rank")})
    return cls, {"d_model": args.pop("d_model"), "rank": args.pop("rank"), "options": args}


def _placement(cfg: _io.Config, j: int, p, n_ivs: int, lm) -> tuple:
    """``(site, target, intervention index, part)`` of ``placements[j]``: its site resolved in ``lm`` (pure)."""
    where = f"placements[{j}]"
    p = cfg.section(where, _PLACEMENT, p)
    site = _io.read_site(cfg, f"{where}.site", p["site"])
    if not 0 <= p["intervention"] < n_ivs:
        raise cfg.error(where, f"intervention {p['intervention']} does not exist (the file has {n_ivs})")
    n_parts = len(site.pos.parts)
    if p["part"] is not None and not 0 <= p["part"] < n_parts:
        raise cfg.error(where, f"part {p['part']} does not exist: {site.pos!r} has {n_parts} part(s)")
    target = cfg.build(f"{where}.site", _sites.resolve, lm, site)
    return site, target, p["intervention"], p["part"]


def _upgrade(cfg: _io.Config) -> dict:
    """A config of the previous layout (``reft-interventions/1``: positions as their repr, sites in short form)
    in the current one; saving the loaded ReFT again writes it."""
    old = cfg.section(None, {k: v for k, v in _KEYS.items() if k != "kind"} | {"dtype": str})
    placements = []
    for j, p in enumerate(old["placements"]):
        where = f"placements[{j}]"
        p = cfg.section(where, {**_PLACEMENT, "positions": str}, p)
        pos = _io.position_to_json(cfg.build(f"{where}.positions", _io.legacy_position, p["positions"]))
        s = p["site"]
        if "module" in s:
            s = cfg.section(f"{where}.site", {"module": str, "io": str}, s)
            site = {"component": "module", "layer": None, "pos": pos, "head": None, "path": s["module"], "io": s["io"]}
        else:
            s = cfg.section(f"{where}.site", {"component": str, "layer": int, "head": (int, type(None))}, s)
            site = {**s, "pos": pos, "path": None, "io": "output"}
        placements.append({"site": site, "part": p["part"], "intervention": p["intervention"]})
    new = {k: v for k, v in old.items() if k != "dtype"}
    return {**new, "format": _io.FORMAT, "kind": "reft", "placements": placements}


__all__ = ["write", "read"]
