"""The plan a run executes: a batch, ops (read or edit a site at some rows and positions), and the edit both
backends apply.

Example:
    >>> batch = Batch(torch.tensor([[0, 5, 6], [7, 8, 9]]), torch.tensor([[0, 1, 1], [1, 1, 1]]))
    >>> batch.position_ids                                   # from the mask: left padding starts at 0
    tensor([[0, 0, 1],
            [0, 1, 2]])
    >>> target = Target("model.layers.0", "output", None, 4, 32)
    >>> op = Op(Site("resid_post", 0), target, torch.tensor([[2], [0]]), fn=lambda h: h * 0, read=True)
    >>> reads = {}
    >>> new = apply_ops(torch.ones(2, 3, 32), [(0, op)], reads)   # what a hook or a trace does at the module
    >>> new[0, 2].abs().sum().item(), new[0, 1].abs().sum().item(), reads[0].shape
    (0.0, 32.0, torch.Size([2, 1, 32]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..arch import Target
from ..errors import SiteError

if TYPE_CHECKING:  # a type only: sites builds on the engine, not the other way round
    from ..sites import Site


@dataclass
class Batch:
    """Token ids of a padded batch (left or right), with its attention mask and position ids."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.long().cumsum(-1) - 1).clamp(min=0)

    def __len__(self):
        return self.input_ids.shape[0]

    def forward_kwargs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}


@dataclass
class Op:
    """Read and/or edit one site: ``index`` (n, k) columns in batch ``rows`` (n,) (None: every row, in order).

    ``fn`` maps the selected (n, k, w) vectors to new ones; slots where ``valid`` (n, k) is False are never
    written. ``read=True`` returns the selected vectors after the edit. Every op fires exactly once per forward
    of its plan, or the run fails (:class:`interp.engine.Tally`).
    """

    site: Site | None
    target: Target
    index: torch.Tensor
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    read: bool = False
    valid: torch.Tensor | None = None
    rows: torch.Tensor | None = None


@dataclass
class Outcome:
    """What a run returns: ``reads`` in the order of the ops (None where an op only edits), and ``logits``."""

    reads: list[torch.Tensor | None] = field(default_factory=list)
    logits: torch.Tensor | None = None


class Stop(Exception):
    """Raised by the last hook a run needs: nothing after it is computed (the runner catches it)."""


def group_ops(ops: Sequence[Op], order: Callable[[], dict] | None = None):
    """Ops grouped by (module path, io) as ``[((path, io), [(i, op), ...]), ...]``, in the model's execution order
    (``order()`` gives each (path, io)'s rank; asked only when there are several groups; a module the recorded
    forward never reached goes last, where fire-once accounting reports it); ops keep their order within a group."""
    by_key: dict[tuple[str, str], list[tuple[int, Op]]] = {}
    for i, op in enumerate(ops):
        by_key.setdefault((op.target.path, op.target.io), []).append((i, op))
    if len(by_key) > 1 and order is not None:
        rank = order()
        return sorted(by_key.items(), key=lambda kv: rank.get(kv[0], len(rank)))
    return list(by_key.items())


def apply_ops(h: torch.Tensor, group: list[tuple[int, Op]], reads: dict, keep=lambda t: t, tally=None):
    """Run a group of ops at one module and io on ``h`` (B, T, D); returns the new ``h``, or None if unedited.

    ``reads[i]`` gets what read op ``i`` selects (passed through ``keep``); a :class:`interp.engine.Tally` counts
    each op's firing and the rows x columns it touched.
    """
    edited = False
    for i, op in group:
        if tally is not None:
            tally.hit(i, h.shape[0] if op.rows is None else len(op.rows), op.index.shape[1])
        if op.fn is not None:
            h, edited = edit(h, op), True
        if op.read:
            reads[i] = keep(select(h, op))
    return h if edited else None


def _rows(op: Op, B: int, device) -> torch.Tensor:
    rows = torch.arange(B, device=device) if op.rows is None else op.rows.to(device)
    return rows[:, None].expand(-1, op.index.shape[1])  # (n, k)


def _cols(t: Target, device) -> torch.Tensor:
    return torch.cat([torch.arange(a, b, device=device) for a, b in t.cols])  # (w,)


def select(h: torch.Tensor, op: Op) -> torch.Tensor:
    """The (n, k, w) vectors an op addresses in ``h`` (B, T, D); for attention probabilities ``h`` (B, H, T, T)
    the query rows (n, k, H, T), or one head's (n, k, T)."""
    r, idx = _rows(op, h.shape[0], h.device), op.index.to(h.device)
    t = op.target
    if t.pattern:
        return h[r, :, idx] if t.head is None else h[r, t.head, idx]
    if t.cols is not None:
        return h[r, idx][..., _cols(t, h.device)]
    if t.head is None:
        return h[r, idx]
    B, T, D = h.shape
    return h.reshape(B, T, t.n_heads, D // t.n_heads)[r, idx, t.head]


def edit(h: torch.Tensor, op: Op) -> torch.Tensor:
    """``h`` (B, T, D) with the op's vectors replaced by ``op.fn`` of them, out of place (autograd-safe)."""
    r, idx = _rows(op, h.shape[0], h.device), op.index.to(h.device)
    t = op.target
    old = select(h, op)
    if t.pattern:
        new = _pattern_edit(op, old)
    else:
        new = op.fn(old).to(h.device, h.dtype)  # (n, k, w), back in the model's dtype, where h lives
    if op.valid is not None:
        keep = op.valid.to(h.device)
        r, idx, new = r[keep], idx[keep], new[keep]
    if t.pattern:
        if t.head is not None:  # (B, H, T, T)[rows, head, query] = (n, k, T)
            return h.index_put((r, torch.full_like(idx, t.head), idx), new)
        return h.transpose(1, 2).index_put((r, idx), new).transpose(1, 2)  # (B, T, H, T)[rows, query] = (n, k, H, T)
    if t.cols is not None:
        cols = _cols(t, h.device)
        return h.index_put((r[..., None], idx[..., None], cols), new)  # broadcast (n, k, 1), (n, k, 1), (w,)
    if t.head is None:
        return h.index_put((r, idx), new)
    B, T, D = h.shape
    h4 = h.reshape(B, T, t.n_heads, D // t.n_heads)
    return h4.index_put((r, idx, torch.full_like(idx, t.head)), new).reshape(B, T, D)


def _pattern_edit(op: Op, old: torch.Tensor) -> torch.Tensor:
    """The edited probabilities; an edit that gives another shape (a source of another length) is refused."""
    T = old.shape[-1]
    hint = (
        f"{op.site!r}: attention patterns are edited over this batch's {T} key columns, and copied key column "
        "by key column, so base and source must be prompts of the same length (and padding)"
    )
    try:
        new = op.fn(old)
    except SiteError as e:  # the source's vectors are not T wide (interp.interventions): another length
        raise SiteError(f"{hint}; {e}") from None  # any other error of the edit passes with its own message
    if new.shape != old.shape:
        raise SiteError(f"{hint}; the edit gave shape {tuple(new.shape)}, expected {tuple(old.shape)}")
    return new.to(old.device, old.dtype)


__all__ = ["Batch", "Op", "Outcome", "Stop", "apply_ops", "edit", "group_ops", "select"]
