"""Circuits: the edge graph drawn by layer, and faithfulness curves over edge budgets.

Example:
    >>> edges = [("input", "a0.h0"), ("a0.h0", "m0"), ("m0", "logits"), ("input", "logits")]
    >>> ax = plot_circuit(edges, [0.9, -0.4, 0.7, 0.05], top=3)
    >>> ax.get_title()
    'Circuit: top 3 of 4 edges'
    >>> curve = {"method": "EAP", "budgets": [0.01, 0.1, 1], "faithfulness": [0.2, 0.7, 1], "cpr": 0.76, "cmd": 0.24}
    >>> [t.get_text() for t in plot_faithfulness([curve]).get_legend().get_texts()]
    ['EAP (CPR 0.76, CMD 0.24)']

Node names are those of :class:`interp.circuits.graph.Graph`: ``"input"`` (the embeddings), ``"a{L}.h{H}"``
(attention head H of layer L), ``"m{L}"`` (layer L's MLP) and ``"logits"``; a receiver name may carry a suffix
after the node (``"a3.h1<q>"``, the head's query input), drawn at its node. The input sits at the bottom, then
each layer's heads (one row) and its MLP (the row above, centred), and the logits at the top.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import as_array, label_axes, new_axes

if TYPE_CHECKING:  # matplotlib is imported when a plot is drawn (interp.viz.base)
    from matplotlib.axes import Axes

POSITIVE, NEGATIVE = "#1f77b4", "#d62728"  # an edge that helps the metric (blue) or hurts it (red)
_HEAD = re.compile(r"^a(\d+)\.h(\d+)")
_MLP = re.compile(r"^m(\d+)")


def node_position(name: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    """``(x, y)`` of a node in the layered drawing: heads spread across a row per layer, the MLP centred above.

    Example:
        >>> node_position("a1.h2", n_layers=2, n_heads=4), node_position("m1", 2, 4), node_position("logits", 2, 4)
        ((2.0, 3.0), (1.5, 4.0), (1.5, 5.0))
    """
    centre = (n_heads - 1) / 2
    if name == "input":
        return centre, 0.0
    if name == "logits":
        return centre, 2.0 * n_layers + 1
    if m := _HEAD.match(name):
        return float(m.group(2)), 2.0 * int(m.group(1)) + 1
    if m := _MLP.match(name):
        return centre, 2.0 * int(m.group(1)) + 2
    raise ValueError(
        f"plot_circuit: node {name!r} is not one of 'input', 'a{{L}}.h{{H}}', 'm{{L}}', 'logits' "
        "(the node names of interp.circuits.graph.Graph)"
    )


def _node(name: str) -> str:
    """The node a receiver reads for: ``"a1.h2<q>"`` -> ``"a1.h2"`` (its q, k and v edges meet at the head)."""
    return str(name).split("<", 1)[0]


def _shape(names: Sequence[str]) -> tuple[int, int]:
    layers = [int(m.group(1)) for n in names if (m := _HEAD.match(n) or _MLP.match(n))]
    heads = [int(m.group(2)) for n in names if (m := _HEAD.match(n))]
    return (max(layers) + 1 if layers else 0), (max(heads) + 1 if heads else 1)


def plot_circuit(
    edges: Sequence[tuple[str, str]],
    scores: Any,
    *,
    keep: Any = None,
    top: int | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    max_width: float = 4.0,
) -> Axes:
    """A circuit as a layered graph: the kept edges drawn with width by ``|score|``, blue positive, red negative.

    Example:
        >>> ax = plot_circuit([("input", "m0"), ("m0", "logits")], [1.0, -0.5])     # every edge kept
        >>> len(ax.collections[0].get_linewidths())                                   # one line per edge
        2

    Args:
        edges: ``(sender, receiver)`` node names, one per edge (``Graph.edges``).
        scores: one score per edge (``EdgeScores.scores``): a tensor, array or list.
        keep: which edges are in the circuit (a bool per edge, ``Circuit.keep``); default all, or ``top``.
        top: keep the ``top`` edges by ``|score|`` instead (when ``keep`` is None).
        ax: axes to draw on; a new figure when None.
        title: axes title (default: how many edges are drawn).
        max_width: line width of the edge with the largest ``|score|``.

    Returns:
        The Axes drawn on. Nodes that no kept edge touches are drawn faint.
    """
    from matplotlib.collections import LineCollection

    s = as_array(scores, name="plot_circuit: scores", ndim=1)
    edges = [(_node(a), _node(b)) for a, b in edges]
    if len(edges) != len(s):
        raise ValueError(f"plot_circuit: {len(edges)} edges but {len(s)} scores; pass one score per edge")
    if keep is not None:
        k = as_array(keep, name="plot_circuit: keep", ndim=1).astype(bool)
        if len(k) != len(s):
            raise ValueError(f"plot_circuit: {len(edges)} edges but keep has {len(k)} entries; pass one per edge")
    elif top is not None:
        if not 0 <= top <= len(s):
            raise ValueError(f"plot_circuit: top={top} is not in 0..{len(s)} (the number of edges)")
        k = np.zeros(len(s), bool)
        k[np.argsort(-np.abs(s), kind="stable")[:top]] = True
    else:
        k = np.ones(len(s), bool)
    names = sorted({n for e in edges for n in e})
    n_layers, n_heads = _shape(names)
    pos = {n: node_position(n, n_layers, n_heads) for n in names}
    used = {n for e, kept in zip(edges, k) if kept for n in e}

    ax = new_axes(ax, (max(4.0, 1.2 * n_heads + 2), min(max(4.0, 0.45 * (2 * n_layers + 2) + 1), 14)))
    idx = np.flatnonzero(k)
    idx = idx[np.argsort(np.abs(s[idx]), kind="stable")]  # the strongest edges drawn last, on top
    biggest = float(np.max(np.abs(s[idx]))) if len(idx) and np.max(np.abs(s[idx])) > 0 else 1.0
    segments = [[pos[edges[i][0]], pos[edges[i][1]]] for i in idx]
    widths = [0.3 + max_width * abs(s[i]) / biggest for i in idx]
    colours = [POSITIVE if s[i] >= 0 else NEGATIVE for i in idx]
    ax.add_collection(LineCollection(segments, linewidths=widths, colors=colours, alpha=0.7, zorder=1))
    for n, (x, y) in pos.items():
        on = n in used
        marker = "s" if n in ("input", "logits") or _MLP.match(n) else "o"
        ax.scatter([x], [y], s=90 if on else 30, marker=marker, zorder=2,
                   color="#333333" if on else "#d0d0d0", edgecolors="white", linewidths=0.5)  # fmt: skip
        if on:
            ax.annotate(n, (x, y), xytext=(5, 4), textcoords="offset points", fontsize=7, zorder=3)
    ax.set_xlim(-0.8, max(n_heads - 1, 1) + 0.8)
    ax.set_ylim(-0.8, 2 * n_layers + 1.8)
    ax.set_yticks([0] + [2 * L + 1.5 for L in range(n_layers)] + [2 * n_layers + 1])
    ax.set_yticklabels(["input"] + [f"layer {L}" for L in range(n_layers)] + ["logits"])
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if title is None:
        title = (
            f"Circuit: top {int(k.sum())} of {len(s)} edges" if int(k.sum()) < len(s) else f"Circuit: {len(s)} edges"
        )
    return label_axes(ax, title=title)


def _curve_fields(curve: Any) -> Mapping[str, Any]:
    if hasattr(curve, "to_dict"):
        curve = curve.to_dict()
    if not isinstance(curve, Mapping) or not {"budgets", "faithfulness"} <= set(curve):
        raise ValueError(
            f"plot_faithfulness: a curve must be a Faithfulness result or a dict with 'budgets' and 'faithfulness' "
            f"(and optionally 'method', 'cpr', 'cmd'); got {type(curve).__name__}"
        )
    return curve


def plot_faithfulness(
    curves: Sequence[Any],
    *,
    ax: Axes | None = None,
    title: str | None = "Faithfulness over edge budgets",
) -> Axes:
    """Faithfulness against the fraction of edges kept, one line per method, with its areas in the legend.

    Example:
        >>> ax = plot_faithfulness([{"budgets": [0.1, 1.0], "faithfulness": [0.5, 1.0], "method": "EAP-IG"}])
        >>> ax.get_xscale(), ax.get_ylabel()
        ('log', 'faithfulness f(C)')

    Args:
        curves: :class:`interp.circuits.faithfulness.Faithfulness` results (or their ``to_dict()``), each with
            ``budgets`` (fractions of edges, the x axis, log scale), ``faithfulness`` (y), and optionally
            ``method``, ``cpr`` (circuit performance ratio) and ``cmd`` (circuit-model difference).
        ax: axes to draw on; a new figure when None.
        title: axes title.

    Returns:
        The Axes drawn on; f = 1 (the whole model) and f = 0 (the empty circuit) are dashed lines.
    """
    if not curves:
        raise ValueError("plot_faithfulness: no curves; pass [Faithfulness, ...] or [{'budgets': ..., ...}]")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax = new_axes(ax, (5.5, 3.8))
    ticks: set[float] = set()
    for i, raw in enumerate(curves):
        c = _curve_fields(raw)
        x = as_array(c["budgets"], name="plot_faithfulness: budgets", ndim=1)
        y = as_array(c["faithfulness"], name="plot_faithfulness: faithfulness", ndim=1)
        if x.shape != y.shape:
            raise ValueError(f"plot_faithfulness: {len(x)} budgets but {len(y)} faithfulness values; one per budget")
        if not np.all(x > 0):
            raise ValueError(
                f"plot_faithfulness: budgets must be positive fractions for the log axis; got {x.tolist()}"
            )
        label = str(c.get("method", f"curve {i}"))
        areas = [f"{k.upper()} {c[k]:.2f}" for k in ("cpr", "cmd") if c.get(k) is not None]
        ax.plot(x, y, marker="o", markersize=3, label=f"{label} ({', '.join(areas)})" if areas else label)
        ticks |= set(x.tolist())
    ax.axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
    ax.axhline(0.0, color="#999999", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{100 * v:g}%"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelrotation=45)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return label_axes(
        ax, title=title, xlabel="edges kept (fraction of the graph, top by |score|)", ylabel="faithfulness f(C)"
    )


__all__ = ["plot_circuit", "plot_faithfulness", "node_position"]
