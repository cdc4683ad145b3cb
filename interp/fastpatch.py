"""Exact patching cells at the floor: run only what a patch at (layer l, tokens >= p0) can change.

Example:
    >>> batch = encode(lm, base)
    >>> clean = CleanRun.of(lm, batch, upto=1)                  # one clean base forward, its KV cache kept
    >>> site = Site("resid_post", 1, at(2))
    >>> op = Op(site, resolve(lm, site), site.pos.resolve(batch.attention_mask), fn=lambda h: h * 0)
    >>> logits = clean.logits(lm, [op], layer=1, logits_at=last().resolve(batch.attention_mask))  # tokens 2..5 only
    >>> full = intervene(lm, batch, at=site, via=Zero())                  # the same cell as a whole forward
    >>> logits.shape, torch.allclose(logits, full.logits, atol=1e-5)
    (torch.Size([4, 97]), True)

A patch at layer ``l`` whose positions start at ``p0`` (the smallest patched column over the rows, padded
coordinates) changes nothing below layer ``l`` and nothing before token ``p0``. So one clean base forward keeps
its key/value cache and every decoder layer's output (``resid_post``), and each cell then runs tokens
``p0..T-1`` only, attending to the clean cache cropped to ``p0`` (a fresh ``DynamicCache`` per cell), with the
layers below ``l`` replaced by their kept clean outputs at those tokens, and logits read from the final norm at
the positions asked for (:func:`interp.engine.readout`). The attention mask is the full (B, T) one and the
position ids are the full run's (from the mask) sliced to the window, so every number equals the full forward's
up to float rounding. A cell costs about ``(L - l) / L * (T - p0) / T`` of a full forward. The stand-in layers
return a plain tensor, as decoder layers do in transformers 5; :func:`interp.patching.patch_grid` checks one
unpatched windowed run against the clean run before trusting the path, and keeps the full forward where that
check fails or :func:`supported` says no. Memory: the kept outputs are ``l_max`` (B, T, d_model) tensors, plus
the KV cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from . import sites as _sites
from .engine import Batch, Op, _Stop, final_norm_target, hooked, readout
from .sites import resolve

# Components whose site lies inside one decoder layer and whose vectors do not depend on the key columns.
SUPPORTED = ("resid_pre", "attn_out", "head", "resid_mid", "mlp_out", "resid_post", "q", "k", "v", "mlp_hidden")


def supported(lm, component: str) -> str | None:
    """None when the cached path can run ``component`` on ``lm``; otherwise why it cannot (a short reason)."""
    if hasattr(lm, "edit_ops"):
        return "a model with edits of its own (a ReFT)"
    if lm.spec.architecture not in _sites.ARCHITECTURES:
        return f"{lm.spec.architecture} is not in the site table"
    if component not in SUPPORTED:
        return f"component {component!r} (its vectors span the key columns, or it is not inside one layer)"
    return None


@dataclass
class CleanRun:
    """One clean forward of ``batch``: per-layer key/value tensors and decoder-layer outputs.

    Attributes:
        keys, values: per layer (B, n_kv_heads, T, head_dim), as the model's cache holds them.
        outputs: outputs (B, T, d_model) of layers ``0..upto-1`` (what a skipped layer returns).
    """

    batch: Batch
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    outputs: list[torch.Tensor]

    @classmethod
    def of(cls, lm, batch: Batch, *, upto: int) -> CleanRun:
        """Run ``batch`` once, keeping the cache and the outputs of layers below ``upto``."""
        B, T = batch.input_ids.shape
        cols = torch.arange(T, device=batch.input_ids.device).expand(B, T)
        ops = []
        for layer in range(upto):
            site = _sites.Site("resid_post", layer)
            ops.append(Op(site, resolve(lm, site), cols, read=True))
        cache = DynamicCache()
        with torch.no_grad(), hooked(lm, ops) as reads:
            lm.hf(**batch.forward_kwargs(), cache=cache, use_cache=True, logits_to_keep=1)
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        if len(keys) != lm.n_layers:
            raise RuntimeError(f"the cache holds {len(keys)} layers; expected {lm.n_layers}")
        return cls(batch, keys, values, [reads[i] for i in range(upto)])

    def logits(
        self, lm, ops: Sequence[Op], *, layer: int, logits_at: torch.Tensor, vocab: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, V) at ``logits_at`` (B, 1) of the base run with ``ops`` (all at ``layer`` or above).

        The ops' indices are padded columns of the full batch; they are moved into the window here. With
        ``vocab`` (token ids), logits over those words only (B, len(vocab)).
        """
        p0 = min([int(op.index.min()) for op in ops] + [int(logits_at.min())])
        window = [_shifted(op, p0) for op in ops]
        window.append(Op(None, final_norm_target(lm), logits_at - p0, read=True))
        ids, mask = self.batch.input_ids, self.batch.attention_mask
        kwargs = dict(input_ids=ids[:, p0:], attention_mask=mask, position_ids=self.batch.position_ids[:, p0:])
        if p0 > 0:
            data = [(k[:, :, :p0], v[:, :, :p0]) for k, v in zip(self.keys, self.values)]
            kwargs.update(cache=DynamicCache(ddp_cache_data=data), use_cache=True)
        else:
            kwargs.update(use_cache=False)
        with _skipped(lm, [h[:, p0:] for h in self.outputs[:layer]]), hooked(lm, window, stop=True) as reads:
            try:
                lm.hf(**kwargs)
            except _Stop:
                pass
        return readout(lm, reads[len(window) - 1], vocab)[:, -1]  # (B, 1, d) -> (B, V)


def _shifted(op: Op, p0: int) -> Op:
    return Op(op.site, op.target, op.index - p0, fn=op.fn, read=op.read, valid=op.valid, rows=op.rows)


class _Kept(torch.nn.Module):
    """Stands in for a decoder layer below the patched one: returns that layer's clean output in the window."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs):
        return self.hidden


@contextlib.contextmanager
def _skipped(lm, outputs: list[torch.Tensor]):
    """While the block runs, decoder layers ``0..len(outputs)-1`` return ``outputs`` instead of computing."""
    layers = lm.hf.get_submodule(_sites.architecture(lm).layers)
    original = [layers[i] for i in range(len(outputs))]
    try:
        for i, h in enumerate(outputs):
            layers[i] = _Kept(h)
        yield
    finally:
        for i, mod in enumerate(original):
            layers[i] = mod


__all__ = ["CleanRun", "supported", "SUPPORTED"]
