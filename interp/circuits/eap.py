"""Edge attribution patching (EAP) and EAP with integrated gradients (EAP-IG): every edge's score at once.

Example:
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
    >>> s = eap(lm, pp)                                     # one clean, one corrupted forward, one backward
    >>> s.method, s.scores.shape, len(s.top(10))
    ('eap', torch.Size([110]), 10)
    >>> eap(lm, pp, steps=3).method, eap(lm, pp, steps=2, ig_on="activations").method
    ('eap-ig-inputs', 'eap-ig-activations')

With ``a_u`` a sender's output, ``x_v`` a receiver's input and ``m`` the mean metric over pairs, patching the edge
u -> v alone from the corrupted run changes the metric by about (Syed et al. 2023; Hanna et al. 2024)

    score(u -> v) = (a_u_corrupt - a_u_clean) . dm/dx_v

from one corrupted forward (every ``a_u``), one clean forward through the edge engine with a zero added at every
receiver's input, and one backward (``dm/dx_v`` for every receiver), whatever the number of edges. On Gemma 2/3 a
head's output reaches the residual stream through its block's norm, so its difference is carried through that
norm's Jacobian at the clean sum (``J (a_u_corrupt - a_u_clean)``, forward-mode autograd): the first-order term of
the exact edge patch as :mod:`interp.engine.edges` defines it. The score equals the exact effect
(:func:`interp.circuits.run.exact_edge_effects`) where the metric is linear in the receiver's input, and agrees to
first order for small patches everywhere.

EAP-IG averages the gradient over ``steps`` points between the corrupted and the clean run, as EAP-IG's reference
code does (``alpha = k / steps``, k = 0 .. steps - 1): ``ig_on="inputs"`` interpolates the input embeddings (Hanna
et al. 2024; MIB's EAP-IG), ``"activations"`` interpolates each block's outputs in turn (the input embeddings, a
layer's heads, a layer's MLP; ``alpha = k / steps``, k = 1 .. steps), the rest of the run computed from them, and
scores that block's outgoing edges from those gradients (Marks et al. 2024's integrated gradients on activations).
Costs (wall time on CPU, Gemma-3-270M, 8 IOI pairs, a loaded 2-core machine): EAP about 10 plain forwards of the
model (the clean run stacks each layer's attention once per head and keeps 3H + 1 copies of the residual per layer
for their gradients, then its backward); EAP-IG on inputs about ``steps`` times that; on activations
``(2 n_layers + 1) steps`` gradient runs. Exact patching costs about half a forward per edge.
"""

from __future__ import annotations

import time

import torch

from ..engine.edges import EdgeLayout, block_jvp, edge_forward
from ..errors import InputError
from .edge_scores import EdgeScores
from .graph import Graph
from .run import Metric, PairBatch, edge_coords, layout_of, pair_batches

IG_ON = ("inputs", "activations")


