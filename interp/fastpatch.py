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
``p0..T-1`` only, attending to the clean cache cropped to ``p0`` (a fresh ``DynamicCache`` per forward), with the
layers below ``l`` standing in with the kept clean output (at ``resid_post`` layer ``l`` itself too: its output
is edited directly), and logits read from the final norm at the positions asked for
(:func:`interp.engine.readout`). Cells of one layer with nearby windows share one forward, stacked along the
batch (:func:`plan_groups`); when no edit touches the last layer, its MLP runs at the read columns alone. The
attention mask is the full (B, T) one and the position ids are the full run's (from the mask) sliced to the
window, so every number equals the full forward's up to float rounding. A cell costs about
``(L - l) / L * (T - p0) / T`` of a full forward. The stand-in layers return a plain tensor, as decoder layers do
in transformers 5; :func:`interp.patching.patch_grid` checks one unpatched windowed run against the clean run
before trusting the path, and keeps the full forward where that check fails or :func:`supported` says no.
Memory: the kept outputs are ``l_max`` (B, T, d_model) tensors, plus the KV cache, repeated per stacked cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .arch import ARCHITECTURES
from .engine import Batch, Op, final_norm_target, forward, layer_stand_ins, narrowed_mlp, readout
from .sites import Site, resolve

# Components whose site lies inside one decoder layer and whose vectors do not depend on the key columns.
OVERHEAD = 64  # row-tokens: the fixed cost of one windowed forward (weights read once), measured on Gemma-3-270M
MAX_ROWS = 256  # rows in one stacked forward
SUPPORTED = ("resid_pre", "attn_out", "head", "resid_mid", "mlp_out", "resid_post", "q", "k", "v", "mlp_hidden")


def supported(lm, component: str) -> str | None:
    """None when the cached path can run ``component`` on ``lm``; otherwise why it cannot (a short reason)."""
    if hasattr(lm, "edit_ops"):
        return "a model with edits of its own (a ReFT)"
    if lm.spec.architecture not in ARCHITECTURES:
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
            site = Site("resid_post", layer)
            ops.append(Op(site, resolve(lm, site), cols, read=True))
        cache = DynamicCache()
        with torch.no_grad():
            reads, _ = forward(lm, ops, **batch.forward_kwargs(), cache=cache, use_cache=True, logits_to_keep=1)
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        if len(keys) != lm.n_layers:
            raise RuntimeError(f"the cache holds {len(keys)} layers; expected {lm.n_layers}")
        return cls(batch, keys, values, reads)

    def logits(
        self, lm, ops: Sequence[Op], *, layer: int, logits_at: torch.Tensor, vocab: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits (B, V) at ``logits_at`` (B, 1) of the base run with ``ops`` (all at ``layer`` or above).

        The ops' indices are padded columns of the full batch; they are moved into the window here. With
        ``vocab`` (token ids), logits over those words only (B, len(vocab)).
        """
        return self.stacked(lm, [ops], skip=layer, logits_at=logits_at, vocab=vocab)[0]

    def stacked(
        self,
        lm,
        cells: Sequence[Sequence[Op]],
        *,
        skip: int,
        logits_at: torch.Tensor,
        vocab: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (n_cells, B, V) of several cells run as one forward of ``n_cells * B`` rows.

        Each cell is a list of ops on the B base rows (their edits touch layers ``skip - 1`` and up). Decoder
        layers ``0..skip-1`` are not computed: they return the clean output of layer ``skip - 1`` in the window,
        so an op on layer ``skip - 1``'s output (``resid_post``) edits that clean output directly. The window
        starts at the smallest patched or read column over all cells.
        """
        B = len(self.batch)
        k = len(cells)
        p0 = min([int(op.index.min()) for ops in cells for op in ops] + [int(logits_at.min())])
        window = [_shifted(op, p0, offset=i * B, B=B) for i, ops in enumerate(cells) for op in ops]
        window.append(Op(None, final_norm_target(lm), (logits_at - p0).repeat(k, 1), read=True))
        ids, mask = self.batch.input_ids, self.batch.attention_mask
        kwargs = dict(
            input_ids=ids[:, p0:].repeat(k, 1),
            attention_mask=mask.repeat(k, 1),
            position_ids=self.batch.position_ids[:, p0:].repeat(k, 1),
        )
        if p0 > 0:
            data = [(key[:, :, :p0].repeat(k, 1, 1, 1), v[:, :, :p0].repeat(k, 1, 1, 1)) for key, v in self._kv()]
            kwargs.update(cache=DynamicCache(ddp_cache_data=data), use_cache=True)
        else:
            kwargs.update(use_cache=False)
        kept = self.outputs[skip - 1][:, p0:].repeat(k, 1, 1) if skip > 0 else None
        top = max(op.site.layer for ops in cells for op in ops)
        trim = top < lm.n_layers - 1 and skip < lm.n_layers  # no edit in the last layer: its MLP at the columns read
        stand_ins = layer_stand_ins(lm, skip, kept, purpose="a cached patching cell") if skip > 0 else {}
        if trim:
            stand_ins |= narrowed_mlp(lm, window[-1].index)
        reads, _ = forward(lm, window, stop=True, swaps=stand_ins, **kwargs)
        hidden = reads[-1]  # (k * B, 1, d)
        return readout(lm, hidden, vocab)[:, -1].reshape(k, B, -1)

    def _kv(self):
        return zip(self.keys, self.values)


def plan_groups(starts: Sequence[int], *, rows: int, tokens: int, overhead: int = OVERHEAD, cap: int = MAX_ROWS):
    """Cells of one layer grouped to share forwards: lists of indices into ``starts`` (each cell's first column).

    A forward of ``n`` cells whose window starts at ``p`` costs about ``overhead + n * rows * (tokens - p)``
    row-tokens (the fixed part is reading every weight once, which small windows cannot hide), so cells with
    nearby starts share a forward and far ones do not; at most ``cap`` rows per forward. Exact dynamic
    programming over the cells sorted by start.

    Example:
        >>> plan_groups([0, 14, 13, 1], rows=16, tokens=15)
        [[0, 3], [2, 1]]
    """
    order = sorted(range(len(starts)), key=lambda i: starts[i])
    per_forward = max(1, cap // max(rows, 1))
    best = [0.0] + [float("inf")] * len(order)  # best[j]: cost of the first j sorted cells
    cut = [0] * (len(order) + 1)
    for j in range(1, len(order) + 1):
        for i in range(max(0, j - per_forward), j):
            cost = best[i] + overhead + (j - i) * rows * (tokens - starts[order[i]])
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def _shifted(op: Op, p0: int, *, offset: int = 0, B: int = 0) -> Op:
    """``op`` with its columns moved into a window starting at ``p0`` and its rows moved down by ``offset``."""
    rows = torch.arange(B) if op.rows is None else op.rows
    return Op(op.site, op.target, op.index - p0, fn=op.fn, read=op.read, valid=op.valid, rows=rows + offset)


__all__ = ["CleanRun", "plan_groups", "supported", "SUPPORTED"]
