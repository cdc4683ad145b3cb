"""Load a checkpoint saved by pyreft / pyvene (``IntervenableModel.save``) as a :class:`reft.ReftModel`.

Example (a rank-4 LoReFT at layer 1, written here by hand in pyreft's layout: a ``config.json`` and one
``intkey_<key>.bin`` state dict per intervention):
    >>> import json
    >>> folder = tmp / "pyreft-run"
    >>> folder.mkdir()
    >>> rep = [1, "block_output", "pos", 1, 4]          # layer, component, unit, max_number_of_units, rank
    >>> kind = "<class 'pyreft.interventions.LoreftIntervention'>"
    >>> _ = (folder / "config.json").write_text(json.dumps({"representations": [rep], "intervention_types": [kind]}))
    >>> Rw = torch.linalg.qr(torch.randn(32, 4)).Q       # their rotate_layer: (d_model, rank), orthonormal columns
    >>> state = {"weight": torch.randn(4, 32), "bias": torch.randn(4), "rotate_layer": Rw}
    >>> torch.save(state, folder / "intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.bin")
    >>> rlm = reft.from_pyreft(folder, lm)              # one intervention per layer: the last prompt token
    >>> rlm
    ReftModel(LM(LlamaForCausalLM, n_layers=2, d_model=32, n_heads=4, head_dim=8), tied=True,
      Site('resid_post', 1, last()): LoReFT(d_model=32, rank=4)
    )
    >>> torch.equal(rlm.interventions[0].R.weight, Rw.T)   # our R (rank x d) is their rotate_layer transposed
    True

pyreft's LoReFT is ``h + (W h + b - h Rw) Rw^T`` with ``Rw`` (d_model, rank); ours is ``h + R^T (W h + b - R h)``
with ``R`` (rank, d_model), so ``R = Rw^T`` and ``W``, ``b`` are their ``learned_source`` (Wu et al., NeurIPS 2024).
The other pyreft classes map as follows (their ``rotate_layer`` always transposed, their ``proj_layer`` not):

    LoreftIntervention    weight, bias, rotate_layer (d, r)              -> LoReFT
    DireftIntervention    learned_source.*, rotate_layer (orthogonal)    -> LoDiReFT (their DiReFT keeps R orthonormal)
    NodireftIntervention  learned_source.*, proj_layer.weight [, .bias]  -> DiReFT   (their proj bias is unused)
    NoreftIntervention    learned_source.*, proj_layer.weight [, .bias]  -> NoReFT   (b := b1 - b2: the same edit)
    ConsreftIntervention  learned_source (r,), rotate_layer (orthogonal) -> ConsReFT
    LobireftIntervention  learned_source (r,), rotate_layer (orthogonal) -> LoBiReFT
"""

from __future__ import annotations

import io
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from interp import io as _io
from interp import sites as _sites
from interp.io import FormatError
from interp.positions import Position, first, last
from interp.sites import Site, SiteError

from .interventions import ConsReFT, DiReFT, LoBiReFT, LoDiReFT, LoReFT, NoReFT, ReftError, ReftIntervention
from .model import Placement, ReftModel, to_model

# pyvene's RepresentationConfig, in its order (config.json stores each one as a list; older versions stop earlier)
_FIELDS = ("layer", "component", "unit", "max_number_of_units", "low_rank_dimension", "intervention_type",
           "intervention", "subspace_partition", "group_key", "intervention_link_key", "moe_key",
           "source_representation", "hidden_source_representation", "latent_dim")  # fmt: skip
_DEFAULTS = dict(zip(_FIELDS, (0, "block_output", "pos", 1) + (None,) * 10))
# config.json: what IntervenableConfig.save_pretrained writes (transformers' bookkeeping included)
_REQUIRED = {"representations": list, "intervention_types": list}
_NONE = type(None)
_OPTIONAL = {"sorted_keys": list, "mode": str, "model_type": (str, _NONE), "intervention_dimensions": list,
             "intervention_constant_sources": list, "transformers_version": str, "_name_or_path": str,
             "architectures": (list, _NONE), "torch_dtype": (str, _NONE), "dtype": (str, _NONE)}  # fmt: skip
_ABSTRACT = ("block_output", "block_input", "mlp_output", "attention_output")  # pyvene's names that map here
_SUPPORTED = (
    "block_output (resid_post), block_input (resid_pre), mlp_output, attention_output, or a module path "
    "such as 'model.layers[3].output'"
)

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


