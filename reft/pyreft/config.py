"""pyreft / pyvene's ``config.json``: its representations read and checked, each with the site it edits here.

Example:
    >>> class_name("<class 'pyreft.interventions.LoreftIntervention'>")
    ('pyreft.interventions', 'LoreftIntervention')
    >>> FIELDS[:5]                       # pyvene's RepresentationConfig, in the order config.json lists them
    ('layer', 'component', 'unit', 'max_number_of_units', 'low_rank_dimension')

:func:`reft.from_pyreft` (in :mod:`reft.pyreft`) reads a checkpoint with it; the weights are read by
:mod:`reft.pyreft.weights`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from interp import io as _io
from interp import sites as _sites
from interp.positions import last
from interp.sites import Site, SiteError

from .weights import KINDS

# pyvene's RepresentationConfig, in its order (config.json stores each one as a list; older versions stop earlier)
FIELDS = ("layer", "component", "unit", "max_number_of_units", "low_rank_dimension", "intervention_type",
           "intervention", "subspace_partition", "group_key", "intervention_link_key", "moe_key",
           "source_representation", "hidden_source_representation", "latent_dim")  # fmt: skip
DEFAULTS = dict(zip(FIELDS, (0, "block_output", "pos", 1) + (None,) * 10))
# config.json: what IntervenableConfig.save_pretrained writes (transformers' bookkeeping included)
REQUIRED = {"representations": list, "intervention_types": list}
_NONE = type(None)
OPTIONAL = {"sorted_keys": list, "mode": str, "model_type": (str, _NONE), "intervention_dimensions": list,
             "intervention_constant_sources": list, "transformers_version": str, "_name_or_path": str,
             "architectures": (list, _NONE), "torch_dtype": (str, _NONE), "dtype": (str, _NONE)}  # fmt: skip
_ABSTRACT = ("block_output", "block_input", "mlp_output", "attention_output")  # pyvene's names that map here
_SUPPORTED = (
    "block_output (resid_post), block_input (resid_pre), mlp_output, attention_output, or a module path "
    "such as 'model.layers[3].output'"
)


@dataclass
class Rep:
    """One entry of config.json's ``representations``, read and checked."""

    kind: str  # pyreft class name
    key: str  # pyvene's key: the file is intkey_<key>.bin
    site: Site  # with a placeholder position
    rank: int | None
    link: object
    dim: int | None  # intervention_dimensions[i]


def class_name(text: str) -> tuple[str, str] | None:
    """``"<class 'pyreft.interventions.LoreftIntervention'>"`` -> ``("pyreft.interventions", "LoreftIntervention")``."""
    m = re.fullmatch(r"(?:<class ')?((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*)(?:'>)?", text.strip())
    return (m.group(1).rstrip("."), m.group(2)) if m else None


def check_model_type(cfg: _io.Config, model_type, lm) -> None:
    """pyvene records the model's class (``str(type(model))``); refuse a checkpoint of another one."""
    if model_type is None or model_type == "None":
        return
    parsed = class_name(model_type)
    have = type(lm.hf).__name__
    if parsed is None or parsed[1] == have:
        return
    peft = " (a PEFT-wrapped model: its LoRA weights are not part of the interventions)" if "peft" in parsed[0] else ""
    raise cfg.error(
        "model_type",
        f"the checkpoint was trained on a {parsed[1]}{peft}, but this model is a {have}; load it on the model it "
        "was trained on",
    )


def representations(cfg: _io.Config, data: dict, lm) -> list[Rep]:
    raw, types = data["representations"], data["intervention_types"]
    if not raw:
        raise cfg.error("representations", "is empty: the checkpoint has no interventions")
    if len(types) != len(raw):
        raise cfg.error(
            "intervention_types",
            f"has {len(types)} entries for {len(raw)} representations; expected one per representation",
        )
    dims = data.get("intervention_dimensions")
    if dims is not None and len(dims) != len(raw):
        raise cfg.error("intervention_dimensions", f"has {len(dims)} entries for {len(raw)} representations")
    counter: dict[str, int] = {}
    reps = []
    for i, (r, t) in enumerate(zip(raw, types)):
        where = f"representations[{i}]"
        r = _fields(cfg, where, r)
        kind = _kind(cfg, f"intervention_types[{i}]", t)
        proposal = _key_proposal(r)
        counter[proposal] = counter.get(proposal, -1) + 1  # pyvene numbers repeats of a key #0, #1, ...
        site = _site(cfg, where, r, lm)
        dim = None if dims is None else dims[i]
        if dim is not None:
            cfg.check(f"intervention_dimensions[{i}]", dim, int)
        reps.append(
            Rep(
                kind,
                f"{proposal}#{counter[proposal]}",
                site,
                r["low_rank_dimension"],
                r["intervention_link_key"],
                dim,
            )
        )
    keys = data.get("sorted_keys")
    if keys is not None and sorted(map(str, keys)) != sorted(r.key for r in reps):
        raise cfg.error(
            "sorted_keys",
            f"{keys} do not match the keys of the representations {[r.key for r in reps]}; the file was edited",
        )
    return reps


