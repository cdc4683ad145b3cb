"""Unoptimised reference DII in plain PyTorch hooks (no nnsight, nothing skipped).

Example:
    >>> logits = naive_interchange(lm, base, source, site, via=basis)   # (B, V) at the last token

This is what a straightforward implementation pays: the source runs through the whole model, unembedding
included, and the base computes logits at every position. Tests and benchmarks compare the optimised
path (:func:`interp.interchange`) against it; both must give the same numbers.
"""

from __future__ import annotations

import torch

from . import sites as _sites
from .interventions import as_intervention
from .positions import last


def _select(value, target):
    h = value[0] if isinstance(value, tuple) else value
    if target.head is None:
        return h, h
    B, T, D = h.shape
    return h, h.reshape(B, T, target.n_heads, D // target.n_heads)[:, :, target.head]


def _hook(lm, site, fn):
    """Register a hook at ``site`` calling ``fn(view) -> new view or None``; returns the handle."""
    target = _sites.resolve(lm, site)
    module = lm.hf.get_submodule(target.path)

    def apply(value):
        h, view = _select(value, target)
        new = fn(view)
        if new is None:
            return None
        if target.head is not None:
            B, T, D = h.shape
            h4 = h.reshape(B, T, target.n_heads, -1).clone()
            h4[:, :, target.head] = new
            new = h4.reshape(B, T, D)
        return (new, *value[1:]) if isinstance(value, tuple) else new

    if target.io == "output":
        return module.register_forward_hook(lambda m, a, out: apply(out))

    def pre(m, args):
        new = apply(args[0])
        return None if new is None else (new, *args[1:])

    return module.register_forward_pre_hook(pre)


@torch.no_grad()
def naive_interchange(lm, base, source, site, via=None) -> torch.Tensor:
    """Logits (B, V) at the last token of ``base`` with ``site`` interchanged from ``source``."""
    iv = as_intervention(via)
    rows_b = torch.arange(len(base))[:, None]
    pos_b = site.pos.resolve(base.attention_mask, base.input_ids, lm.tokenizer)
    pos_s = site.pos.resolve(source.attention_mask, source.input_ids, lm.tokenizer)
    store = {}

    def keep(view):
        store["src"] = view[rows_b, pos_s].clone()  # returns None: read only

    handle = _hook(lm, site, keep)
    try:
        lm.hf(**source.forward_kwargs())  # the whole model, all logits
    finally:
        handle.remove()

    def patch(view):
        view = view.clone()
        view[rows_b, pos_b] = iv(view[rows_b, pos_b], store["src"])
        return view

    handle = _hook(lm, site, patch)
    try:
        logits = lm.hf(**base.forward_kwargs()).logits  # (B, T, V): every position
    finally:
        handle.remove()
    return logits[rows_b, last().resolve(base.attention_mask)][:, 0]
