"""Skip the frozen layers below a site: replay the residual stream they produced instead of recomputing it.

Example:
    >>> from interp.batches import collect_sources, rows
    >>> from interp.metrics import das_loss, label_ids
    >>> cache = PrefixCache.collect(lm, train.base, layer=1)    # what enters layer 1, per prompt, no grad
    >>> idx, site = [0, 1, 2, 3], Site("resid_post", 1, last())
    >>> batch = rows(lm, [train.base[i] for i in idx])
    >>> (src,), labels = collect_sources(lm, train, [site]), label_ids(lm, train.labels)
    >>> iv = Interchange(LowRankRotation(lm.d_model, 1))
    >>> with cache.replay(lm, idx, batch):                      # layer 0 returns the cached stream
    ...     loss = das_loss(lm, batch, src[idx], labels[idx], at=site, via=iv)
    >>> torch.allclose(loss, das_loss(lm, batch, src[idx], labels[idx], at=site, via=iv), atol=1e-5)   # = full run
    True

The model is frozen and a training step only edits layer ``L`` or above, so the stream entering layer ``L``
is the same every time a prompt comes round. DAS fits revisit each base prompt many times; caching that stream
once and standing in for layers ``0..L-1`` with a module that returns it cuts each step's forward by ``L`` layers.
Attention masks keep padding out of every real token, so results equal the full run up to float rounding
(``tests/test_das.py``). The stand-in layers are the engine's (:func:`interp.engine.layer_stand_ins`); an op on a
replaced layer is refused rather than silently lost. Decoder layers must take the stream as their first argument
and return a tensor (every architecture in :data:`interp.arch.ARCHITECTURES` does under transformers 5).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import sites as _sites
from .arch import ARCHITECTURES
from .batches import rows  # das builds its batches with rows(); the cache must see the same tokens
from .engine import Batch, Op, execute, execution_order, layer_stand_ins, swapped


@dataclass
class PrefixCache:
    """The residual stream entering ``layer`` for each of a list of inputs: one (T_i, d) tensor per input."""

    layer: int
    streams: list[torch.Tensor]

    @staticmethod
    def applies(lm, site: _sites.Site) -> bool:
        """True when ``site`` sits in a decoder layer above the first of an architecture in the site table."""
        return (
            site.component != "module"
            and isinstance(site.layer, int)
            and site.layer >= 1
            and lm.spec.architecture in ARCHITECTURES
        )

    @classmethod
    @torch.no_grad()
    def collect(cls, lm, inputs: Sequence, *, layer: int, batch_size: int = 128) -> PrefixCache:
        """Run ``inputs`` up to ``layer`` (the run stops there) and keep each one's real tokens."""
        target = _sites.resolve(lm, _sites.Site("resid_pre", layer))
        streams: list[torch.Tensor] = []
        for a in range(0, len(inputs), batch_size):
            batch = rows(lm, inputs[a : a + batch_size])
            B, T = batch.input_ids.shape
            pos = torch.arange(T, device=batch.input_ids.device).expand(B, T)
            (h,) = execute(lm, batch, [Op(_sites.Site("resid_pre", layer), target, pos, read=True)]).reads  # (B, T, d)
            real = batch.attention_mask.bool()
            streams += [h[i, real[i]].detach() for i in range(B)]
        return cls(layer, streams)

    def stream(self, idx: Sequence[int], batch: Batch) -> torch.Tensor:
        """The cached streams of ``idx`` laid out like ``batch`` (padding slots zero): (B, T, d)."""
        real = batch.attention_mask.bool()
        lengths = real.sum(-1).tolist()
        got = [self.streams[i] for i in idx]
        cached = [len(g) for g in got]
        if cached != lengths:
            raise ValueError(
                f"the batch's prompts are not the ones this cache was collected on: rows {list(idx)} have "
                f"{lengths} tokens in the batch but {cached} in the cache; collect the cache on the same inputs"
            )
        out = got[0].new_zeros(*batch.input_ids.shape, got[0].shape[-1])
        out[real] = torch.cat(got)
        return out

    @contextlib.contextmanager
    def replay(self, lm, idx: Sequence[int], batch: Batch):
        """Within the block, a forward of ``batch`` skips layers ``0..layer-1`` and starts from the cache."""
        execution_order(lm)  # recorded (and cached) with the real layers before any is swapped out
        stand_ins = layer_stand_ins(lm, self.layer, self.stream(idx, batch), purpose="prefix replay")
        with swapped(lm.hf, stand_ins):
            yield
