"""Attach ReFT interventions to a frozen model, and run it with them through :mod:`interp.engine`.

Example:
    >>> iv  = LoReFT(lm.d_model, rank=4)
    >>> rlm = attach(lm, {Site("resid_post", 1, first(1) + last(1)): iv})          # tied prefix/suffix
    >>> rlm.trainable_params                                    # R, W: 4 x 32 each, b: 4
    260
    >>> rlm = attach(lm, at_layers(lm, [0, 1], pos=first(1) + last(1), kind="loreft", rank=4), tied=False)
    >>> rlm.trainable_params                                    # 2 layers x 2 parts (prefix, suffix), untied
    1040
    >>> interp.collect(rlm, prompts, at=Site("resid_post", 1, last())).shape   # analysis under the trained edit
    torch.Size([8, 1, 32])

A ReftModel builds engine ops (:meth:`ReftModel.edit_ops`): its interventions at its sites, at the prompt
positions of each row, resolved by :mod:`interp.positions` like every other position. Training and
generation run them on the engine's hooks backend (the hot paths); interp's analysis calls run the same ops in
an nnsight trace. Nothing before the lowest intervened layer needs a gradient, so backward stops there.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from interp import sites as _sites
from interp.engine import Op, execute
from interp.positions import Position, first, last
from interp.sites import Site

from . import positions as _pos
from .interventions import ReftError, ReftIntervention, make


@dataclass
class Placement:
    """One intervention at one site, on all parts of its positions (``part=None``) or on one part."""

    site: Site
    target: _sites.Target
    intervention: ReftIntervention
    part: int | None = None

    @property
    def decodes(self) -> bool:
        """True when this placement also edits generated tokens (a ``generated()`` or ``recent(k)`` part)."""
        j = self.site.pos.decode_part
        return j is not None and self.part in (None, j)


class ReftModel(nn.Module):
    """A frozen :class:`interp.LM` plus trainable interventions at prompt positions (see :func:`attach`)."""

    def __init__(self, lm, placements: list[Placement], *, tied: bool, head: nn.Module | None = None):
        super().__init__()
        self.lm = lm
        self.placements = placements
        self.tied = tied
        unique: list[ReftIntervention] = []
        for p in placements:
            if not any(p.intervention is u for u in unique):
                unique.append(p.intervention)
        self.interventions = nn.ModuleList(unique)
        self.head = head  # a reft.ClassifierHead, or None: classify by scoring label words
        place(self)

    @property
    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The interventions' parameters, then the head's (if any): what training updates (the LM is not a
        submodule, so its frozen weights never appear here)."""
        return [p for p in self.parameters() if p.requires_grad]

    def __repr__(self):
        rows = []
        for p in self.placements:
            part = "" if p.part is None else f" part {p.part}"
            iv = p.intervention
            rows.append(f"  {p.site!r}{part}: {type(iv).__name__}(d_model={iv.d_model}, rank={iv.rank})")
        if self.head is not None:
            h = self.head
            rows.append(f"  head: {type(h).__name__}(d_model={h.in_features}, n_labels={h.out_features})")
        return f"ReftModel({self.lm!r}, tied={self.tied},\n" + "\n".join(rows) + "\n)"

    @property
    def decodes(self) -> bool:
        """True when some intervention also edits generated tokens (positions with ``generated()``, ``recent(k)``)."""
        return any(pl.decodes for pl in self.placements)

    def edit_ops(self, batch, prompt_mask: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> list[Op]:
        """Engine ops that apply this model's interventions to ``batch``.

        ``prompt_mask`` (B, T) marks the prompt tokens positions count over (default: the attention mask, the
        whole input); ``rows`` restricts the edit to those rows of the batch (default: all). Decode-time
        positions (``generated()``, ``recent(k)``) also take the real tokens after the prompt (teacher forcing:
        the response tokens, the inputs at which generation would edit them); without a ``prompt_mask`` there
        are none, and only their prompt part applies.
        """
        mask, ids, gen = position_inputs(batch, prompt_mask, rows, decodes=self.decodes)
        located: dict = {}
        ops = []
        for pl in self.placements:
            key = (pl.site.pos, pl.part is not None)
            if key not in located:
                located[key] = pl.site.pos.locate(
                    mask, ids, self.lm.tokenizer, by_part=pl.part is not None, generated=gen
                )
            loc = located[key] if pl.part is None else located[key][pl.part]
            if loc.index.shape[1]:  # a part no row has (a 1-token prompt's prefix) edits nothing
                ops.append(Op(pl.site, pl.target, loc.index, fn=pl.intervention, valid=loc.valid, rows=rows))
        return ops

    def step_ops(self, n_rows: int, rows: torch.Tensor | None = None, device=None) -> list[Op]:
        """Ops for one cached decoding step (one new token per row, column 0): the interventions that edit
        generated tokens, on ``rows`` of a batch of ``n_rows`` (default: all); none for a prompt-only model."""
        index = step_index(n_rows, rows, device)
        return [Op(pl.site, pl.target, index, fn=pl.intervention, rows=rows) for pl in self.placements if pl.decodes]

    def logits(self, rb) -> torch.Tensor:
        """Logits (B, k, V) of a :class:`reft.data.ReftBatch` at its ``pred_at`` columns, with the edit applied
        (with a head: (B, 1, n_labels) from the head)."""
        if self.head is not None and rb.vocab is None:
            raise ReftError("this ReftModel has a classifier head; give label_words= (one per class) to use it")
        return serve_logits(self.lm, rb, [self] * len(rb), head=self.head)


def position_inputs(batch, prompt_mask=None, rows=None, *, decodes: bool = False):
    """``(mask, ids, generated)`` that positions are located on: the prompt mask (default: the attention mask),
    the input ids and, for decode-time positions under teacher forcing, the real tokens after the prompt (None
    otherwise), each restricted to ``rows`` when given."""
    mask = batch.attention_mask if prompt_mask is None else prompt_mask
    ids = batch.input_ids
    gen = batch.attention_mask.bool() & ~prompt_mask.bool() if prompt_mask is not None and decodes else None
    if rows is not None:
        mask, ids = mask[rows], ids[rows]
        gen = None if gen is None else gen[rows]
    return mask, ids, gen


def step_index(n_rows: int, rows: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """The (k, 1) column index of a cached decoding step: the one new token of each edited row."""
    return torch.zeros(n_rows if rows is None else len(rows), 1, dtype=torch.long, device=device)


def attach(
    lm, interventions: dict[Site, ReftIntervention], *, tied: bool = True, head: nn.Module | None = None
) -> ReftModel:
    """Put ReFT interventions on a frozen model: ``{Site: intervention}``; positions are prompt positions.

    Example:
        >>> rlm = attach(lm, {Site("resid_post", 1, first(1) + last(1)): LoReFT(lm.d_model, 4)}, tied=False)
        >>> rlm
        ReftModel(LM(LlamaForCausalLM, n_layers=2, d_model=32, n_heads=4, head_dim=8), tied=False,
          Site('resid_post', 1, first(1)+last()) part 0: LoReFT(d_model=32, rank=4)
          Site('resid_post', 1, first(1)+last()) part 1: LoReFT(d_model=32, rank=4)
        )

    Args:
        interventions: a site (component, layer, positions such as ``first(p) + last(s)``) per intervention.
            One intervention object used at several sites shares its weights across them.
        tied: with ``tied=False`` each part of a site's positions (prefix, suffix) gets its own copy of the
            intervention; with ``tied=True`` one set of weights serves all of them.
        head: a :class:`reft.ClassifierHead` trained with the interventions (classification); default: score
            the label words.

    Interventions keep their own dtype (float32 by default, also on a bf16 model: the edit casts its input to
    it and its output back) and move to the device of the module they edit (under a device map, each to its
    layer's device). Sites and widths are checked here, before any data is seen.
    """
    if not interventions:
        raise ReftError("attach() got no interventions; pass {Site(...): LoReFT(lm.d_model, rank=4)}")
    placements = []
    copies: dict[tuple[int, int], ReftIntervention] = {}  # untied: part j's copy of iv, shared by iv's sites
    for site, iv in interventions.items():
        if not isinstance(site, Site):
            raise ReftError(f"keys must be interp.Site values; got {site!r}")
        if not isinstance(iv, ReftIntervention):
            raise ReftError(f"at {site!r}: expected a ReftIntervention (LoReFT, DiReFT, ...); got {type(iv).__name__}")
        if not isinstance(site.pos, Position):
            raise ReftError(f"{site!r}: pos must be a typed position such as first(1) + last(1)")
        target = _sites.resolve(lm, site)
        iv.check(target.width)
        to_model(iv, lm)
        n_parts = len(site.pos.parts)
        if tied or n_parts == 1:
            placements.append(Placement(site, target, iv))
        else:
            for j in range(n_parts):
                if j and (id(iv), j) not in copies:
                    copies[id(iv), j] = copy.deepcopy(iv)
                placements.append(Placement(site, target, iv if j == 0 else copies[id(iv), j], part=j))
    if head is not None:
        check_head(head, lm)
        to_model(head, lm)
    for p in lm.hf.parameters():
        p.requires_grad_(False)
    return ReftModel(lm, placements, tied=tied, head=head)


def check_head(head: nn.Module, lm) -> None:
    """A head must be a linear map from the model's final hidden size to at least two classes."""
    if not isinstance(head, nn.Linear) or head.in_features != lm.d_model:
        raise ReftError(
            f"head must be a reft.ClassifierHead(d_model={lm.d_model}, n_labels); got {head!r}; try "
            "reft.ClassifierHead.from_label_words(lm, label_words)"
        )


def to_model(iv: nn.Module, lm, device: torch.device | None = None) -> nn.Module:
    """Move ``iv`` (an intervention or a head) to ``device`` (default: the model's input device), keeping its own
    dtype: float32 parameters stay float32 on a bf16 model (what training wants; an orthogonal basis must, as
    torch has no Householder product in bf16). The edit casts its input to the intervention's dtype and its
    output back to the model's (:meth:`ReftIntervention.__call__`)."""
    return iv.to(device=device or lm.device)


def place(rlm: ReftModel) -> None:
    """Put each intervention on the device of the module it edits (its first site, when shared between sites on
    several devices; the edit moves vectors to it and back) and the head where the final hidden states are:
    under a device map, layer 3's edit then runs where layer 3 lives."""
    lm = rlm.lm
    done: set[int] = set()
    for p in rlm.placements:
        if id(p.intervention) not in done:
            done.add(id(p.intervention))
            to_model(p.intervention, lm, lm.device_at(p.target.path))
    if rlm.head is not None:
        arch = _sites.ARCHITECTURES.get(lm.spec.architecture)
        to_model(rlm.head, lm, lm.device_at(arch.final_norm) if arch is not None else None)


def at_layers(
    lm,
    layers="all",
    *,
    pos: Position | None = None,
    kind: str = "loreft",
    rank: int = 4,
    component: str = "resid_post",
    share: bool = False,
) -> dict[Site, ReftIntervention]:
    """One new intervention per layer: ``at_layers(lm, [3, 9, 15], pos=first(7) + last(7), rank=4)``.

    Example:
        >>> attach(lm, at_layers(lm, [0, 1], rank=4)).trainable_params         # two interventions
        520
        >>> attach(lm, at_layers(lm, [0, 1], rank=4, share=True)).trainable_params   # one, at both layers
        260

    ``layers``: a list, an int or ``"all"``; ``pos``: a typed position (default ``first(1) + last(1)``; the CLI
    form ``"f7+l7"`` goes through :func:`reft.parse_positions`). ``share=True`` puts ONE intervention at all
    these layers: one set of weights, trained once and saved once (a load keeps it shared). With
    ``attach(..., tied=False)`` each part of the positions (prefix, suffix) gets one intervention, shared by
    all these layers.
    """
    if pos is None:
        pos = first(1) + last(1)
    if not isinstance(pos, Position):
        raise ReftError(
            f"at_layers(pos={pos!r}): expected a typed position such as first(7) + last(7); for the CLI's "
            f"string form use reft.parse_positions({pos!r})"
        )
    layers = _pos.parse_layers(layers, lm.n_layers)
    if share:
        one = make(kind, lm.d_model, rank)
        return {Site(component, layer, pos): one for layer in layers}
    return {
        Site(component, layer, pos): make(kind, lm.d_model, rank)  # float32; attach() puts it on its layer's device
        for layer in layers
    }


# ---- serving: a different ReftModel (or none) per row ---------------------------------------------------


def served_rows(assignment: Sequence[ReftModel | None], *, device=None) -> list[tuple[ReftModel, torch.Tensor | None]]:
    """Each distinct model of ``assignment`` with the rows it serves (None: every row), in order of first use."""
    groups: dict[int, tuple[ReftModel, list[int]]] = {}
    for b, a in enumerate(assignment):
        if a is not None:
            groups.setdefault(id(a), (a, []))[1].append(b)
    every = len(assignment)
    return [(a, None if len(rows) == every else torch.tensor(rows, device=device)) for a, rows in groups.values()]


def check_served(lm, assignment: Sequence[ReftModel | None]) -> None:
    """Refuse, before any forward, a served entry that is not a ReftModel (or a Steering, or None) or that was built
    for another model than ``lm``: its interventions would meet vectors of another width mid-run.

    Example:
        >>> check_served(lm, [rlm, None])                     # attached to lm: served as is
        >>> check_served(lm, ["runs/style"])
        Traceback (most recent call last):
        interp.errors.ReftError: serve[0] is a str; expected a ReftModel (reft.attach, reft.load), a steering ...
    """
    for b, a in enumerate(assignment):
        if a is None:
            continue
        if not hasattr(a, "edit_ops") or not hasattr(a, "lm"):
            raise ReftError(
                f"serve[{b}] is a {type(a).__name__}; expected a ReftModel (reft.attach, reft.load), a steering "
                "(reft.steering.steer) or None"
            )
        if a.lm is lm:
            continue
        mine, theirs = lm.spec, a.lm.spec
        if theirs.d_model != mine.d_model:
            raise ReftError(
                f"serve[{b}] was built for {a.lm!r}: its interventions edit {theirs.d_model}-wide vectors, but the "
                f"model it is served on has d_model {mine.d_model} ({lm!r}); attach or load it on this model "
                "(reft.load(path, lm))"
            )
        if theirs.fingerprint() != mine.fingerprint():
            raise ReftError(
                f"serve[{b}] was built for {a.lm!r}, not for {lm!r}: another architecture or depth; attach or load "
                "it on this model (reft.load(path, lm))"
            )


def serve_ops(
    assignment: Sequence[ReftModel | None], batch, prompt_mask: torch.Tensor | None = None, *, lm=None
) -> list[Op]:
    """Ops that give row ``b`` of ``batch`` the interventions of ``assignment[b]`` (None: untouched); with ``lm``
    (the model they run on), :func:`check_served` first."""
    if len(assignment) != len(batch):
        raise ReftError(f"got {len(assignment)} intervention choices for a batch of {len(batch)}; give one per row")
    if lm is not None:
        check_served(lm, assignment)
    groups = served_rows(assignment, device=batch.input_ids.device)
    if any(a.lm is not groups[0][0].lm for a, _ in groups):
        raise ReftError("all interventions served in one batch must be attached to the same model")
    return [op for rlm, rows in groups for op in rlm.edit_ops(batch, prompt_mask, rows)]


def serve_logits(lm, rb, assignment: Sequence[ReftModel | None], *, head=None) -> torch.Tensor:
    """Logits (B, k, V) of a ReftBatch at ``rb.pred_at`` with ``assignment[b]``'s edits on row ``b``."""
    ops = serve_ops(assignment, rb.batch, rb.prompt_mask, lm=lm)
    return execute(lm, rb.batch, ops, logits_at=rb.pred_at, vocab=rb.vocab, head=head, backend="hooks").logits


__all__ = ["ReftModel", "Placement", "attach", "at_layers", "check_served", "serve_ops", "serve_logits"]
