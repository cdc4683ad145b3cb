"""Concept detection as AxBench scores it: a direction scores every token, a text by the max (or mean) over its
tokens, and a concept by the ROC AUC of those text scores (positives against negatives).

Example:
    >>> roc_auc(torch.tensor([0.9, 0.4, 0.4, 0.1]), torch.tensor([1, 1, 0, 0]))   # one tie: counts one half
    tensor(0.8750)
    >>> text_scores([torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[2.0, 1.0]])], torch.tensor([1.0, 0.0]))
    (tensor([3., 2.]), tensor([2., 2.]))

Tokens are each text's real tokens after BOS (AxBench's ``prefix_length`` 1). The activations of every text are
collected once (:func:`streams`: the residual stream after ``layer``, one (T_i, d) tensor per text, from
:meth:`interp.replay.PrefixCache.collect`) and serve every method, the training of ReFT-r1 included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp import sites as _sites
from interp.engine import Op, execute, options
from interp.errors import InputError
from interp.inputs import pad
from interp.replay import PrefixCache


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The area under the ROC curve of ``scores`` for binary ``labels`` (1 positive): the probability that a random
    positive scores above a random negative, ties counting one half (the Mann-Whitney statistic, average ranks).

    Example:
        >>> roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([1, 0, 0]))
        tensor(1.)
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = torch.as_tensor(labels).flatten().bool()
    if s.shape != y.shape:
        raise InputError(f"roc_auc: {s.numel()} scores but {y.numel()} labels; give one label per score")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"roc_auc needs both classes; got {n_pos} positives and {n_neg} negatives")
    if not bool(torch.isfinite(s).all()):
        raise InputError("roc_auc: the scores are not all finite")
    values, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)  # sorted ascending
    below = torch.cumsum(counts, 0) - counts  # how many scores lie below each distinct value
    ranks = (below + (counts + 1) / 2.0)[inverse]  # 1-based average ranks
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return (u / (n_pos * n_neg)).to(torch.float32)


def text_scores(streams: Sequence[torch.Tensor], direction: torch.Tensor, *, relu: bool = False, offset: float = 0.0):
    """``(max, mean)`` over each text's tokens of ``h . direction - offset`` (``ReLU`` of it for ReFT-r1's latent)."""
    w = direction.detach().float().flatten()
    mx, mn = [], []
    for h in streams:
        s = h.float() @ w - offset
        s = torch.relu(s) if relu else s
        mx.append(s.max())
        mn.append(s.mean())
    return torch.stack(mx), torch.stack(mn)


def strip_bos(lm, seq: Sequence[int]) -> int:
    """1 when ``seq`` opens with the tokenizer's BOS (the tokens scored start after it), else 0."""
    bos = getattr(lm.tokenizer, "bos_token_id", None)
    return int(bos is not None and len(seq) > 0 and int(seq[0]) == bos)


@torch.no_grad()
def streams(lm, seqs: Sequence[Sequence[int]], layer: int, *, batch_size: int = 16, progress=None) -> list:
    """The residual stream after ``layer`` (``resid_post``) over every token of each sequence: (T_i, d) each.

    Sequences are run longest first in batches of ``batch_size`` (less padding); ``progress`` is a tqdm bar or None.
    """
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out: list[torch.Tensor | None] = [None] * len(seqs)
    last = layer + 1 >= lm.n_layers
    for a in range(0, len(order), batch_size):
        idx = order[a : a + batch_size]
        part = [list(seqs[i]) for i in idx]
        with options(backend="hooks"):
            if not last:  # the stream entering the next layer is this one's output: the run stops there
                got = PrefixCache.collect(lm, part, layer=layer + 1, batch_size=len(part)).streams
            else:
                got = _read_last(lm, part, layer)
        for i, h in zip(idx, got):
            out[i] = h.float()
        if progress is not None:
            progress.update(len(idx))
    return out  # type: ignore[return-value]


def _read_last(lm, part, layer):
    site = _sites.Site("resid_post", layer)
    batch = pad(lm, part, padding_side="right")
    B, T = batch.input_ids.shape
    op = Op(site, _sites.resolve(lm, site), torch.arange(T, device=batch.input_ids.device).expand(B, T), read=True)
    (h,) = execute(lm, batch, [op]).reads
    return [h[b, : len(part[b])].detach() for b in range(B)]


__all__ = ["roc_auc", "streams", "strip_bos", "text_scores"]
