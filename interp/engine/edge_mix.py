"""Receiver inputs of an edge-patched run (:mod:`interp.engine.edges`): the corrupted residual plus mixed differences.

Example:
    >>> K = torch.tensor([[[1.0, 0.0, 1.0]]])                      # (G, R, S): one receiver keeps senders 0 and 2
    >>> items = [torch.full((1, 1, 1, 1), float(v)) for v in (1, 10, 100)]   # each sender's (G, B, T, d) difference
    >>> sparse_mix(K, items, sum(items)).flatten().tolist()       # 1 + 100
    [101.0]

For receiver ``r`` (and tiled copy ``g``) the input is the corrupted residual plus, per block ``b`` (the input
embeddings, a layer's heads, a layer's MLP), ``post_b(c_b + sum_{s in b} keep[g, r, s] delta_s) - post_b(c_b)``.
Where every block is affine this is ``sum_s keep[g, r, s] delta_s``. Otherwise each block's whole difference
``post_b(c_b + sum_s delta_s) - post_b(c_b)`` is kept once, receivers that keep all of a block's senders add it,
and only receivers that keep part of a block take its norm of their own mix. Sums read only the items a keep
matrix touches, or, when fewer, the complement subtracted from a running total: a single-edge patch, a small
circuit and a nearly full one each cost about one forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def mix(K: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``sum_s K[g, r, s] items[s, g]``: (G, R, n) with (n, G, B, T, d) -> (R, G, B, T, d)."""
    return torch.einsum("grs,sgbtd->rgbtd", K.to(items.dtype), items)


def sparse_mix(K: torch.Tensor, items: list[torch.Tensor], total: torch.Tensor) -> torch.Tensor:
    """``sum_s K[g, r, s] items[s][g]`` (R or 1, G, B, T, d) from the items whose weight is not all zero, or (when
    fewer) ``total`` (the sum of all items) minus the complement over the items whose weight is not all one."""
    nonzero, partial = (K != 0).any(0).any(0), (K != 1).any(0).any(0)  # (n,)
    if int(partial.sum()) < int(nonzero.sum()):
        idx = partial.nonzero().flatten().tolist()
        out = total[None]
        return out - mix(1 - K[..., idx], torch.stack([items[i] for i in idx])) if idx else out
    idx = nonzero.nonzero().flatten().tolist()
    return mix(K[..., idx], torch.stack([items[i] for i in idx])) if idx else torch.zeros_like(total)[None]


@dataclass
class Block:
    """A block's senders, its corrupted sum and write, what it applies (``post``; None: nothing), and ``whole``
    (G, B, T, d): its write in this run minus its corrupted write."""

    post: Callable[[torch.Tensor], torch.Tensor] | None
    senders: list[int]
    c_sum: torch.Tensor
    c_post: torch.Tensor
    whole: torch.Tensor

    def write(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(x) if self.post is not None else x


class Mixer:
    """The state of a patched run: differences of the senders that ran, blocks, corrupted residuals."""

    def __init__(self, keep: torch.Tensor, corrupt: torch.Tensor, e: torch.Tensor):
        self.keep, self.corrupt = keep, corrupt  # (G, R, S), (S, B, T, d)
        self.G, self.B = keep.shape[0], corrupt.shape[1]
        self.resid = self.resid_pre = corrupt[0]  # the corrupted residual so far (B, T, d)
        first = e.unflatten(0, (self.G, self.B)) - corrupt[0][None]  # (G, B, T, d)
        self.deltas, self.dsum = [first], {1: first}  # per sender; prefix sums at block boundaries
        self.blocks = [Block(None, [0], corrupt[0], corrupt[0], first)]
        self.wsum = {1: first}
        self.linear = True

    def close(self, post, affine: bool, senders: list[int], outs: torch.Tensor, *, attn: bool) -> None:
        """A block's senders ran (``outs`` (n, G * B, T, d)): keep their differences and the block's write."""
        c = self.corrupt[senders]  # (n, B, T, d)
        new = outs.unflatten(1, (self.G, self.B)) - c[:, None]  # (n, G, B, T, d)
        self.deltas += list(new)
        self.dsum[len(self.deltas)] = self.dsum[senders[0]] + new.sum(0)
        c_sum = c.sum(0)
        c_post = post(c_sum)
        whole = new.sum(0) if affine else post(c_sum[None] + new.sum(0)) - c_post[None]
        self.linear = self.linear and affine
        self.blocks.append(Block(post, senders, c_sum, c_post, whole))
        self.wsum[len(self.blocks)] = self.wsum[len(self.blocks) - 1] + whole
        if attn:
            self.resid_pre = self.resid
        self.resid = self.resid + c_post

    def inputs(self, rs: slice, n_up: int) -> torch.Tensor:
        """The inputs (R_rs, G * B, T, d) of receivers ``rs``, from the first ``n_up`` senders."""
        G, B = self.G, self.B
        base = self.resid_pre if n_up < len(self.deltas) else self.resid  # a parallel MLP reads its layer's input
        K = self.keep[:, rs, :n_up]  # (G, R_rs, n_up)
        if self.linear:
            total = base[None, None] + sparse_mix(K, self.deltas[:n_up], self.dsum[n_up])
        else:
            blocks = [b for b in self.blocks if b.senders[-1] < n_up]
            full = torch.stack([(K[:, :, b.senders] == 1).all(-1) for b in blocks], -1).float()  # (G, R, nb)
            total = base[None, None] + sparse_mix(full, [b.whole for b in blocks], self.wsum[len(blocks)])
            total = torch.broadcast_to(total, (K.shape[1], *total.shape[1:]))
            for b in blocks:
                total = self._partial(b, K[:, :, b.senders], total)
        total = torch.broadcast_to(total, (K.shape[1], G, B, *base.shape[1:]))
        return total.flatten(1, 2)

    def _partial(self, b: Block, k: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """Add, for receivers that keep part of block ``b``, ``post(c_b + sum_s k delta_s) - post(c_b)``."""
        part = (~((k == 1).all(-1) | (k == 0).all(-1))).nonzero()  # (n, 2): (g, r)
        if not len(part):
            return total
        g, r = part[:, 0], part[:, 1]
        deltas = torch.stack([self.deltas[s] for s in b.senders])  # (n_b, G, B, T, d)
        mixed = b.c_sum[None] + torch.einsum("ns,snbtd->nbtd", k[g, r].to(deltas.dtype), deltas[:, g])
        return total.index_put((r, g), b.write(mixed) - b.c_post[None], accumulate=True)


__all__ = ["Block", "Mixer", "mix", "sparse_mix"]
