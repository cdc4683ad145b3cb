"""Activation caches and the logit lens: read many sites in one run, and decode each layer's residual stream.

Example:
    >>> sites = [Site("resid_post", 0, last()), Site("mlp_out", 1, at(2))]
    >>> acts = cache(lm, base, at=sites)                   # one run that stops after the last site
    >>> acts[sites[1]].shape                               # Site -> (B, k, w)
    torch.Size([4, 1, 32])
    >>> lens = logit_lens(lm, base)                        # every layer, at the last token
    >>> lens                                               # logits: (n_layers, B, k, vocab)
    LogitLens(layers=[0, 1], pos=last(), logits=(2, 4, 1, 97))
    >>> torch.allclose(lens.logits[-1, :, -1], run(lm, base).logits, atol=1e-5)   # the last layer is the model
    True
    >>> lens.rank(5).shape, lens.top_k(2)[-1]              # (layers, B, k); the last layer's top 2 for prompt 0
    (torch.Size([2, 4, 1]), [(..., ...), (..., ...)])

The logit lens (nostalgebraist 2020) reads the residual stream after layer ``l`` (``resid_post``) and applies the
model's own final norm and unembedding to it, as if the remaining layers were skipped:
``logits_l = W_U norm(h_l)`` (plus the final softcapping on Gemma). At the last layer this is exactly the model's
output; earlier layers show when the answer becomes linearly decodable in the model's own output basis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from . import sites as _sites
from .dii import collect
from .engine import legacy, readout
from .inputs import InputError, encode, token_ids
from .positions import Position, last
from .sites import Site


def cache(model, inputs, *, at: Site | Sequence[Site], backend: str | None = None) -> dict[Site, torch.Tensor]:
    """The vectors at every site, ``{Site: (B, k, w)}``, from one run that stops after the last site.

    Example:
        >>> acts = cache(lm, base, at=[Site("resid_pre", l, last()) for l in range(2)])
        >>> [tuple(v.shape) for v in acts.values()]         # (B, k, d_model) per site, in the order asked
        [(4, 1, 32), (4, 1, 32)]

    The same reads as :func:`interp.collect` (a ReFT model reads under its edits), keyed by site; a site asked
    for twice appears once.
    """
    sites = [at] if isinstance(at, Site) else list(dict.fromkeys(at))
    if not sites:
        raise InputError("cache(at=[]) has no sites to read; pass a Site or a list of them")
    with legacy("cache", backend, None):
        return dict(zip(sites, collect(model, inputs, at=sites)))


@dataclass
class LogitLens:
    """Logits decoded from each layer's residual stream, with probabilities, ranks and top tokens.

    Attributes:
        logits: (n_layers, B, k, vocab) float logits at the positions read.
        layers: the layers, in the order of ``logits``.
        pos: the positions read (``k`` per prompt).
        positions: (B, k) columns of the padded batch that were read.
    """

    logits: torch.Tensor
    layers: list[int]
    pos: Position
    positions: torch.Tensor
    lm: object = None

    def __repr__(self) -> str:
        return f"LogitLens(layers={self.layers}, pos={self.pos!r}, logits={tuple(self.logits.shape)})"

    def probs(self) -> torch.Tensor:
        """Softmax over the vocabulary: (n_layers, B, k, vocab)."""
        return self.logits.float().softmax(-1)

    def _ids(self, target) -> torch.Tensor:
        B = self.logits.shape[1]
        return (
            token_ids(self.lm, target, B)
            .to(self.logits.device)[None, :, None, None]
            .expand(self.logits.shape[0], B, self.logits.shape[2], 1)
        )  # (L, B, k, 1)

    def prob(self, target) -> torch.Tensor:
        """Probability of ``target`` (a word or id, or one per prompt) at every layer and position: (L, B, k)."""
        return self.probs().gather(-1, self._ids(target))[..., 0]

    def rank(self, target) -> torch.Tensor:
        """Rank of ``target`` among all tokens (0 = the top prediction) at every layer and position: (L, B, k)."""
        lg = self.logits.float()
        own = lg.gather(-1, self._ids(target))  # (L, B, k, 1)
        return (lg > own).sum(-1)

    def top_k(self, k: int = 5, *, row: int = 0, slot: int = -1) -> list[list[tuple[str | int, float]]]:
        """Per layer, the ``k`` most likely tokens (decoded, or ids without a tokenizer) with their probabilities,
        for prompt ``row`` at its ``slot``-th position read."""
        if not 1 <= k <= self.logits.shape[-1]:
            raise InputError(f"top_k(k={k!r}): k must be between 1 and the vocabulary size {self.logits.shape[-1]}")
        p, i = self.logits[:, row, slot].float().softmax(-1).topk(k, dim=-1)  # (L, k) each
        tok = getattr(self.lm, "tokenizer", None)
        name = (lambda t: tok.decode([t])) if tok is not None else (lambda t: t)
        return [[(name(int(t)), float(q)) for t, q in zip(ti, pi)] for ti, pi in zip(i, p)]


def logit_lens(
    model,
    inputs,
    *,
    layers: Iterable[int] | None = None,
    pos: Position | None = None,
    backend: str | None = None,
) -> LogitLens:
    """Decode each layer's ``resid_post`` through the model's final norm and unembedding.

    Example:
        >>> lens = logit_lens(lm, base, layers=[0, 1], pos=first(6))      # every token of the 6-token prompts
        >>> lens.prob(5).shape                                            # (layers, B, k): p(token 5)
        torch.Size([2, 4, 6])
        >>> from interp.viz import plot_logit_lens
        >>> ax = plot_logit_lens(lens.prob(5)[:, 0], lens.layers, list(range(6)), token="5")   # prompt 0

    Args:
        inputs: prompts or token ids.
        layers: layers to read (default: all), each after its block (``resid_post``).
        pos: the positions to decode (default: the last token); ``first(T)`` reads every token of T-token prompts.

    Returns:
        A :class:`LogitLens`: ``logits`` (n_layers, B, k, vocab) plus ``prob``/``rank``/``top_k``. One run reads
        every layer and stops after the last one asked for.
    """
    lm = model.lm if hasattr(model, "edit_ops") and hasattr(model, "lm") else model  # a ReFT model reads its LM
    layers = list(range(lm.n_layers) if layers is None else layers)
    if not layers:
        raise InputError("logit_lens(layers=[]) has no layers to read; pass some, or None for all")
    pos = last() if pos is None else pos
    batch = encode(lm, inputs)
    sites = [Site("resid_post", layer, pos) for layer in layers]
    with legacy("logit_lens", backend, None):
        reads = collect(model, batch, at=sites)  # [(B, k, d)] per layer
    norm = lm.hf.get_submodule(_sites.architecture(lm).final_norm)
    with torch.no_grad():
        logits = torch.stack([readout(lm, norm(h)) for h in reads])  # (L, B, k, d) -> (L, B, k, V)
    positions = pos.resolve(batch.attention_mask, batch.input_ids, lm.tokenizer)
    return LogitLens(logits.float(), layers, pos, positions, lm)


__all__ = ["cache", "logit_lens", "LogitLens"]
