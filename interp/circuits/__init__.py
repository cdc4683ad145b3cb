"""Circuits: the edge graph of a model, edge attribution (EAP, EAP-IG), edge-patched runs, scores and circuits.

Example:
    >>> from interp.circuits.graph import Graph
    >>> g = Graph.of(lm)                                   # a tiny Llama: 2 layers, 4 heads
    >>> len(g), g.edges[0]
    (110, ('input', 'a0.h0<q>'))

Modules (import from each): :mod:`~interp.circuits.graph` (nodes and edges), :mod:`~interp.circuits.eap` (EAP,
EAP-IG), :mod:`~interp.circuits.edge_scores` (scores, circuits, JSON export), :mod:`~interp.circuits.run`
(``run_circuit``, ``exact_edge_effects``: the model run with edges patched, through
:mod:`interp.engine.edges`).
"""