def eap(
    lm,
    pairs,
    *,
    graph: Graph | None = None,
    metric: Metric | None = None,
    steps: int = 0,
    ig_on: str = "inputs",
    batch_size: int = 8,
) -> EdgeScores:
    """Score every edge of ``graph`` (default ``Graph.of(lm)``): EAP, or EAP-IG with ``steps`` > 0.

    Args:
        pairs: :class:`interp.Pairs` (base = clean, source = corrupted; each pair of one length in tokens).
        metric: a function of the last-token logits (B, V) -> (B,) (default: the pairs' logit difference).
            It sees chunks of up to 8 pairs, so it must score each row alone (per-pair answers: leave it None).
        steps: 0 for EAP; the number of interpolation steps for EAP-IG (5 to 30 in the literature).
        ig_on: ``"inputs"`` or ``"activations"`` (EAP-IG only).
        batch_size: pairs per forward.

    Returns:
        :class:`EdgeScores`: per edge the estimated change in the mean metric when that edge alone takes the
        corrupted run's value; ``meta`` holds ``clean_metric``, ``corrupted_metric``, ``n_pairs`` and ``steps``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be a whole number >= 0 (0: EAP; e.g. 5: EAP-IG); got {steps!r}")
    if ig_on not in IG_ON:
        raise InputError(f"ig_on must be one of {IG_ON}; got {ig_on!r}")
    graph, layout = layout_of(lm, graph)
    t0 = time.perf_counter()
    batches = pair_batches(lm, pairs, metric, batch_size)
    S, R = layout.n_senders, layout.n_receivers
    total = torch.zeros(S, R, dtype=torch.float64)
    m_clean = m_corrupt = 0.0
    n = sum(len(b) for b in batches)
    for b in batches:
        with torch.no_grad():
            corrupt = edge_forward(lm, b.corrupt, layout)
        m_corrupt += float(b.score(corrupt.logits).sum())
        if steps == 0 or ig_on == "inputs":
            part, m = _inputs(lm, layout, b, corrupt.outputs, steps)
        else:
            part, m = _activations(lm, layout, b, corrupt.outputs, steps)
        total += part
        m_clean += m
    r, s = edge_coords(graph)
    scores = (total / n)[s, r]
    method = "eap" if steps == 0 else f"eap-ig-{ig_on}"
    meta = dict(clean_metric=m_clean / n, corrupted_metric=m_corrupt / n, n_pairs=n, steps=steps)
    return EdgeScores(graph, scores.float(), method, time.perf_counter() - t0, meta)


def _inputs(lm, layout: EdgeLayout, b: PairBatch, corrupt: torch.Tensor, steps: int):
    """EAP (steps 0) or EAP-IG on the input embeddings: summed (S, R) scores and the summed clean metric."""
    if steps == 0:
        clean, grads, m_clean = _gradients(lm, layout, b)
        return _scores(lm, layout, clean, corrupt - clean, grads), m_clean
    with torch.no_grad():
        run = edge_forward(lm, b.clean, layout)
    delta = corrupt - run.outputs
    clean_e, corrupt_e = b.clean.embed, b.corrupt.embed
    total = torch.zeros(layout.n_senders, layout.n_receivers, dtype=torch.float64)
    for k in range(steps):
        embed = corrupt_e + (k / steps) * (clean_e - corrupt_e)
        outs, grads, _ = _gradients(lm, layout, b, embed=embed)
        total += _scores(lm, layout, outs, delta, grads)  # the norms' Jacobians where this step's run is
    return total / steps, float(b.score(run.logits).sum())


def _activations(lm, layout: EdgeLayout, b: PairBatch, corrupt: torch.Tensor, steps: int):
    """EAP-IG on activations: each block's outputs interpolated in turn; summed (S, R) scores, clean metric."""
    with torch.no_grad():
        clean = edge_forward(lm, b.clean, layout)
    delta = corrupt - clean.outputs
    H = layout.n_heads
    blocks = [[0]]
    for i in range(layout.n_layers):
        blocks += [[layout.head(i, h) for h in range(H)], [layout.mlp(i)]]
    total = torch.zeros(layout.n_senders, layout.n_receivers, dtype=torch.float64)
    for senders in blocks:
        for k in range(1, steps + 1):
            alpha = k / steps
            keep = torch.ones(layout.n_receivers, layout.n_senders)
            keep[:, senders] = alpha
            keep = keep * _edge_mask(layout)
            _, grads, _ = _gradients(lm, layout, b, keep=keep, corrupt=corrupt)
            at = corrupt + alpha * (clean.outputs - corrupt)  # where the interpolated block's norm is taken
            part = _scores(lm, layout, at, delta, grads)
            total[senders] += part[senders]
    return total / steps, float(b.score(clean.logits).sum())


def _edge_mask(layout: EdgeLayout) -> torch.Tensor:
    """(R, S): 1 where the sender writes before the receiver reads (keep=1 elsewhere would be meaningless)."""
    H = layout.n_heads
    mask = torch.zeros(layout.n_receivers, layout.n_senders)
    for i in range(layout.n_layers):
        before = 1 + i * (H + 1)
        mask[layout.attn_receivers(i), :before] = 1
        mask[layout.mlp_receiver(i), : before + (0 if layout.parallel else H)] = 1
    mask[-1] = 1
    return mask


def _gradients(lm, layout: EdgeLayout, b: PairBatch, **run):
    """One edge run with a zero at every receiver's input: sender outputs (S, B, T, d), d(sum of the metric)/d
    receiver input (R, B, T, d), and the summed metric."""
    with torch.enable_grad():
        out = edge_forward(lm, b.clean, layout, taps=True, **run)
        m = b.score(out.logits)
        if not m.requires_grad:
            raise InputError("the metric does not depend on the logits it is given; EAP needs a differentiable metric")
        (grads,) = torch.autograd.grad(m.sum(), [out.taps])
    return out.outputs.detach(), grads.detach(), float(m.detach().sum())


def _scores(lm, layout: EdgeLayout, at: torch.Tensor, delta: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """(S, R): each sender's difference, through its block's norm at ``at``, dotted with each receiver's gradient."""
    seen = block_jvp(lm, layout, at, delta)
    return torch.einsum("sx,rx->sr", seen.flatten(1).double(), grads.flatten(1).double()).cpu()


__all__ = ["IG_ON", "eap"]
