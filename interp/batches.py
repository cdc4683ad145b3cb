"""Counterfactual pairs -> left-padded batches and cached site vectors, checked before any forward pass.

Example:
    >>> batch = rows(lm, [[5, 6, 7], [8, 9]])         # token ids (or prompts, with a tokenizer), left-padded
    >>> batch.input_ids.tolist(), batch.attention_mask.tolist()
    ([[5, 6, 7], [0, 8, 9]], [[1, 1, 1], [0, 1, 1]])
    >>> h0, h1 = collect_rows(lm, prompts, [Site("resid_post", 0, last()), Site("resid_post", 1, last())])
    >>> h0.shape                                                          # (N, k, w)
    torch.Size([8, 1, 32])
    >>> (src,) = collect_sources(lm, pairs, [site])                       # (N, k, w * n_variables), no grad
    >>> src.shape
    torch.Size([40, 1, 32])
    >>> check_positions(lm, pairs, Site("resid_post", 1, at(3)))          # PositionError names the bad side
    Traceback (most recent call last):
    interp.errors.PositionError: Site('resid_post', 1, at(3)) on the base inputs: position at(3) asks for token 3
    but prompt 0 has only 3 tokens; ...
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from .causal import Pairs
from .dii import collect
from .engine import Batch
from .errors import DASError  # noqa: F401  (defined in interp.errors, re-exported here)
from .inputs import InputError, encode
from .positions import PositionError
from .sites import Site


def rows(lm, items: Sequence) -> Batch:
    """A left-padded :class:`Batch` from prompts (str) or token-id sequences (ints, lists or tensors): the one
    padding rule of :func:`interp.inputs.pad` (the tokenizer's pad id, else 0, with the attention mask)."""
    items = _prompts(items)
    if not items:
        raise InputError("no inputs; expected at least one prompt or token-id sequence")
    return encode(lm, items)


def _prompts(items: Sequence) -> list:
    """``items`` as a list with one prompt each (a bare token id is a one-token prompt)."""
    return [[x] if isinstance(x, numbers.Integral) else x for x in items]


def check_pairs(pairs) -> Pairs:
    """``pairs`` itself when it is a non-empty :class:`~interp.causal.Pairs`; a DASError otherwise.

    Example:
        >>> check_pairs(pairs) is pairs
        True
        >>> check_pairs([("a", "b")])
        Traceback (most recent call last):
        interp.errors.DASError: expected interp.causal.Pairs (from CounterfactualDataset.render); got list
    """
    if not isinstance(pairs, Pairs):
        raise DASError(f"expected interp.causal.Pairs (from CounterfactualDataset.render); got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise DASError("the dataset is empty; expected at least one counterfactual pair (check the sampler/filter)")
    return pairs


def chunks(n: int, size: int):
    """Slices ``0:size, size:2*size, ...`` covering ``range(n)``: the batches of ``n`` items.

    Example:
        >>> list(chunks(5, 2))
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    for a in range(0, n, size):
        yield slice(a, min(n, a + size))


def collect_rows(lm, inputs: Sequence, sites: Sequence[Site], *, batch_size: int = 128) -> list[torch.Tensor]:
    """Vectors at each site for all ``inputs``, in batches, without grad: a list of (N, k, w) tensors.

    Example:
        >>> h0, h1 = collect_rows(lm, prompts, [Site("resid_post", 0, last()), Site("resid_post", 1, last())])
        >>> h0.shape, h1.shape
        (torch.Size([8, 1, 32]), torch.Size([8, 1, 32]))
    """
    return collect(lm, _prompts(inputs), at=list(sites), batch_size=batch_size)


def collect_sources(lm, pairs: Pairs, sites: Sequence[Site], *, batch_size: int = 128) -> list[torch.Tensor]:
    """Source vectors per site, variables side by side: a list of (N, k, w * n_variables) tensors, no grad.

    Each source run stops after the last site, so caching costs less than one forward per source.
    """
    per_var = [collect_rows(lm, src, sites, batch_size=batch_size) for src in pairs.sources]  # [var][site]
    return [torch.cat([v[i] for v in per_var], dim=-1) for i in range(len(sites))]


def check_positions(lm, pairs: Pairs, site: Site) -> None:
    """Raise PositionError before any forward pass if ``site.pos`` is undefined on some base or source."""
    k = None
    named = [("base", pairs.base)] + [(f"source of {v!r}", s) for v, s in zip(pairs.variables, pairs.sources)]
    for name, items in named:
        batch = rows(lm, items)
        try:
            pos = site.pos.resolve(batch.attention_mask, batch.input_ids, lm.tokenizer)
        except PositionError as e:
            raise PositionError(f"{site!r} on the {name} inputs: {e}") from None
        if k is not None and pos.shape[1] != k:
            raise PositionError(
                f"{site!r} selects {k} token(s) on the base inputs but {pos.shape[1]} on the {name} inputs; "
                "base and source must give the same number of positions"
            )
        k = pos.shape[1]


__all__ = ["DASError", "rows", "collect_rows", "collect_sources", "check_positions"]
