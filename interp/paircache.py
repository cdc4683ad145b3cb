"""Activations a DAS fit reads but never changes, collected once and shared by every fit that needs them.

Example:
    >>> cache = PairCache(lm)
    >>> a = fit_das(lm, train, at=site, rank=1, steps=2, cache=cache)     # collects the sources and the stream
    >>> b = fit_das(lm, train, at=site, rank=4, steps=2, cache=cache)     # reuses them: no collection run
    >>> cache
    PairCache(1 site, 1 layer, ... prompts, ... MB)

The model is frozen during a fit, so a source prompt's vectors at a site and a base prompt's residual stream
entering the site's layer (:class:`interp.replay.PrefixCache`) are the same in every step, every fit and every
featurizer trained there. ``fit_das(..., cache=c)``, ``fit_mdas`` and ``sweep_das`` (one cache per sweep: the
sources of a site serve every rank, the streams of a layer every position) read them from ``c``, collecting only
prompts it has not seen (a prompt is keyed by its text or token ids, so the base of one pair set and the source
of another share one run). Keep one cache per model; it must not be used after the model's weights change.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from .batches import collect_rows
from .causal import Pairs
from .errors import DASError
from .replay import PrefixCache
from .sites import Site


def prompt_key(x) -> object:
    """A hashable key for one prompt: its text, or its token ids as a tuple (a bare id is a one-token prompt).

    Example:
        >>> prompt_key("Paris is in"), prompt_key(torch.tensor([1, 2])), prompt_key(5)
        ('Paris is in', (1, 2), (5,))
    """
    if isinstance(x, str):
        return x
    if isinstance(x, numbers.Integral):
        return (int(x),)
    if isinstance(x, torch.Tensor):
        return tuple(int(i) for i in x.reshape(-1).tolist())
    return tuple(int(i) for i in x)


class PairCache:
    """Source vectors per (site, prompt) and residual streams per (layer, prompt) of one model, collected once.

    Example:
        >>> cache = PairCache(lm)
        >>> cache.sources(train, site).shape                   # (N, k, w * n_variables), as collect_sources
        torch.Size([30, 1, 32])
        >>> len(cache.prefix(train.base, layer=1).streams)     # interp.replay.PrefixCache of the base prompts
        30
    """

    def __init__(self, lm, *, batch_size: int = 128):
        self.lm = lm
        self.batch_size = int(batch_size)
        self.vectors: dict[Site, dict[object, torch.Tensor]] = {}  # site -> prompt -> (k, w)
        self.streams: dict[int, dict[object, torch.Tensor]] = {}  # layer -> prompt -> (T, d)

    def __repr__(self) -> str:
        tensors = [t for d in (*self.vectors.values(), *self.streams.values()) for t in d.values()]
        mb = sum(t.numel() * t.element_size() for t in tensors) / 2**20
        prompts = len({k for d in (*self.vectors.values(), *self.streams.values()) for k in d})
        s, layer = len(self.vectors), len(self.streams)
        return f"PairCache({s} site{'s' * (s != 1)}, {layer} layer{'s' * (layer != 1)}, {prompts} prompts, {mb:.1f} MB)"

    def check(self, lm) -> None:
        """DASError unless ``lm`` is the model this cache was made for."""
        if lm is not self.lm:
            raise DASError(
                f"this PairCache holds activations of {self.lm!r}, not of {lm!r}; make one cache per model: "
                "PairCache(lm)"
            )

    def clear(self) -> None:
        """Forget everything collected (e.g. after the model's weights changed)."""
        self.vectors.clear()
        self.streams.clear()

    def rows(self, inputs: Sequence, site: Site) -> torch.Tensor:
        """Vectors of ``inputs`` at ``site``: (N, k, w), each prompt collected once, no grad."""
        store = self.vectors.setdefault(site, {})
        keys = [prompt_key(x) for x in inputs]
        todo = {k: x for k, x in zip(keys, inputs) if k not in store}
        if todo:
            (got,) = collect_rows(self.lm, list(todo.values()), [site], batch_size=self.batch_size)
            store.update(zip(todo, got))
        return torch.stack([store[k] for k in keys])

    def sources(self, pairs: Pairs, site: Site) -> torch.Tensor:
        """The pairs' source vectors at ``site``, variables side by side: (N, k, w * n_variables)."""
        return torch.cat([self.rows(src, site) for src in pairs.sources], dim=-1)

    def prefix(self, inputs: Sequence, *, layer: int) -> PrefixCache:
        """The residual stream entering ``layer`` for each of ``inputs`` (an :class:`interp.replay.PrefixCache`)."""
        store = self.streams.setdefault(int(layer), {})
        keys = [prompt_key(x) for x in inputs]
        todo = {k: x for k, x in zip(keys, inputs) if k not in store}
        if todo:
            got = PrefixCache.collect(self.lm, list(todo.values()), layer=layer, batch_size=self.batch_size)
            store.update(zip(todo, got.streams))
        return PrefixCache(int(layer), [store[k] for k in keys])


__all__ = ["PairCache", "prompt_key"]
