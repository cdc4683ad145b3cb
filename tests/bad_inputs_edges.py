"""Bad-input rows: edge attribution (graph, EAP, edge-patched runs, scores and circuits). Joined by test_bad_inputs.

Every row is refused before any forward pass (the pairs, the options and the graph are checked first).
"""

from __future__ import annotations

import torch
from test_bad_inputs import Bad

from interp.causal import Pairs
from interp.circuits.eap import eap
from interp.circuits.edge_scores import Circuit, EdgeScores
from interp.circuits.graph import Graph
from interp.circuits.run import exact_edge_effects, run_circuit
from interp.errors import FormatError, InputError

PP = Pairs.of([[3, 4, 5, 6]] * 2, [[3, 9, 5, 6]] * 2, base_answer=[5, 5], source_answer=[6, 6])
MIXED = Pairs.of([[3, 4, 5, 6], [3, 4, 5]], [[3, 9, 5, 6], [3, 9, 5]], base_answer=[5, 5], source_answer=[6, 6])
G = Graph(2, 4)  # the tiny Llama's graph: 110 edges
ZERO = EdgeScores(G, torch.zeros(len(G)), method="eap")

ROWS = [
    Bad("eap-steps-negative", lambda e: eap(e.lm, PP, steps=-1), InputError, "-1"),
    Bad("eap-ig-on-unknown", lambda e: eap(e.lm, PP, steps=2, ig_on="outputs"), InputError, "'outputs'"),
    Bad("eap-batch-size-zero", lambda e: eap(e.lm, PP, batch_size=0), InputError, "batch_size.*0"),
    Bad("eap-pairs-a-list", lambda e: eap(e.lm, [1, 2]), InputError, "list.*Pairs"),
    Bad("eap-graph-of-another-model", lambda e: eap(e.lm, PP, graph=Graph(3, 4)), InputError, "3 layers"),
    Bad(
        "eap-pair-lengths-differ",
        lambda e: eap(e.lm, Pairs.of([[3, 4, 5]], [[3, 4]], base_answer=[5], source_answer=[6])),
        InputError,
        "pair 0: base has 3 tokens but source 2",
    ),
    Bad("run-circuit-ablation", lambda e: run_circuit(e.lm, PP, Circuit.full(G), ablation="zero"), InputError, "zero"),
    Bad(
        "run-circuit-means-without-mean",
        lambda e: run_circuit(e.lm, PP, Circuit.full(G), means=torch.zeros(3)),
        InputError,
        "ablation='mean'",
    ),
    Bad(
        "run-circuit-means-shape",
        lambda e: run_circuit(e.lm, PP, Circuit.full(G), ablation="mean", means=torch.zeros(3, 32)),
        InputError,
        r"\(3, 32\)",
    ),
    Bad(
        "run-circuit-means-per-position-lengths-differ",
        lambda e: run_circuit(e.lm, MIXED, Circuit.full(G), ablation="mean", means=torch.zeros(len(G.senders), 4, 32)),
        InputError,
        r"T = 4 need every prompt to have 4 tokens .* these prompts have \[3, 4\]",
    ),
    Bad("run-circuit-a-graph", lambda e: run_circuit(e.lm, PP, G), InputError, "Graph"),
    Bad("exact-edge-index", lambda e: exact_edge_effects(e.lm, PP, G, [110]), InputError, "110"),
    Bad("exact-edge-index-tensor", lambda e: exact_edge_effects(e.lm, PP, G, torch.tensor([110])), InputError, "110"),
    Bad("graph-unknown-edge", lambda e: G.index(("m1", "a0.h0<q>")), InputError, "m1"),
    Bad("circuit-keep-shape", lambda e: Circuit(G, torch.ones(5, dtype=torch.bool)), InputError, r"\(5,\)"),
    Bad("edge-scores-shape", lambda e: EdgeScores(G, torch.zeros(3)), InputError, r"\(3,\)"),
    Bad("edge-scores-top-too-many", lambda e: ZERO.top(111), InputError, "111"),
    Bad("edge-scores-fraction", lambda e: ZERO.top_fraction(1.5), InputError, "1.5"),
    Bad("edge-scores-threshold", lambda e: ZERO.threshold(-1), InputError, "-1"),
    Bad("circuit-json-no-edges", lambda e: Circuit.from_json("{}", G), FormatError, "edges"),
    Bad(
        "circuit-save-exists",
        lambda e: [ZERO.top(3).save(e.tmp / "c.json") for _ in range(2)],
        FileExistsError,
        "c.json",
    ),  # fmt: skip
]
