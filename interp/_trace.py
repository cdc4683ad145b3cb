"""The one place that speaks nnsight: run a forward with reads and writes at resolved sites.

Everything else in the toolkit builds a plan (which sites, which positions, which edit) and calls
:func:`run`. Work that is never read is not done: a run whose reads end at layer L stops there, and
logits are computed only at the positions a caller asks for (``logits_to_keep``), never over the
262k-word vocabulary at every token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import sites as _sites


@dataclass
class Op:
    """Read and/or write one site: ``pos`` (B, k) indices; ``fn`` maps the selected (B, k, w) vectors."""

    site: _sites.Site
    target: _sites.Target
    pos: torch.Tensor
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    read: bool = False


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


def run(lm, batch: Batch, ops: list[Op], *, logits_at: torch.Tensor | str | None = None):
    """One traced forward. Returns ``(reads, logits)``.

    Args:
        ops: reads and writes, in any order (sorted here by the model's execution order).
        logits_at: ``None`` (no logits: stop after the last op), ``"all"`` (every position), or a (B, k)
            index tensor (logits only there; returned as (B, k, V)).
    """
    order = _sites.execution_order(lm)
    ranked = sorted(range(len(ops)), key=lambda i: order[(ops[i].target.path, ops[i].target.io)])
    kwargs = batch.forward_kwargs()
    cols = None
    if isinstance(logits_at, torch.Tensor):
        cols = torch.unique(logits_at)  # logits only at the union of the requested columns
        kwargs["logits_to_keep"] = cols
    elif logits_at is None and not ops:
        raise ValueError("a run with no reads, writes or logits would compute nothing")
    reads: dict[int, torch.Tensor] = {}
    with lm.model.trace(**kwargs) as tracer:
        for i in ranked:
            _apply(_sites.envoy(lm, ops[i].site), ops[i], reads, i)
        if logits_at is None:
            tracer.stop()
        else:
            logits = lm.model.output.logits.save()
    out = [reads.get(i) for i in range(len(ops))]  # in the caller's order
    if logits_at is None:
        return out, None
    if cols is not None:
        where = torch.searchsorted(cols, logits_at)  # (B, k) -> columns of the kept logits
        rows = torch.arange(len(batch), device=where.device)[:, None]
        logits = logits[rows, where]  # (B, k, V)
    return out, logits


def _apply(env, op: Op, reads: dict, i: int) -> None:
    """Inside a trace: select the site's vectors, edit them, write back, and/or save a copy."""
    value = env.input if op.target.io == "input" else env.output
    packed = isinstance(value, tuple)
    h = value[0] if packed else value  # (B, T, D)
    B, T, D = h.shape
    t = op.target
    if t.head is not None:
        h4 = h.reshape(B, T, t.n_heads, D // t.n_heads)  # (B, T, H, hd)
        view = h4[:, :, t.head]  # (B, T, hd)
    else:
        view = h
    rows = torch.arange(B, device=h.device)[:, None]
    pos = op.pos.to(h.device)
    if op.fn is not None:
        new = op.fn(view[rows, pos])  # (B, k, w) -> (B, k, w)
        if t.head is not None:
            h4 = h4.clone()
            h4[:, :, t.head] = view.index_put((rows, pos), new)
            h_new = h4.reshape(B, T, D)
        else:
            h_new = h.index_put((rows, pos), new)
        if packed:
            h_new = (h_new, *value[1:])
        if t.io == "input":
            env.input = h_new
        else:
            env.output = h_new
        view = h_new[0] if packed else h_new
        if t.head is not None:
            view = view.reshape(B, T, t.n_heads, -1)[:, :, t.head]
    if op.read:
        reads[i] = view[rows, pos].save()
