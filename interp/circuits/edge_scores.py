"""Edge scores and the circuits chosen from them: top-k, a fraction of the edges, a threshold; JSON export.

Example:
    >>> g = Graph.of(lm)
    >>> s = EdgeScores(g, torch.linspace(-1, 1, len(g)), method="eap", seconds=0.1)
    >>> c = s.top(5)                                       # the 5 edges of largest |score|
    >>> len(c), c.edges[0], len(s.top_fraction(0.1)), len(s.threshold(0.9))
    (5, ('input', 'a0.h0<q>'), 11, 12)
    >>> Circuit.from_json(c.to_json(), g).edges == c.edges
    True
    >>> _ = c.save(tmp / "circuit.json")                   # atomic; an existing file is refused

Scores are ranked by absolute value (an edge that hurts the metric matters as much as one that helps), as MIB
and EAP-IG select circuits. The JSON form uses MIB's names and fields (``{"nodes": {name: {"in_graph"}}, "edges":
{"a0.h1->a1.h2<q>": {"score", "in_graph"}}}``), plus the method, the graph's shape and the selection. A circuit is
its edges as chosen, not pruned: an edge whose sender keeps none of its own inputs carries nothing in
:func:`interp.circuits.run.run_circuit` (that sender computes its corrupted output), as MIB's pruning would drop it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import torch

from ..errors import FormatError, InputError
from ..io.commit import write_file_atomic
from .graph import Graph

FORMAT = "interp/circuit/1"


@dataclass(eq=False)
class Circuit:
    """A subset of a graph's edges: ``keep`` (E,) bool, in the graph's edge order; ``scores`` kept for export."""

    graph: Graph
    keep: torch.Tensor
    scores: torch.Tensor | None = None
    method: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        keep = torch.as_tensor(self.keep)
        if keep.dtype != torch.bool or keep.shape != (len(self.graph),):
            raise InputError(
                f"a circuit's keep is a bool tensor of shape ({len(self.graph)},) (one per edge of {self.graph!r}); "
                f"got {keep.dtype} of shape {tuple(keep.shape)}"
            )
        self.keep = keep.cpu()
        if self.scores is not None:
            self.scores = torch.as_tensor(self.scores, dtype=torch.float32).cpu()

    @classmethod
    def full(cls, graph: Graph) -> Circuit:
        """Every edge of ``graph`` (the model itself)."""
        return cls(graph, torch.ones(len(graph), dtype=torch.bool))

    @classmethod
    def empty(cls, graph: Graph) -> Circuit:
        """No edge (every read sees the corrupted or mean run)."""
        return cls(graph, torch.zeros(len(graph), dtype=torch.bool))

    @classmethod
    def of_edges(cls, graph: Graph, edges) -> Circuit:
        """The circuit of the listed edges (``(sender, receiver)`` pairs or ``"sender->receiver"`` names)."""
        keep = torch.zeros(len(graph), dtype=torch.bool)
        keep[[graph.index(e) for e in edges]] = True
        return cls(graph, keep)

    def __len__(self) -> int:
        return int(self.keep.sum())

    def __repr__(self) -> str:
        return f"Circuit({len(self)} of {len(self.graph)} edges{', ' + self.method if self.method else ''})"

    @property
    def edges(self) -> list[tuple[str, str]]:
        """The kept edges, in the graph's order."""
        return [self.graph.edges[i] for i in self.keep.nonzero().flatten().tolist()]

    @property
    def nodes(self) -> list[str]:
        """The nodes that a kept edge touches (receivers named by their node: ``"a1.h2<q>"`` -> ``"a1.h2"``)."""
        touched = {Graph.node(n) for e in self.edges for n in e}
        return [n for n in self.graph.nodes if n in touched]

    def to_json(self) -> str:
        """MIB's circuit JSON (nodes and edges with ``in_graph``, edge scores where known) and our metadata."""
        nodes = set(self.nodes)
        scores = self.scores.tolist() if self.scores is not None else [None] * len(self.graph)
        edges = {
            Graph.edge_name(e): {"score": _finite(s), "in_graph": bool(k)}
            for e, s, k in zip(self.graph.edges, scores, self.keep.tolist())
        }
        g = self.graph
        doc = dict(
            format=FORMAT,
            method=self.method,
            graph=dict(
                architecture=g.architecture,
                n_layers=g.n_layers,
                n_heads=g.n_heads,
                parallel=g.parallel,
                norm_after=g.norm_after,
            ),  # fmt: skip
            n_edges=len(self),
            meta=self.meta,
            nodes={n: {"in_graph": n in nodes} for n in g.nodes},
            edges=edges,
        )
        return json.dumps(doc, indent=1)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False):
        """Write :meth:`to_json` to ``path`` in one step (a :class:`interp.errors.SaveExistsError` if it exists)."""
        return write_file_atomic(path, self.to_json() + "\n", overwrite=overwrite)

    @classmethod
    def from_json(cls, text: str, graph: Graph | None = None) -> Circuit:
        """A circuit from :meth:`to_json`'s text (or MIB's edge JSON with ``graph`` given)."""
        try:
            doc = json.loads(text)
            edges = doc["edges"]
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise FormatError(f"not a circuit's JSON ({e}); expected {{'edges': {{'a0.h1->m0': ...}}, ...}}") from None
        if graph is None:
            g = doc.get("graph") or {}
            try:
                graph = Graph(int(g["n_layers"]), int(g["n_heads"]), bool(g.get("parallel", False)),
                              bool(g.get("norm_after", False)), str(g.get("architecture", "")))  # fmt: skip
            except (KeyError, TypeError, ValueError):
                raise FormatError("the circuit's JSON names no graph shape; pass graph=Graph.of(lm)") from None
        if set(edges) != {Graph.edge_name(e) for e in graph.edges}:
            extra = sorted(set(edges) - {Graph.edge_name(e) for e in graph.edges})[:3]
            raise FormatError(f"the circuit's edges are not those of {graph!r} (e.g. unknown {extra}); wrong model?")
        names = [Graph.edge_name(e) for e in graph.edges]
        keep = torch.tensor([bool(edges[n]["in_graph"]) for n in names])
        raw = [edges[n].get("score") for n in names]
        scores = None if all(s is None for s in raw) else torch.tensor([math.nan if s is None else s for s in raw])
        return cls(graph, keep, scores, str(doc.get("method", "")), dict(doc.get("meta") or {}))

    @classmethod
    def load(cls, path: str | os.PathLike, graph: Graph | None = None) -> Circuit:
        """Read a circuit that :meth:`save` wrote."""
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read(), graph)


