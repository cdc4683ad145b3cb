"""Faithfulness of circuits over edge budgets, computed exactly, with MIB's areas (CPR and CMD).

Example:
    >>> from interp.circuits.eap import eap
    >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
    >>> scores = eap(lm, pp)                                         # one score per edge of the graph
    >>> result = faithfulness(lm, pp, scores, budgets=(0.1, 0.5, 1.0))
    >>> E = len(scores.graph)
    >>> result.n_edges == [E // 10, E // 2, E], round(result.faithfulness[-1], 4)   # all edges: the model itself
    (True, 1.0)
    >>> sorted(result.to_dict())[:4]
    ['ablation', 'absolute', 'budgets', 'cmd']

For a circuit ``C`` (a set of edges of :class:`interp.circuits.graph.Graph`) and a metric ``m`` (by default the
logit difference between the base answer and the source answer at the last token, averaged over pairs), MIB's
circuit localization track (Mueller et al., ICML 2025) defines the faithfulness

    f(C) = (m(C) - m(empty)) / (m(model) - m(empty))

where ``m(C)`` runs the model on the base (clean) inputs with every edge *outside* ``C`` ablated, ``m(empty)``
ablates every edge and ``m(model)`` is the unablated model. Ablation is ``"counterfactual"`` (an edge carries the
sender's activation from the source, corrupted, run: MIB's "patching") or ``"mean"`` (the sender's mean). Each
``m(C)`` is an exact edge-patched forward, not an estimate: :func:`interp.circuits.run.run_circuit`'s computation,
with every budget's circuit stacked into the same forwards (:func:`circuit_metrics`).

Over a list of edge budgets ``b_1 < ... < b_n`` (fractions of the graph's edges; MIB's 0.1%, 0.2%, 0.5%, 1%, 2%,
5%, 10%, 20%, 50%, 100% by default) the circuit at budget ``b`` keeps the ``floor(b * E)`` edges with the largest
``|score|``, and two areas (trapezoids over the budgets as fractions, as MIB's ``evaluate_area_under_curve``)
summarise the curve:

- **CPR**, circuit performance ratio: the area under ``f`` (higher is better);
- **CMD**, circuit-model difference: the area under ``|1 - f|`` (lower is better; 0 when every circuit behaves
  like the whole model).

MIB reports CPR from circuits chosen by the signed score (``absolute=False``: the edges that help most) and CMD
from circuits chosen by ``|score|`` (``absolute=True``, the default here); one curve gives both areas, so pass
``absolute=False`` for a second curve where the signed choice matters. MIB also prunes edges left dangling (not on a
path from the input to the logits) before it runs a circuit; here every edge counts as chosen.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..causal import Pairs
from ..engine import execute
from ..engine.edges import edge_forward
from ..errors import InputError
from ..inputs import encode, token_ids
from ..positions import last
from .edge_scores import Circuit, EdgeScores
from .run import check_means, dense_keep, layout_of, pair_batches, sender_means

BUDGETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)  # MIB's edge fractions
ABLATIONS = ("counterfactual", "mean")


@dataclass
class Faithfulness:
    """A faithfulness curve over edge budgets and its areas (see the module docstring for the definitions).

    Example:
        >>> f = Faithfulness("eap", "counterfactual", [0.5, 1.0], [1, 2], [0.5, 1.0], m_model=2.0, m_empty=-1.0)
        >>> f.cpr, f.cmd                                        # trapezoids over the budgets
        (0.375, 0.125)
        >>> json.loads(f.to_json())["faithfulness"]
        [0.5, 1.0]

    Attributes:
        method: how the edges were scored (``EdgeScores.method``: ``"eap"``, ``"eap-ig"``, ...).
        ablation: ``"counterfactual"`` or ``"mean"``.
        budgets: fractions of the graph's edges, increasing, in (0, 1].
        n_edges: the edges kept at each budget (``floor(budget * total_edges)``).
        faithfulness: ``f`` at each budget.
        m_model: the metric of the unablated model on the base inputs (mean over pairs).
        m_empty: the metric with every edge ablated.
        m_circuit: the metric of each budget's circuit.
        m_corrupted: the metric of the unablated model on the source inputs (equals ``m_empty`` under
            counterfactual ablation).
        total_edges: the graph's edge count; absolute: circuits chosen by ``|score|`` (True) or by score.
        seconds: wall time of the runs.
        cpr, cmd: the areas under ``f`` and under ``|1 - f|`` (computed from the curve).
    """

    method: str
    ablation: str
    budgets: list[float]
    n_edges: list[int]
    faithfulness: list[float]
    m_model: float = math.nan
    m_empty: float = math.nan
    m_circuit: list[float] = field(default_factory=list)
    m_corrupted: float | None = None
    total_edges: int = 0
    absolute: bool = True
    seconds: float = 0.0
    cpr: float = field(init=False)
    cmd: float = field(init=False)

    def __post_init__(self):
        self.cpr, self.cmd = curve_areas(self.budgets, self.faithfulness)

    def points(self) -> str:
        """The curve in one line: ``"0.1%: 0.12, 1%: 0.55, ..."``."""
        return ", ".join(f"{100 * b:g}%: {f:.3f}" for b, f in zip(self.budgets, self.faithfulness))

    def to_dict(self) -> dict:
        """Every field as plain JSON values."""
        return asdict(self) | {"cpr": self.cpr, "cmd": self.cmd}

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON text."""
        return json.dumps(self.to_dict())


