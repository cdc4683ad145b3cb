"""Attach ReFT interventions to a frozen model, and run it with them (plain forward hooks).

Example:
    >>> iv  = LoReFT(lm.d_model, rank=4)
    >>> rlm = attach(lm, {Site("resid_post", 9, first(1) + last(1)): iv})          # tied prefix/suffix
    >>> rlm = attach(lm, at_layers(lm, "3;9", pos="f1+l1", kind="loreft", rank=4), tied=False)
    >>> rlm.trainable_params
    5124

The edit runs in module hooks rather than an nnsight trace: training steps and generation are the hot
paths, where DESIGN.md asks for plain hooks behind the same plan (tests/test_reft.py checks that both give
identical logits). A hook edits the selected prompt positions of its rows with ``index_put`` (out of place,
so autograd sees it); nothing before the lowest intervened layer needs a gradient, so backward stops there.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from interp import sites as _sites
from interp.positions import Position
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

    @contextmanager
    def applied(self, batch, starts, lengths, *, rows: torch.Tensor | None = None, once: bool = False):
        """Hooks that edit the prompt positions of ``batch`` while the block runs (see :func:`applied`)."""
        with applied(
            [self] * len(batch) if rows is None else _rows_to_list(self, rows, len(batch)),
            batch,
            starts,
            lengths,
            once=once,
        ):
            yield

    def logits(self, rb) -> torch.Tensor:
        """Logits (B, k, V) of a :class:`reft.data.ReftBatch` at its ``pred_at`` columns, with the edit applied
        (with a head: (B, 1, n_labels) from the head)."""
        if self.head is not None and rb.vocab is None:
            raise ReftError("this ReftModel has a classifier head; give label_words= (one per class) to use it")
        return forward_logits(
            self.lm, rb.batch, rb.pred_at, [self] * len(rb), rb.starts, rb.lengths, rb.vocab, head=self.head
        )


def _rows_to_list(rlm, rows, B):
    out = [None] * B
    for r in rows.tolist():
        out[r] = rlm
    return out


def attach(
    lm, interventions: dict[Site, ReftIntervention], *, tied: bool = True, head: nn.Module | None = None
) -> ReftModel:
    """Put ReFT interventions on a frozen model: ``{Site: intervention}``; positions are prompt positions.

    Example:
        >>> rlm = attach(lm, {Site("resid_post", 9, first(1) + last(1)): LoReFT(lm.d_model, 4)}, tied=False)

    Args:
        interventions: a site (component, layer, positions such as ``first(p) + last(s)``) per intervention.
            One intervention object used at several sites shares its weights across them.
        tied: with ``tied=False`` each part of a site's positions (prefix, suffix) gets its own copy of the
            intervention; with ``tied=True`` one set of weights serves all of them.
        head: a :class:`reft.ClassifierHead` trained with the interventions (classification); default: score
            the label words.

    Interventions are moved to the model's device and dtype (an intervention in another dtype would silently
    upcast activations, or fail). Sites and widths are checked here, before any data is seen.
    """
    if not interventions:
        raise ReftError("attach() got no interventions; pass {Site(...): LoReFT(lm.d_model, rank=4)}")
    placements = []
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
        n_parts = len(_pos.parts(site.pos))
        if tied or n_parts == 1:
            placements.append(Placement(site, target, iv))
        else:
            for j in range(n_parts):
                placements.append(Placement(site, target, iv if j == 0 else copy.deepcopy(iv), part=j))
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


def to_model(iv: ReftIntervention, lm) -> ReftIntervention:
    """Move ``iv`` to the model's device and dtype (orthogonal bases stay float32 under fp16/bf16, where
    torch has no Householder product; the edit casts R to the activations' dtype)."""
    iv.to(device=lm.device, dtype=lm.dtype)
    if lm.dtype in (torch.float16, torch.bfloat16):
        for m in iv.modules():
            if hasattr(getattr(m, "parametrizations", None), "weight"):
                m.to(torch.float32)
    return iv


def at_layers(
    lm,
    layers="all",
    *,
    pos: Position | str = "f1+l1",
    kind: str = "loreft",
    rank: int = 4,
    component: str = "resid_post",
) -> dict[Site, ReftIntervention]:
    """One new intervention per layer: ``at_layers(lm, "3;9;15", pos="f7+l7", kind="loreft", rank=4)``."""
    pos = _pos.parse_positions(pos)
    return {
        Site(component, layer, pos): make(kind, lm.d_model, rank)  # attach() moves it to the model dtype
        for layer in _pos.parse_layers(layers, lm.n_layers)
    }


# ---- running with hooks ---------------------------------------------------------------------------------


