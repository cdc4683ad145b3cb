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

import os
from pathlib import Path

import torch

from interp import io as _io
from interp import sites as _sites
from interp.io import FormatError
from interp.positions import Position, first, last
from interp.sites import Site

from ..interventions import ReftError, ReftIntervention
from ..model import Placement, ReftModel, to_model
from .config import FIELDS, OPTIONAL, REQUIRED, Rep, check_model_type, representations  # noqa: F401  (FIELDS)
from .weights import check_files, read_intervention


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
    data = cfg.section(None, REQUIRED, optional=OPTIONAL)
    check_model_type(cfg, data.get("model_type"), lm)
    reps = representations(cfg, data, lm)
    layout = _layout(cfg, reps, positions, lm)
    check_files(cfg, folder, reps)
    ivs: list[ReftIntervention] = []
    linked: dict = {}
    for rep in reps:
        iv, state = read_intervention(folder / f"intkey_{rep.key}.bin", rep, lm)
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


def _layout(cfg: _io.Config, reps: list[Rep], positions: Position | None, lm) -> list[tuple[int, Site, object, int]]:
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