_KINDS = {
    "LoreftIntervention": _Kind(LoReFT, ("weight", "bias", _ROT)),
    "DireftIntervention": _Kind(LoDiReFT, (*_LS, _ROT_ORIGINAL, _ROT_BASE), _BUFFERS),
    "NodireftIntervention": _Kind(DiReFT, (*_LS, "proj_layer.weight"), ("proj_layer.bias", *_BUFFERS)),
    "NoreftIntervention": _Kind(NoReFT, (*_LS, "proj_layer.weight"), ("proj_layer.bias", *_BUFFERS)),
    "ConsreftIntervention": _Kind(ConsReFT, ("learned_source", _ROT_ORIGINAL, _ROT_BASE), _BUFFERS),
    "LobireftIntervention": _Kind(LoBiReFT, ("learned_source", _ROT_ORIGINAL, _ROT_BASE), _BUFFERS),
}


@dataclass
class _Rep:
    """One entry of config.json's ``representations``, read and checked."""

    kind: str  # pyreft class name
    key: str  # pyvene's key: the file is intkey_<key>.bin
    site: Site  # with a placeholder position
    rank: int | None
    link: object
    dim: int | None  # intervention_dimensions[i]


def from_pyreft(path: str | os.PathLike, lm, *, positions: Position | None = None) -> ReftModel:
    """Rebuild a pyreft / pyvene checkpoint (``config.json`` + ``intkey_<key>.bin``) on ``lm`` as a ReftModel.

    Example:
        >>> reft.from_pyreft("runs/emoji-chat", lm, positions=first(1) + last(1))   # doctest: +SKIP

    Args:
        path: the folder pyreft's ``ReftModel.save`` (pyvene's ``IntervenableModel.save``) wrote.
        lm: the model the checkpoint was trained on (checked: class, hidden size, layers).
        positions: the prompt positions to edit, which pyreft does not store. Default: ``last(1)`` where a layer
            has one intervention (pyreft's README and ``make_last_position_supervised_data_module``), and
            ``first(1) + last(1)`` untied where it has two (pyreft's ``train.py`` default ``"f1+l1"`` without
            ``--share_weights``: the first half of its interventions edits the prefix, the second the suffix).
            A layer with one intervention uses all of ``positions`` with one set of weights (pyreft's
            ``share_weights``); a layer with ``n`` uses its ``n`` parts, the ``i``-th intervention on part ``i``.

    Weights are read with ``torch.load(..., weights_only=True)`` only: a file holding anything but tensors (a
    pickled object that would run code) is refused, and nothing in it runs. Loads are strict: an unknown
    intervention class, component or key, a missing or stray file or tensor, or a shape that does not fit ``lm``
    is a :class:`interp.errors.FormatError` naming the file. The edit is computed in ``lm``'s dtype (pyreft's own load
    builds ``learned_source`` in bfloat16). ``reft.save`` writes the result in this package's format.
    """
    if positions is not None and not isinstance(positions, Position):
        hint = (
            f"; for pyreft's string form use reft.parse_positions({positions!r})" if isinstance(positions, str) else ""
        )
        raise ReftError(
            f"from_pyreft(positions={positions!r}): expected a typed position such as last(1) or "
            f"first(1) + last(1){hint}"
        )
    folder = Path(path)
    file = folder / _io.CONFIG
    if not folder.is_dir() or not os.path.lexists(file):
        raise FileNotFoundError(
            f"no pyreft checkpoint at {str(folder)!r}: expected a folder with config.json and one intkey_<key>.bin "
            "per intervention (what pyreft's ReftModel.save / pyvene's IntervenableModel.save write)"
        )
    cfg = _io.Config(file)
    if "format" in cfg.data:
        raise cfg.error(
            None, f"is this package's format ({cfg.data['format']!r}), not pyreft's; load it with reft.load(path, lm)"
        )
    data = cfg.section(None, _REQUIRED, optional=_OPTIONAL)
    _check_model_type(cfg, data.get("model_type"), lm)
    reps = _representations(cfg, data, lm)
    layout = _layout(cfg, reps, positions, lm)
    _check_files(cfg, folder, reps)
    ivs: list[ReftIntervention] = []
    linked: dict = {}
    for rep in reps:
        iv, state = _intervention(folder / f"intkey_{rep.key}.bin", rep, lm)
        if rep.link is not None and rep.link in linked:  # pyvene's intervention_link_key: one shared intervention
            first_iv, first_state, first_file = linked[rep.link]
            if set(state) != set(first_state) or any(not torch.equal(state[k], first_state[k]) for k in state):
                raise FormatError(
                    f"{folder / f'intkey_{rep.key}.bin'}: intervention_link_key {rep.link!r} ties it to {first_file}, "
                    "but the two files hold different weights; the files come from different saves"
                )
            iv = first_iv
        elif rep.link is not None:
            linked[rep.link] = (iv, state, f"intkey_{rep.key}.bin")
        ivs.append(iv)
    placements = [Placement(site, target, ivs[i], part) for i, site, target, part in layout]
    for iv in {id(p.intervention): p.intervention for p in placements}.values():
        to_model(iv, lm)
    for p in lm.hf.parameters():
        p.requires_grad_(False)
    return ReftModel(lm, placements, tied=all(p.part is None for p in placements))