def _fields(cfg: _io.Config, where: str, r) -> dict:
    """A representation (pyvene writes a list in ``FIELDS`` order; a dict is read too) with defaults, checked."""
    if isinstance(r, list):
        if len(r) > len(FIELDS):
            raise cfg.error(where, f"has {len(r)} fields; pyvene's RepresentationConfig has {len(FIELDS)}")
        r = dict(zip(FIELDS, r))
    elif isinstance(r, dict):
        unknown = sorted(set(r) - set(FIELDS))
        if unknown:
            raise cfg.error(where, f"unknown field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    else:
        raise cfg.error(where, f"is {r!r}; expected a list or an object (pyvene's RepresentationConfig)")
    r = {**DEFAULTS, **r}
    cfg.check(f"{where}.layer", r["layer"], int)
    cfg.check(f"{where}.component", r["component"], str)
    cfg.check(f"{where}.low_rank_dimension", r["low_rank_dimension"], (int, type(None)))
    if r["unit"] != "pos":
        raise cfg.error(
            where,
            f"unit {r['unit']!r} is not supported: from_pyreft reads interventions on token "
            "positions (unit 'pos'), as pyreft trains them; per-head units ('h.pos') are not ReFTs",
        )
    if r["max_number_of_units"] != 1:
        raise cfg.error(
            where, f"max_number_of_units {r['max_number_of_units']!r} is not supported; expected 1 (pyreft's)"
        )
    for name in (
        "intervention_type",
        "intervention",
        "subspace_partition",
        "moe_key",
        "source_representation",
        "latent_dim",
    ):
        if r[name] is not None:
            raise cfg.error(where, f"{name} {r[name]!r} is not supported (pyreft saves it as null)")
    if r["hidden_source_representation"] not in (None, False):
        raise cfg.error(where, "has a constant source representation (hidden_source_representation): not a ReFT")
    if r["low_rank_dimension"] is not None and r["low_rank_dimension"] < 1:
        raise cfg.error(where, f"low_rank_dimension {r['low_rank_dimension']} must be at least 1")
    return r


def _kind(cfg: _io.Config, where: str, text) -> str:
    cfg.check(where, text, str)
    parsed = class_name(text)
    known = ", ".join(KINDS)
    if parsed is None or parsed[1] not in KINDS or not parsed[0].startswith("pyreft"):
        raise cfg.error(
            where,
            f"{text!r} is not one of pyreft's interventions that from_pyreft maps ({known}); "
            "pyvene's own interventions (interchange, DAS) are not ReFTs",
        )
    return parsed[1]


def _key_proposal(r: dict) -> str:
    """pyvene's name for a representation (before ``#<repeat>``): the file is ``intkey_<key>#<i>.bin``."""
    c, u, n = r["component"], str(r["unit"]).replace(".", "_"), r["max_number_of_units"]
    if "." in c:  # a module path: no layer in the key
        return f"comp_{c.replace('.', '_')}_unit_{u}_nunit_{n}"
    return f"layer_{r['layer']}_comp_{c}_unit_{u}_nunit_{n}"


def _site(cfg: _io.Config, where: str, r: dict, lm) -> Site:
    """Their component -> our site (with a placeholder position), checked against ``lm``."""
    comp, layer = r["component"], r["layer"]
    try:
        arch = _sites.architecture(lm)
    except SiteError as e:
        raise cfg.error(where, str(e)) from None
    if "." in comp:  # pyvene's string access: '<module path>.output' or '.input', indices as [i]
        m = re.fullmatch(r"([\w.\[\]]+)\.(input|output)", comp)
        if not m:
            raise cfg.error(
                where, f"component {comp!r} is not '<module path>.output' or '.input'; supported: {_SUPPORTED}"
            )
        path, io = re.sub(r"\[(\d+)\]", r".\1", m.group(1)), m.group(2)
        site = _named(arch, path, io)
        if site is None:
            try:
                lm.hf.get_submodule(path)
            except AttributeError:
                why = ""
                if path.startswith("base_model.model."):
                    why = " (a PEFT-wrapped model's path: pyreft with LoRA, whose weights are not in this folder)"
                raise cfg.error(
                    where,
                    f"component {comp!r}: no module {path!r} in {type(lm.hf).__name__}{why}; "
                    f"load the checkpoint on the model it was trained on",
                ) from None
            site = Site.module(path, last(), io=io)
    elif comp in _ABSTRACT:
        if not 0 <= layer < lm.n_layers:
            raise cfg.error(
                where,
                f"layer {layer} does not exist: {type(lm.hf).__name__} has {lm.n_layers} layers "
                f"(0..{lm.n_layers - 1}); the checkpoint was trained on another model",
            )
        block = f"{arch.layers}.{layer}"
        if comp == "block_output":
            site = Site("resid_post", layer, last())
        elif comp == "block_input":
            site = Site("resid_pre", layer, last())
        else:  # pyvene's mlp_output / attention_output: the output of the MLP / attention module itself
            sub = "mlp" if comp == "mlp_output" else arch.attn
            site = _named(arch, f"{block}.{sub}", "output") or Site.module(f"{block}.{sub}", last())
    else:
        raise cfg.error(where, f"component {comp!r} is not supported; supported: {_SUPPORTED}")
    try:
        _sites.resolve(lm, site)
    except SiteError as e:
        raise cfg.error(where, f"component {comp!r} ({site!r}): {e}") from None
    return site


def _named(arch: _sites.Arch, path: str, io: str) -> Site | None:
    """Our named component at a module path and side, if one is exactly that point."""
    m = re.fullmatch(re.escape(arch.layers) + r"\.(\d+)(?:\.(.+))?", path)
    if not m:
        return None
    layer, rel = int(m.group(1)), m.group(2)
    if rel is None:
        return Site("resid_post" if io == "output" else "resid_pre", layer, last())
    for comp in ("attn_out", "mlp_out"):
        if getattr(arch, comp) == (rel, io):
            return Site(comp, layer, last())
    return None
