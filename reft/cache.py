"""Train a ReFT without re-running the frozen layers below it: the stream entering its lowest layer, per example.

Example:
    >>> from reft.data import collate, tokenize
    >>> from reft.train import response_loss
    >>> rlm = attach(lm, {Site("resid_post", 1, first(1) + last(1)): LoReFT(lm.d_model, rank=4)})
    >>> rows = tokenize(lm, as_examples([{"prompt_ids": [1, 5, 6], "response_ids": [7, 8]},
    ...                                  {"prompt_ids": [1, 9], "response_ids": [10]}]))
    >>> cache = StreamCache.for_model(rlm, rows)             # what enters layer 1, filled as examples come round
    >>> cache.layer, cache.filled
    (1, 0)
    >>> rb = collate(lm, [rows[1], rows[0]])                 # any order, any padding: indexed by example id
    >>> with cache.replay([1, 0], rb):                       # layer 0 returns the cached stream
    ...     cached = response_loss(rlm.logits(rb), rb)
    >>> cache.filled, cache.nbytes                           # 5 + 3 tokens x 32 floats x 4 bytes
    (2, 1024)
    >>> torch.allclose(cached, response_loss(rlm.logits(rb), rb), atol=1e-5)   # = the full run
    True
    >>> StreamCache.for_model(attach(lm, {Site("resid_post", 0, last()): LoReFT(lm.d_model, 4)}), rows).layer
    1
    >>> StreamCache.for_model(attach(lm, {Site("resid_pre", 0, last()): LoReFT(lm.d_model, 4)}), rows) is None
    True

The model is frozen and every example's tokens are fixed, so the residual stream entering the lowest intervened
layer ``L`` is the same each time an example comes round. :func:`reft.train_reft` (``TrainConfig.cache_prefix``,
on by default) keeps it the first time an example is seen (no grad, the run stops at layer ``L``) and from then on
replays it through :class:`interp.replay.PrefixCache`: a step runs only layers ``L`` and up, with logits only at
the response columns. Examples are cached when first drawn, so under ``torchrun`` each rank holds the examples its
shards brought it, and a run shorter than an epoch never pays for examples it does not reach.

The cache holds the stream entering the lowest layer any placement needs to run: layer ``l`` for a site inside
layer ``l``, but ``l + 1`` for ``resid_post`` at ``l`` (layer ``l``'s output is the next one's input, so the edit
applies to the replayed stream and layer ``l`` itself never runs; a ReFT at ``resid_post`` 0 skips layer 0). It
applies on architectures in the site table when that layer is ``>= 1``; otherwise there is nothing to skip, and
:meth:`for_model` returns None (training then runs the whole model, as with ``cache_prefix=False``).

Memory: one (T_i, d_model) tensor per example in the model's dtype on its input device, unpadded: about
``examples x tokens x d_model x bytes``; e.g. 10,000 examples of 128 tokens on Gemma-3-270M (d_model 640) take
10,000 x 128 x 640 x 4 B = 3.3 GB in float32 (half in bf16). Turn it off with ``TrainConfig(cache_prefix=False)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from interp import sites as _sites
from interp.arch import ARCHITECTURES
from interp.engine import Op, execute
from interp.replay import PrefixCache

from . import data as _data


class StreamCache:
    """The stream entering decoder layer ``layer`` for each of ``rows`` (training examples), filled on demand."""

    def __init__(self, lm, layer: int, rows: Sequence[_data.Tokenized], vocab: torch.Tensor | None = None):
        self.lm, self.layer, self.rows, self.vocab = lm, layer, rows, vocab
        self.site = _sites.Site("resid_pre", layer)
        self.target = _sites.resolve(lm, self.site)  # once per cache (per fit), not once per fill
        self.prefix = PrefixCache(layer, [None] * len(rows))  # type: ignore[list-item]  # filled by fill()

    @classmethod
    def for_model(cls, rlm, rows, vocab: torch.Tensor | None = None) -> StreamCache | None:
        """A cache at ``rlm``'s lowest intervened layer, or None where one does not apply (see the module)."""
        layer = lowest_layer(rlm)
        return None if layer is None else cls(rlm.lm, layer, rows, vocab)

    @property
    def filled(self) -> int:
        """How many examples are cached."""
        return sum(s is not None for s in self.prefix.streams)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached streams."""
        return sum(s.numel() * s.element_size() for s in self.prefix.streams if s is not None)

    @torch.no_grad()
    def fill(self, idx: Sequence[int]) -> None:
        """Cache the examples of ``idx`` not cached yet: one batched forward that stops at layer ``layer``."""
        todo = sorted({int(i) for i in idx if self.prefix.streams[i] is None})
        if not todo:
            return
        rb = _data.collate(self.lm, [self.rows[i] for i in todo], self.vocab)  # the tokens training runs on
        B, T = rb.batch.input_ids.shape
        cols = torch.arange(T, device=rb.batch.input_ids.device).expand(B, T)
        op = Op(self.site, self.target, cols, read=True)
        (h,) = execute(self.lm, rb.batch, [op], backend="hooks").reads  # (B, T, d)
        real = rb.batch.attention_mask.bool().to(h.device)
        for b, i in enumerate(todo):
            self.prefix.streams[i] = h[b, real[b]].detach()  # (T_i, d): real tokens only, re-padded per batch

    @contextlib.contextmanager
    def replay(self, idx: Sequence[int], rb: _data.ReftBatch):
        """Within the block, a forward of ``rb`` (the collated rows ``idx``, in that order) starts at layer
        ``layer`` from the cache; missing examples are cached first."""
        self.fill(idx)
        with self.prefix.replay(self.lm, list(idx), rb.batch):
            yield


def lowest_layer(rlm) -> int | None:
    """The lowest layer ``rlm``'s placements need to run (``l + 1`` for ``resid_post`` at ``l``, below the last
    layer), when a prefix cache applies to all of them and that layer is above 0; else None."""
    lm, sites = rlm.lm, [pl.site for pl in rlm.placements]
    if not sites or lm.spec.architecture not in ARCHITECTURES:
        return None
    if any(s.component == "module" or not isinstance(s.layer, int) for s in sites):
        return None
    first = min(s.layer + (s.component == "resid_post" and s.layer + 1 < lm.n_layers) for s in sites)
    return first if first >= 1 else None


def replaying(cache: StreamCache | None, idx: Sequence[int], rb):
    """``cache.replay(idx, rb)``, or a no-op without a cache (or without a batch: an empty shard)."""
    return cache.replay(idx, rb) if cache is not None and rb is not None else contextlib.nullcontext()


__all__ = ["StreamCache", "lowest_layer", "replaying"]