# ---- config.json --------------------------------------------------------------------------------------------


def _class_name(text: str) -> tuple[str, str] | None:
    """``"<class 'pyreft.interventions.LoreftIntervention'>"`` -> ``("pyreft.interventions", "LoreftIntervention")``."""
    m = re.fullmatch(r"(?:<class ')?((?:[A-Za-z_]\w*\.)*)([A-Za-z_]\w*)(?:'>)?", text.strip())
    return (m.group(1).rstrip("."), m.group(2)) if m else None


def _check_model_type(cfg: _io.Config, model_type, lm) -> None:
    """pyvene records the model's class (``str(type(model))``); refuse a checkpoint of another one."""
    if model_type is None or model_type == "None":
        return
    parsed = _class_name(model_type)
    have = type(lm.hf).__name__
    if parsed is None or parsed[1] == have:
        return
    peft = " (a PEFT-wrapped model: its LoRA weights are not part of the interventions)" if "peft" in parsed[0] else ""
    raise cfg.error(
        "model_type",
        f"the checkpoint was trained on a {parsed[1]}{peft}, but this model is a {have}; load it on the model it "
        "was trained on",
    )


def _representations(cfg: _io.Config, data: dict, lm) -> list[_Rep]:
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
            _Rep(
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
    """A representation (pyvene writes a list in ``_FIELDS`` order; a dict is read too) with defaults, checked."""
    if isinstance(r, list):
        if len(r) > len(_FIELDS):
            raise cfg.error(where, f"has {len(r)} fields; pyvene's RepresentationConfig has {len(_FIELDS)}")
        r = dict(zip(_FIELDS, r))
    elif isinstance(r, dict):
        unknown = sorted(set(r) - set(_FIELDS))
        if unknown:
            raise cfg.error(where, f"unknown field {unknown[0]!r} (known: {', '.join(_FIELDS)})")
    else:
        raise cfg.error(where, f"is {r!r}; expected a list or an object (pyvene's RepresentationConfig)")
    r = {**_DEFAULTS, **r}
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
    parsed = _class_name(text)
    known = ", ".join(_KINDS)
    if parsed is None or parsed[1] not in _KINDS or not parsed[0].startswith("pyreft"):
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


# ---- intkey_<key>.bin ---------------------------------------------------------------------------------------


def _check_files(cfg: _io.Config, folder: Path, reps: list[_Rep]) -> None:
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


def _intervention(file: Path, rep: _Rep, lm) -> tuple[ReftIntervention, dict]:
    """Read ``file`` strictly, check shapes against the site, and build ours with the same edit."""
    kind = _KINDS[rep.kind]
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


def _rank(file: Path, rep: _Rep, state: dict, width: int) -> int:
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


# ---- positions ---------------------------------------------------------------------------------------------


def _layout(cfg: _io.Config, reps: list[_Rep], positions: Position | None, lm) -> list[tuple[int, Site, object, int]]:
    """Where each representation edits, ``(index, site, target, part)`` site by site: a layer's interventions, in
    config order, take the parts of its positions (checked before any weights are read)."""
    groups: dict[Site, list[int]] = {}
    for i, rep in enumerate(reps):
        groups.setdefault(rep.site, []).append(i)
    layout = []
    for site, idx in groups.items():
        n = len(idx)
        pos = positions
        if pos is None:
            if n > 2:
                raise ReftError(
                    f"{cfg.file}: {site.at(last())!r} has {n} interventions and pyreft does not store their "
                    f"positions: pass positions= with {n} parts, one per intervention in config order"
                )
            pos = last() if n == 1 else first(1) + last(1)
        if n > 1 and n != len(pos.parts):
            raise ReftError(
                f"{cfg.file}: {site.at(last())!r} has {n} interventions ({', '.join(reps[i].key for i in idx)}) but "
                f"positions={pos!r} has {len(pos.parts)} part(s); pyreft puts one intervention per part of "
                f"first(p) + last(s) when weights are not shared: pass positions with {n} parts"
            )
        s = site.at(pos)
        target = _sites.resolve(lm, s)
        layout += [(i, s, target, None if n == 1 else j) for j, i in enumerate(idx)]
    return layout


__all__ = ["from_pyreft"]