def curve_areas(budgets: Sequence[float], f: Sequence[float]) -> tuple[float, float]:
    """``(CPR, CMD)``: the trapezoid areas under ``f`` and under ``|1 - f|`` over ``budgets`` (fractions, increasing).

    Example:
        >>> curve_areas([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
        (0.75, 0.25)
    """
    budgets, f = [float(b) for b in budgets], [float(v) for v in f]
    if len(budgets) != len(f):
        raise InputError(f"{len(budgets)} budgets but {len(f)} faithfulness values; give one value per budget")
    cpr = cmd = 0.0
    for i in range(len(f) - 1):
        width = budgets[i + 1] - budgets[i]
        cpr += width * (f[i] + f[i + 1]) / 2
        cmd += width * (abs(1 - f[i]) + abs(1 - f[i + 1])) / 2
    return cpr, cmd


def check_budgets(budgets) -> list[float]:
    """``budgets`` as a list of floats, refused unless increasing fractions in (0, 1], at least two of them.

    Example:
        >>> check_budgets([0.01, 0.1, 1])
        [0.01, 0.1, 1.0]
        >>> check_budgets([0.5, 1.5])
        Traceback (most recent call last):
        interp.errors.InputError: budgets [0.5, 1.5]: 1.5 is not a fraction of the edges in (0, 1]; ...
    """
    try:
        values = [float(b) for b in budgets]
    except (TypeError, ValueError):
        raise InputError(
            f"budgets {budgets!r}: expected fractions of the graph's edges such as (0.01, 0.1, 1.0)"
        ) from None
    shown = [int(v) if v.is_integer() and abs(v) >= 1 else v for v in values]
    hint = "give increasing fractions such as (0.01, 0.1, 1.0); 1.0 is the whole graph"
    if len(values) < 2:
        raise InputError(f"budgets {shown}: need at least two budgets for the areas under the curve; {hint}")
    for v, s in zip(values, shown):
        if not (math.isfinite(v) and 0 < v <= 1):
            raise InputError(f"budgets {shown}: {s} is not a fraction of the edges in (0, 1]; {hint}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise InputError(f"budgets {shown}: not strictly increasing; {hint}")
    return values


def default_metric(lm, pairs: Pairs) -> Callable[[torch.Tensor], torch.Tensor]:
    """``logit(base answer) - logit(source answer)`` per row of the last-token logits (B, V) -> (B,)."""
    n = len(pairs)
    a, b = token_ids(lm, pairs.base_answer, n), token_ids(lm, pairs.source_answer, n)

    def logit_diff(logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        return logits[rows, a.to(logits.device)] - logits[rows, b.to(logits.device)]

    return logit_diff


def plain_metric(lm, inputs, metric) -> float:
    """The metric of the unablated model on ``inputs`` (mean over rows), one forward."""
    batch = encode(lm, inputs)
    with torch.no_grad():
        out = execute(lm, batch, logits_at=last().resolve(batch.attention_mask))
    return float(metric(out.logits[:, -1].float()).float().mean())


def circuit_at(scores: EdgeScores, k: int, *, absolute: bool = True) -> Circuit:
    """The circuit of the ``k`` edges with the largest ``|score|`` (or score, ``absolute=False``); ties by order."""
    s = scores.scores.detach().float().cpu()
    keep = torch.zeros(len(s), dtype=torch.bool)
    if k > 0:
        key = (s.abs() if absolute else s).nan_to_num(-math.inf)
        keep[torch.argsort(-key, stable=True)[:k]] = True
    return Circuit(scores.graph, keep, s, scores.method, dict(top=k, absolute=absolute))


def circuit_metrics(
    lm,
    pairs: Pairs,
    circuits: Sequence[Circuit],
    *,
    ablation: str = "counterfactual",
    means=None,
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rows: int = 64,
) -> torch.Tensor:
    """The mean metric over pairs (G,) of each circuit run exactly: :func:`~interp.circuits.run.run_circuit`'s
    computation for G circuits at once (each batch of pairs captured and its corrupted run taken once, then the
    circuits stacked into forwards of at most ``rows`` rows).

    Example:
        >>> from interp.circuits.graph import Graph
        >>> from interp.circuits.run import run_circuit
        >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
        >>> g = Graph.of(lm)
        >>> m = circuit_metrics(lm, pp, [Circuit.empty(g), Circuit.full(g)])
        >>> m.shape, abs(float(m[1]) - float(run_circuit(lm, pp, Circuit.full(g)).mean())) < 1e-5
        (torch.Size([2]), True)
    """
    if ablation not in ABLATIONS:
        raise InputError(f"ablation {ablation!r}: expected one of {ABLATIONS}")
    if not circuits:
        raise InputError("no circuits to run; pass [Circuit, ...] (e.g. [scores.top(10), scores.top(100)])")
    graph, layout = layout_of(lm, circuits[0].graph)
    means = check_means(means, graph, lm, pairs, ablation)  # before any forward
    batches = pair_batches(lm, pairs, metric, 8)
    if ablation == "mean" and means is None:
        means = sender_means(lm, pairs.source, graph)
    keeps = dense_keep(graph, torch.stack([c.keep for c in circuits]))  # (G, R, S)
    total, n = torch.zeros(len(circuits), dtype=torch.float64), 0
    with torch.no_grad():
        for b in batches:
            c = means if ablation == "mean" else edge_forward(lm, b.corrupt, layout).outputs
            group = max(1, rows // len(b))
            for g in range(0, len(circuits), group):
                keep = keeps[g : g + group]
                logits = edge_forward(lm, b.clean, layout, keep=keep, corrupt=c).logits
                total[g : g + len(keep)] += b.score(logits).reshape(len(keep), len(b)).sum(-1).cpu()
            n += len(b)
    return total / n


def faithfulness(
    lm,
    pairs: Pairs,
    scores: EdgeScores | Sequence[EdgeScores],
    *,
    budgets: Sequence[float] = BUDGETS,
    ablation: str = "counterfactual",
    means=None,
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
    absolute: bool = True,
) -> Faithfulness | list[Faithfulness]:
    """The faithfulness curve of the top-scored circuits over ``budgets``, each run exactly (see the module doc).

    Example:
        >>> from interp.circuits.eap import eap
        >>> pp = Pairs.of(base, source, base_answer=[5] * 4, source_answer=[6] * 4)
        >>> curve = faithfulness(lm, pp, eap(lm, pp), budgets=(0.5, 1.0), ablation="mean")
        >>> curve.ablation, len(curve.faithfulness)
        ('mean', 2)
        >>> [c.method for c in faithfulness(lm, pp, [eap(lm, pp), eap(lm, pp, steps=2)], budgets=(0.5, 1))]
        ['eap', 'eap-ig-inputs']

    Args:
        lm: the model.
        pairs: base (clean) and source (corrupted) inputs, with ``base_answer`` / ``source_answer`` unless
            ``metric`` is given.
        scores: edge scores (:func:`interp.circuits.eap.eap`) over the graph of ``lm``, or a list of them (one
            curve each, all circuits run in the same batched forwards).
        budgets: increasing fractions of the edges in (0, 1] (default :data:`BUDGETS`, MIB's).
        ablation: ``"counterfactual"`` (edges outside the circuit carry the source run's activations) or
            ``"mean"`` (their mean: ``means``, or each sender's mean over the source prompts).
        means: (S, d) or (S, T, d) sender means for mean ablation (see :func:`interp.circuits.run.sender_means`).
        metric: a function of the last-token logits (B, V) -> (B,); default the base/source logit difference.
            It sees chunks of up to 8 pairs, so it must score each row alone (per-pair answers: leave it None).
        absolute: choose edges by ``|score|`` (True) or by score (False, MIB's choice for CPR).

    Returns:
        A :class:`Faithfulness` (a list of them for a list of scores) with the curve, the metrics behind it and its
        areas (CPR, CMD).

    Raises:
        InputError: bad budgets, an unknown ablation, scores that are not EdgeScores, or a model whose full and
            empty circuits give the same metric (f is then undefined); all but the last before any forward.
    """
    budgets = check_budgets(budgets)
    if ablation not in ABLATIONS:
        raise InputError(f"ablation {ablation!r}: expected one of {ABLATIONS}")
    many = isinstance(scores, (list, tuple))
    methods = list(scores) if many else [scores]
    for sc in methods:
        if not isinstance(sc, EdgeScores):
            raise InputError(
                f"scores is a {type(sc).__name__}; expected EdgeScores from interp.circuits.eap.eap(lm, pairs)"
            )
    if not methods or any(len(sc.graph) != len(methods[0].graph) for sc in methods):
        raise InputError("scores: give one EdgeScores or a list of them over the same graph (Graph.of(lm))")
    if not isinstance(pairs, Pairs):
        raise InputError(f"pairs is a {type(pairs).__name__}; expected interp.Pairs (e.g. ioi_pairs(16))")
    graph = methods[0].graph
    total = len(graph)
    t0 = time.perf_counter()
    plain = metric or default_metric(lm, pairs)
    m_model = plain_metric(lm, pairs.base, plain)
    m_corrupted = plain_metric(lm, pairs.source, plain) if ablation == "counterfactual" else None
    counts = [math.floor(b * total + 1e-9) for b in budgets]
    circuits = [Circuit.empty(graph)] + [circuit_at(sc, k, absolute=absolute) for sc in methods for k in counts]
    m = circuit_metrics(lm, pairs, circuits, ablation=ablation, means=means, metric=metric).tolist()
    m_empty = m[0]
    if not math.isfinite(m_model - m_empty) or abs(m_model - m_empty) < 1e-8 * max(1.0, abs(m_model)):
        raise InputError(
            f"the model's metric {m_model:.6g} equals the empty circuit's {m_empty:.6g}: faithfulness is undefined; "
            "choose pairs whose base and source answers differ (or another metric)"
        )
    seconds = time.perf_counter() - t0
    curves = []
    for i, sc in enumerate(methods):
        m_circuit = m[1 + i * len(counts) : 1 + (i + 1) * len(counts)]
        curves.append(
            Faithfulness(
                method=sc.method,
                ablation=ablation,
                budgets=budgets,
                n_edges=counts,
                faithfulness=[(x - m_empty) / (m_model - m_empty) for x in m_circuit],
                m_model=m_model,
                m_empty=m_empty,
                m_circuit=m_circuit,
                m_corrupted=m_corrupted,
                total_edges=total,
                absolute=absolute,
                seconds=seconds / len(methods),
            )
        )
    return curves if many else curves[0]


__all__ = [
    "BUDGETS",
    "ABLATIONS",
    "Faithfulness",
    "faithfulness",
    "circuit_metrics",
    "curve_areas",
    "check_budgets",
    "circuit_at",
]