@contextmanager
def applied(assignment: Sequence[ReftModel | None], batch, starts, lengths, *, once: bool = False):
    """While the block runs, row ``b`` of ``batch`` gets ``assignment[b]``'s interventions (None: untouched).

    ``starts``/``lengths`` locate each row's prompt in the padded batch. With ``once=True`` each hook fires on
    the first forward only (the prompt pass of ``generate``; decoding with the KV cache is left alone).
    """
    if len(assignment) != len(batch):
        raise ReftError(f"got {len(assignment)} intervention choices for a batch of {len(batch)}; give one per row")
    lm = next((a.lm for a in assignment if a is not None), None)
    handles = []
    try:
        if lm is not None:
            T = batch.input_ids.shape[1]
            groups: dict[int, tuple[ReftModel, list[int]]] = {}
            for b, a in enumerate(assignment):
                if a is not None:
                    if a.lm is not lm:
                        raise ReftError("all interventions served in one batch must be attached to the same model")
                    groups.setdefault(id(a), (a, []))[1].append(b)
            order = _sites.execution_order(lm)
            work = []
            for rlm, rows in groups.values():
                rows_t = torch.tensor(rows, dtype=torch.long)
                for pl in rlm.placements:
                    ids = batch.input_ids[rows_t]
                    resolved = _pos.resolve(
                        pl.site.pos, [starts[r] for r in rows], [lengths[r] for r in rows], T, ids.cpu(), lm.tokenizer
                    )
                    chosen = resolved if pl.part is None else [resolved[pl.part]]
                    index = torch.cat([i for i, _ in chosen], 1).to(lm.device)  # (n, k)
                    valid = torch.cat([v for _, v in chosen], 1).to(lm.device)  # (n, k)
                    if index.shape[1] == 0:
                        continue  # no row has a position here: nothing to edit
                    work.append((order[(pl.target.path, pl.target.io)], pl, rows_t.to(lm.device), index, valid))
            for _, pl, rows_t, index, valid in sorted(work, key=lambda w: w[0]):
                handles.append(_register(lm, pl, rows_t, index, valid, once))
        yield
    finally:
        for h in handles:
            h.remove()


def _edit(h, target, rows, index, valid, fn):
    """Edit the selected vectors of ``h`` (B, T, D) out of place; (n, k) ``index`` per row in ``rows``."""
    r = rows[:, None].expand_as(index)  # (n, k)
    if target.head is None:
        sel = h[r, index]  # (n, k, d)
        new = torch.where(valid[..., None], fn(sel), sel)
        return h.index_put((r, index), new)
    B, T, D = h.shape
    h4 = h.reshape(B, T, target.n_heads, D // target.n_heads)  # (B, T, H, hd)
    hd = torch.full_like(index, target.head)
    sel = h4[r, index, hd]  # (n, k, hd)
    new = torch.where(valid[..., None], fn(sel), sel)
    return h4.index_put((r, index, hd), new).reshape(B, T, D)


def _register(lm, pl: Placement, rows, index, valid, once: bool):
    module = lm.hf.get_submodule(pl.target.path)
    state = {"armed": True}
    fn = pl.intervention

    def ready():
        if once and not state["armed"]:
            return False
        state["armed"] = False
        return True

    if pl.target.io == "output":

        def hook(mod, args, output):
            if not ready():
                return None
            if isinstance(output, tuple):
                return (_edit(output[0], pl.target, rows, index, valid, fn), *output[1:])
            return _edit(output, pl.target, rows, index, valid, fn)

        return module.register_forward_hook(hook)

    def pre_hook(mod, args, kwargs):
        if not ready():
            return None
        if args:
            return (_edit(args[0], pl.target, rows, index, valid, fn), *args[1:]), kwargs
        key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
        return args, {**kwargs, key: _edit(kwargs[key], pl.target, rows, index, valid, fn)}

    return module.register_forward_pre_hook(pre_hook, with_kwargs=True)


def forward_logits(lm, batch, at: torch.Tensor, assignment, starts, lengths, vocab=None, head=None) -> torch.Tensor:
    """One forward of ``lm`` with the assigned interventions; logits (B, k, V) only at the (B, k) columns ``at``."""
    with applied(assignment, batch, starts, lengths):
        return lm_logits(lm.hf, batch, at, vocab, head)


def lm_logits(hf, batch, at: torch.Tensor, vocab: torch.Tensor | None = None, head=None) -> torch.Tensor:
    """Logits of a Hugging Face causal LM at the (B, k) columns ``at`` only: (B, k, V), or (B, k, len(vocab)).

    With ``vocab`` (token ids, e.g. label words) the unembedding multiplies only those rows, so a classifier
    never reads the 262k x d_model matrix; otherwise HF's ``logits_to_keep`` limits it to the needed columns.
    A ``head`` (``nn.Linear``) replaces the label-word rows: (B, k, n_labels).
    """
    at = at.to(batch.input_ids.device)
    rows = torch.arange(at.shape[0], device=at.device)[:, None]
    if vocab is None:
        cols = torch.unique(at)  # the unembedding runs only on the union of the requested columns
        out = hf(**batch.forward_kwargs(), logits_to_keep=cols, use_cache=False)
        return out.logits[rows, torch.searchsorted(cols, at)]  # (B, k) -> kept columns -> (B, k, V)
    decoder = getattr(hf, hf.base_model_prefix)
    hidden = decoder(**batch.forward_kwargs(), use_cache=False).last_hidden_state[rows, at]  # (B, k, d)
    if head is not None:
        return head(hidden.to(head.weight.dtype))  # (B, k, d) -> (B, k, n_labels)
    head = hf.get_output_embeddings()
    logits = hidden @ head.weight[vocab].T.to(hidden.dtype)  # (B, k, d) @ (d, L) -> (B, k, L)
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[vocab]
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


__all__ = ["ReftModel", "Placement", "attach", "at_layers", "applied", "forward_logits", "lm_logits"]
