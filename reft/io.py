"""Save and load trained interventions: ``config.json`` + ``weights.safetensors`` (:mod:`interp.io`'s format).

Example:
    >>> path = save(rlm, tmp / "style")               # a few KB for a rank-4 LoReFT
    >>> rlm2 = load(path, lm)                         # checks the model fingerprint first
    >>> h = torch.randn(2, lm.d_model)
    >>> torch.equal(rlm2.interventions[0](h), rlm.interventions[0](h))   # bit-identical
    True
    >>> save(rlm, path)
    Traceback (most recent call last):
    FileExistsError: ReFT folder '.../style' already exists and is not empty; pass overwrite=True (CLI: --overwrite)
    or choose another path

``config.json`` (``"format": "interp/2"``, ``"kind": "reft"``) records the model fingerprint, ``tied``, each
intervention's class and constructor arguments, per placement the site (its positions structured, e.g.
``{"kind": "token", "text": " Mary", "occurrence": 0}``), the part and the intervention, and the classifier
head's size if there is one. ``weights.safetensors`` holds the interventions' (``"<i>.<name>"``) and the head's
(``"head.<name>"``) weights, each orthonormal basis as its rank x d rows; a reload is bit-identical. A save
refuses, before writing anything, what a load could not rebuild; folders of the previous layout
(``reft-interventions/1``) still load.

One intervention at several sites (``at_layers(..., share=True)``) is one entry of ``"interventions"`` that
several placements name, so its weights are written once and a load puts the one rebuilt object at every site.
A path ``"hf://owner/name"`` saves to / loads from the Hugging Face Hub (:mod:`reft.hub`), with a model card.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from interp import io as _io
from interp import sites as _sites

from .interventions import REGISTRY, ReftIntervention
from .model import Placement, ReftModel, check_head, to_model

_KEYS = {"format": str, "kind": str, "model": dict, "tied": bool, "interventions": list, "placements": list,
         "head": (dict, type(None))}  # fmt: skip
_PLACEMENT = {"site": dict, "part": (int, type(None)), "intervention": int}


def save(rlm: ReftModel, path: str | os.PathLike, *, overwrite: bool = False, task: str | None = None) -> Path | str:
    """Write the folder ``path`` (``config.json``, ``weights.safetensors``) all at once: a failed save leaves
    the old result (``overwrite=True``) or nothing. Refuses, before writing, an intervention class, position
    or head that a load could not rebuild.

    ``path="hf://owner/name"`` uploads the same folder plus a model card ``README.md`` to the Hugging Face Hub
    (:func:`reft.hub.push`; ``task`` names the task there; a Hub save is a new commit, so ``overwrite`` does not
    apply) and returns ``path``. A local folder gets no model card (:func:`reft.hub.model_card` writes one).
    """
    from . import hub

    if hub.is_hub(path):
        return hub.push(rlm, path, task=task)
    _io.check_save_dir(path, overwrite=overwrite, what="ReFT folder")
    index = {id(iv): i for i, iv in enumerate(rlm.interventions)}
    ivs = [_describe(iv) for iv in rlm.interventions]
    placements = [
        {"site": _io.site_to_json(pl.site), "part": pl.part, "intervention": index[id(pl.intervention)]}
        for pl in rlm.placements
    ]
    head = None
    if rlm.head is not None:
        from .head import ClassifierHead

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
    with _io.atomic_folder(path, overwrite=overwrite, what="ReFT folder") as tmp:
        _io.write_json(tmp / _io.CONFIG, config)
        _io.write_tensors(tmp / _io.WEIGHTS, tensors)
    return Path(path)


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


def load(path: str | os.PathLike, lm) -> ReftModel:
    """Rebuild a saved :class:`ReftModel` on ``lm``.

    Refuses a model of another architecture, size or parameter shapes, and warns
    (:class:`interp.errors.WeightsChangedWarning`) when only its weights differ; refuses edited or damaged files,
    naming the file and the key or tensor. ``path="hf://owner/name"`` (``@revision`` optional) downloads the
    folder from the Hugging Face Hub first (:func:`reft.hub.pull`).
    """
    if hasattr(path, "hf") and not hasattr(lm, "hf"):
        raise TypeError(
            f"reft.load(path, lm): the folder comes first, then the model (as in DASResult.load); got a model, then "
            f"{lm!r}: call reft.load({str(lm)!r}, lm)"
        )
    from . import hub

    if hub.is_hub(path):
        path = hub.pull(path)
    path = Path(path)
    file = path / _io.CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"no ReFT run at {str(path)!r} (expected config.json and weights.safetensors)")
    cfg = _io.Config(file)
    if _io.check_format(cfg, "reft") != _io.FORMAT:
        cfg = _io.Config(file, _upgrade(cfg))
    d = cfg.section(None, _KEYS)
    _io.check_model(cfg, d["model"], lm, what="the ReFT")
    with _io.same_rng():  # building interventions draws random numbers; the caller's stream stays as it was
        ivs = [_build(cfg, f"interventions[{i}]", spec) for i, spec in enumerate(d["interventions"])]
    head = None
    if d["head"] is not None:
        from .head import ClassifierHead

        h = cfg.section("head", {"d_model": int, "n_labels": int}, d["head"])
        head = cfg.build("head", ClassifierHead, h["d_model"], h["n_labels"])
    shapes = {f"{i}.{k}": tuple(v.shape) for i, iv in enumerate(ivs) for k, v in _io.compact_state(iv).items()}
    if head is not None:
        shapes.update({f"head.{k}": tuple(v.shape) for k, v in head.state_dict().items()})
    weights = _io.read_tensors(path / _io.WEIGHTS, shapes)
    with _io.same_rng():
        for i, iv in enumerate(ivs):
            _io.load_compact(iv, {k.split(".", 1)[1]: v for k, v in weights.items() if k.split(".", 1)[0] == str(i)})
    placements = []
    for j, p in enumerate(d["placements"]):
        where = f"placements[{j}]"
        p = cfg.section(where, _PLACEMENT, p)
        site = cfg.site(f"{where}.site", p["site"])
        if not 0 <= p["intervention"] < len(ivs):
            raise cfg.error(where, f"intervention {p['intervention']} does not exist (the file has {len(ivs)})")
        n_parts = len(site.pos.parts)
        if p["part"] is not None and not 0 <= p["part"] < n_parts:
            raise cfg.error(where, f"part {p['part']} does not exist: {site.pos!r} has {n_parts} part(s)")
        target = cfg.build(f"{where}.site", _sites.resolve, lm, site)
        iv = ivs[p["intervention"]]
        cfg.build(where, iv.check, target.width)
        placements.append(Placement(site, target, iv, p["part"]))
    for iv in ivs:
        to_model(iv, lm)
    if head is not None:
        head.load_state_dict({k[len("head.") :]: v for k, v in weights.items() if k.startswith("head.")})
        cfg.build("head", check_head, head, lm)
        to_model(head, lm)
    for p in lm.hf.parameters():
        p.requires_grad_(False)
    return ReftModel(lm, placements, tied=d["tied"], head=head)


def _build(cfg: _io.Config, where: str, spec) -> ReftIntervention:
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
    return cfg.build(where, cls, args.pop("d_model"), args.pop("rank"), **args)  # float32, kept on any model dtype


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
