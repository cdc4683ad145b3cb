"""Run the model with edges patched: a circuit's metric (counterfactual or mean ablation), and exact edge effects.

Example:
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
    >>> g = Graph.of(lm)
    >>> full = run_circuit(lm, pp, Circuit.full(g))            # every edge kept: the clean model, per pair
    >>> empty = run_circuit(lm, pp, Circuit.empty(g))          # none kept: the corrupted (source) run
    >>> full.shape, bool(torch.allclose(empty, run_circuit(lm, pp, Circuit.empty(g), ablation="counterfactual")))
    (torch.Size([4]), True)
    >>> exact_edge_effects(lm, pp, g, [("input", "logits"), "a1.h0->m1"]).shape   # each edge patched alone
    torch.Size([2])

``run_circuit`` patches every edge outside the circuit from the corrupted run (``ablation="counterfactual"``: the
pair's source) or sets it to the sender's mean (``"mean"``: ``means`` given, or by default each sender's mean over
the pairs' source prompts, all tokens), so that only the circuit's edges carry the clean run; it returns the
metric per pair. The full circuit gives the clean model's metric and the empty one the corrupted (or mean) run's,
up to float rounding (:mod:`interp.engine.edges`). The metric is a function of the last token's logits (B, V)
returning one value per pair; by default ``logit(base answer) - logit(source answer)``, as
:func:`interp.attribution.attribution_patch` scores.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..causal import Pairs
from ..engine.edges import Captured, EdgeLayout, capture, edge_forward
from ..engine.plan import Batch
from ..errors import InputError
from ..inputs import encode, token_ids
from .edge_scores import Circuit
from .graph import Graph

Metric = Callable[[torch.Tensor], torch.Tensor]  # last-token logits (B, V) -> (B,), row by row
ABLATIONS = ("counterfactual", "mean")


class LogitDiff:
    """The default metric: ``logit(a) - logit(b)`` per row (B,)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, self.a.to(logits.device)] - logits[rows, self.b.to(logits.device)]


@dataclass
class PairBatch:
    """A chunk of pairs ready for edge runs: the clean (base) and corrupted (source) captures, and the metric."""

    clean: Captured
    corrupt: Captured
    metric: Metric

    def __len__(self) -> int:
        return len(self.clean)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """The metric per pair (B,), float64; for G tiled copies of the batch (G * B, V), per row (G * B,)."""
        B = len(self)
        if logits.shape[0] != B:
            return torch.cat([self.score(part) for part in logits.split(B)])
        m = torch.as_tensor(self.metric(logits))
        if m.dim() == 0:
            m = m.expand(logits.shape[0])
        if m.shape != (logits.shape[0],):
            raise InputError(
                f"the metric returned shape {tuple(m.shape)} for {logits.shape[0]} pairs; expected one value per pair"
            )
        return m.double()


def layout_of(lm, graph: Graph | None) -> tuple[Graph, EdgeLayout]:
    """``graph`` (default ``Graph.of(lm)``), checked against ``lm``, and the engine's layout of it."""
    own = Graph.of(lm)
    if graph is None:
        graph = own
    if not isinstance(graph, Graph):
        raise InputError(f"graph is a {type(graph).__name__}; expected interp.circuits.graph.Graph (Graph.of(lm))")
    if (graph.n_layers, graph.n_heads, graph.parallel) != (own.n_layers, own.n_heads, own.parallel):
        raise InputError(f"{graph!r} is not the graph of this model ({own!r}); build it with Graph.of(lm)")
    return graph, EdgeLayout(graph.n_layers, graph.n_heads, graph.parallel)


def dense_keep(graph: Graph, keep: torch.Tensor) -> torch.Tensor:
    """An edge vector (..., E) as the engine's (..., R, S) matrix (zero where no edge exists)."""
    r, s = edge_coords(graph)
    out = torch.zeros(*keep.shape[:-1], len(graph.receivers), len(graph.senders), dtype=torch.float32)
    out[..., r, s] = keep.float()
    return out