@dataclass(eq=False)
class EdgeScores:
    """One score per edge of ``graph`` (E,): the estimated change in the metric when that edge alone is patched.

    Attributes:
        method: ``"eap"``, ``"eap-ig-inputs"``, ``"eap-ig-activations"`` or ``"exact"``.
        seconds: wall time of the scoring.
        meta: e.g. ``clean_metric``, ``corrupted_metric``, ``n_pairs``, ``steps``.
    """

    graph: Graph
    scores: torch.Tensor
    method: str = ""
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        s = torch.as_tensor(self.scores)
        if s.shape != (len(self.graph),) or not s.is_floating_point():
            raise InputError(
                f"edge scores are a float tensor of shape ({len(self.graph)},) (one per edge of {self.graph!r}); "
                f"got {s.dtype} of shape {tuple(s.shape)}"
            )
        self.scores = s.detach().float().cpu()

    def __len__(self) -> int:
        return len(self.graph)

    def __repr__(self) -> str:
        return f"EdgeScores({self.method or 'scores'}, {len(self)} edges, {self.seconds:.2f} s)"

    def order(self) -> torch.Tensor:
        """Edge indices by decreasing ``|score|`` (ties by edge order)."""
        return torch.sort(-self.scores.abs().nan_to_num(-math.inf), stable=True).indices

    def top(self, k: int) -> Circuit:
        """The ``k`` edges of largest ``|score|``."""
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= len(self):
            raise InputError(f"top(k) takes a whole number of edges from 0 to {len(self)}; got {k!r}")
        keep = torch.zeros(len(self), dtype=torch.bool)
        keep[self.order()[:k]] = True
        return self._circuit(keep, top=k)

    def top_fraction(self, f: float) -> Circuit:
        """The ``round(f * E)`` edges of largest ``|score|`` (``f`` from 0 to 1, e.g. 0.001 to 0.5 in MIB)."""
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise InputError(f"top_fraction(f) takes a fraction of the edges from 0 to 1; got {f!r}")
        return self.top(int(round(f * len(self))))

    def threshold(self, t: float) -> Circuit:
        """Every edge with ``|score| >= t``."""
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0:
            raise InputError(f"threshold(t) takes a score magnitude t >= 0; got {t!r}")
        return self._circuit(self.scores.abs() >= t, threshold=float(t))

    def _circuit(self, keep: torch.Tensor, **how) -> Circuit:
        return Circuit(self.graph, keep, self.scores, self.method, dict(self.meta) | how)


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


__all__ = ["Circuit", "EdgeScores", "FORMAT"]