def edge_coords(graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
    """Per edge, its receiver's and its sender's index: two (E,) tensors."""
    rid = {n: i for i, n in enumerate(graph.receivers)}
    sid = {n: i for i, n in enumerate(graph.senders)}
    return torch.tensor([rid[v] for _, v in graph.edges]), torch.tensor([sid[u] for u, _ in graph.edges])


def pair_batches(lm, pairs, metric: Metric | None, batch_size: int) -> list[PairBatch]:
    """Chunks of ``batch_size`` pairs, each base and source encoded together and checked token for token."""
    if not isinstance(pairs, Pairs):
        raise InputError(
            f"pairs is a {type(pairs).__name__}; expected interp.Pairs (e.g. interp.tasks.ioi_pairs(16), or "
            "Pairs.of(base, source, base_answer=..., source_answer=...))"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1; got {batch_size!r}")
    if metric is not None and not callable(metric):
        raise InputError(f"metric is {metric!r}; expected a function of the last-token logits (B, V) -> (B,)")
    base, source = _rows(pairs.base), _rows(pairs.source)
    n = len(base)
    if n == 0:
        raise InputError("got no pairs; expected at least one base/source pair")
    answers = None
    if metric is None:
        answers = token_ids(lm, pairs.base_labels, n), token_ids(lm, pairs.labels, n)
    out = []
    for i in range(0, n, batch_size):
        j = min(n, i + batch_size)
        both = encode(lm, base[i:j] + source[i:j])
        k = j - i
        ids, mask = both.input_ids, both.attention_mask
        bad = (mask[:k] != mask[k:]).any(-1).nonzero().flatten().tolist()
        if bad:
            p = i + bad[0]
            raise InputError(
                f"pair {p}: base has {int(mask[bad[0]].sum())} tokens but source {int(mask[k + bad[0]].sum())}; "
                "edge patching pairs positions one to one, so each base and its source need the same length"
            )
        m = metric if answers is None else LogitDiff(answers[0][i:j], answers[1][i:j])
        clean, corrupt = Batch(ids[:k], mask[:k]), Batch(ids[k:], mask[k:])
        out.append(PairBatch(capture(lm, clean), capture(lm, corrupt), m))
    return out


def _as_index(e) -> int | None:
    """An edge index given as an int, a 0-d tensor or a NumPy integer; None for names and (sender, receiver)."""
    if isinstance(e, bool):
        return None
    try:
        return operator.index(e)
    except TypeError:
        return None


def _rows(x) -> list:
    if isinstance(x, torch.Tensor):
        return list(x if x.dim() == 2 else x[None])
    return list(x)


def run_circuit(
    lm, pairs, circuit: Circuit, *, ablation: str = "counterfactual", means=None, metric: Metric | None = None
) -> torch.Tensor:
    """The metric per pair (N,) of the model with every edge outside ``circuit`` patched (see the module).

    Example:
        >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
        >>> run_circuit(lm, pp, Circuit.empty(Graph.of(lm)), ablation="mean").shape
        torch.Size([4])

    Args:
        circuit: a :class:`Circuit` of this model's graph.
        ablation: ``"counterfactual"`` (edges outside take the source run's sender outputs) or ``"mean"``.
        means: with ``"mean"``: (S, d) or (S, T, d) sender means in the graph's sender order (e.g.
            :func:`sender_means`); default: each sender's mean over the pairs' source prompts.
        metric: a function of the last-token logits (B, V) -> (B,); default the pairs' logit difference.
            It sees chunks of up to 8 pairs, so it must score each row alone (per-pair answers: leave it None).
    """
    if not isinstance(circuit, Circuit):
        raise InputError(f"circuit is a {type(circuit).__name__}; expected a Circuit (e.g. scores.top(100))")
    if ablation not in ABLATIONS:
        raise InputError(f"ablation must be one of {ABLATIONS}; got {ablation!r}")
    graph, layout = layout_of(lm, circuit.graph)
    means = check_means(means, graph, lm, pairs, ablation)  # before any forward
    batches = pair_batches(lm, pairs, metric, 8)
    if ablation == "mean" and means is None:
        means = sender_means(lm, pairs.source, graph)
    keep = dense_keep(graph, circuit.keep)
    out = []
    with torch.no_grad():
        for b in batches:
            c = means if ablation == "mean" else edge_forward(lm, b.corrupt, layout).outputs
            out.append(b.score(edge_forward(lm, b.clean, layout, keep=keep, corrupt=c).logits))
    return torch.cat(out).float().cpu()


def exact_edge_effects(
    lm, pairs, graph: Graph | None, edges: Sequence, *, metric: Metric | None = None
) -> torch.Tensor:
    """For each listed edge, the change in the mean metric when that edge alone is patched from the corrupted run
    (all others clean): what :func:`interp.circuits.eap.eap` estimates, exactly; (len(edges),).

    ``edges``: ``(sender, receiver)`` pairs, ``"sender->receiver"`` names or edge indices of ``graph``.
    """
    graph, layout = layout_of(lm, graph)
    idx = [graph.index(e) if (i := _as_index(e)) is None else i for e in edges]
    bad = [i for i in idx if not 0 <= i < len(graph)]
    if bad:
        raise InputError(f"edge indices {bad[:3]} are outside {graph!r} (0 to {len(graph) - 1})")
    batches = pair_batches(lm, pairs, metric, 8)
    total = torch.zeros(len(idx), dtype=torch.float64)
    n = 0
    group = 8
    with torch.no_grad():
        for b in batches:
            corrupt = edge_forward(lm, b.corrupt, layout).outputs
            clean = b.score(edge_forward(lm, b.clean, layout).logits).sum()
            for g in range(0, len(idx), group):
                chunk = idx[g : g + group]
                keep = torch.ones(len(chunk), len(graph))
                keep[torch.arange(len(chunk)), torch.tensor(chunk)] = 0
                logits = edge_forward(lm, b.clean, layout, keep=dense_keep(graph, keep), corrupt=corrupt).logits
                m = b.score(logits).reshape(len(chunk), len(b)).sum(-1)
                total[g : g + len(chunk)] += m.cpu() - clean.cpu()
            n += len(b)
    return (total / n).float()


def sender_means(lm, prompts, graph: Graph | None = None) -> torch.Tensor:
    """Each sender's mean output (S, d) over ``prompts`` (all real tokens): the default of mean ablation."""
    graph, layout = layout_of(lm, graph)
    total, count = None, 0
    rows = _rows(prompts)
    with torch.no_grad():
        for i in range(0, len(rows), 8):
            batch = encode(lm, rows[i : i + 8])
            outs = edge_forward(lm, capture(lm, batch), layout).outputs  # (S, B, T, d)
            mask = batch.attention_mask.to(outs.device, outs.dtype)[None, :, :, None]
            part = (outs * mask).sum((1, 2))
            total = part if total is None else total + part
            count += int(batch.attention_mask.sum())
    return total / count


def check_means(means, graph: Graph, lm, pairs: Pairs, ablation: str) -> torch.Tensor | None:
    """``means`` for mean ablation, checked (None stays None): (S, d), or (S, T, d) when every prompt of ``pairs`` has
    T tokens; refused with any other ablation."""
    if means is None:
        return None
    if ablation != "mean":
        raise InputError("means are used only with ablation='mean'; drop means or pass ablation='mean'")
    means = torch.as_tensor(means)
    S, d = len(graph.senders), lm.spec.d_model
    if means.dim() not in (2, 3) or means.shape[0] != S or means.shape[-1] != d:
        raise InputError(
            f"means must be (S, d) = ({S}, {d}) or (S, T, d), one per sender in graph order (see sender_means); "
            f"got shape {tuple(means.shape)}"
        )
    if means.dim() == 3 and isinstance(pairs, Pairs):  # one mean per position: each prompt, unpadded, has T tokens
        lengths = sorted({int(n) for n in encode(lm, _rows(pairs.base)).attention_mask.sum(1)})
        if lengths != [means.shape[1]]:
            raise InputError(
                f"means of shape (S, T, d) with T = {means.shape[1]} need every prompt to have {means.shape[1]} "
                f"tokens (positions are matched one to one); these prompts have {lengths}: give (S, d) means, or "
                "prompts of one length"
            )
    return means.to(lm.device, lm.dtype)


__all__ = [
    "ABLATIONS",
    "check_means",
    "LogitDiff",
    "PairBatch",
    "dense_keep",
    "edge_coords",
    "exact_edge_effects",
    "layout_of",
    "pair_batches",
    "run_circuit",
    "sender_means",
]
