"""Faithfulness curves (MIB's CPR and CMD), the circuit plots and ``interp circuit``.

Tiny random models of every architecture for the properties (the whole graph is the model, the empty graph is the
corrupted run); a hand-made curve for the areas; the command line end to end on a tiny model (its task swapped for
token-id pairs); and ``interp circuit --quick`` on Gemma-3-270M (about 20 s: 4 IOI pairs, 2 steps, 6 checked edges,
3 budgets; the full run's numbers are in docs/circuits.md).
"""

from __future__ import annotations

import json
from unittest import mock

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import ARCHS, tiny_lm  # noqa: E402

from interp import viz  # noqa: E402
from interp.causal import Pairs  # noqa: E402
from interp.circuits.edge_scores import EdgeScores  # noqa: E402
from interp.circuits.faithfulness import Faithfulness, circuit_at, curve_areas, faithfulness  # noqa: E402
from interp.circuits.graph import Graph  # noqa: E402
from interp.circuits.run import run_circuit  # noqa: E402
from interp.cli import main  # noqa: E402


def id_pairs(n: int = 4, seed: int = 0) -> Pairs:
    """Token-id pairs for the tiny models (vocabulary 97): base and source differ at two tokens."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(3, 97, (n, 6), generator=g)
    source = base.clone()
    source[:, 1] = torch.randint(3, 97, (n,), generator=g)
    source[:, 3] = torch.randint(3, 97, (n,), generator=g)
    return Pairs.of(base.tolist(), source.tolist(), base_answer=[5] * n, source_answer=[6] * n)


def random_scores(graph: Graph, seed: int = 0) -> EdgeScores:
    g = torch.Generator().manual_seed(seed)
    return EdgeScores(graph, torch.randn(len(graph), generator=g), method="random")


# ---- the areas on hand-made curves: (budgets, f, CPR, CMD) -------------------------------------------------------
AREAS = [
    ("step to 1 at half", [0.0, 0.5, 1.0], [0.0, 1.0, 1.0], 0.75, 0.25),
    ("the whole model everywhere", [0.1, 0.5, 1.0], [1.0, 1.0, 1.0], 0.9, 0.0),
    ("overshoot counts in CMD", [0.5, 1.0], [2.0, 1.0], 0.75, 0.25),
    ("negative f", [0.0, 1.0], [-1.0, 1.0], 0.0, 1.0),
    ("MIB budgets, f = budget", [0.001, 0.01, 0.1, 1.0], [0.001, 0.01, 0.1, 1.0], 0.4999995, 0.4990005),
]


@pytest.mark.parametrize("budgets, f, cpr, cmd", [a[1:] for a in AREAS], ids=[a[0] for a in AREAS])
def test_areas_on_hand_made_curves(budgets, f, cpr, cmd):
    assert curve_areas(budgets, f) == pytest.approx((cpr, cmd), abs=1e-9)
    if budgets[0] > 0:  # the data object computes the same areas from its curve
        result = Faithfulness("hand", "counterfactual", budgets, [0] * len(f), f)
        assert (result.cpr, result.cmd) == pytest.approx((cpr, cmd), abs=1e-9)
        assert json.loads(result.to_json())["cpr"] == pytest.approx(cpr)


# ---- exact runs on tiny models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_full_graph_is_the_model_and_empty_graph_the_corrupted_run(arch):
    lm, pairs = tiny_lm(arch), id_pairs()
    graph = Graph.of(lm)
    result = faithfulness(lm, pairs, random_scores(graph), budgets=(0.05, 0.5, 1.0))
    assert result.n_edges == [int(0.05 * len(graph)), int(0.5 * len(graph)), len(graph)]
    assert result.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)  # every edge kept: the clean model
    assert result.m_empty == pytest.approx(result.m_corrupted, abs=1e-4)  # none kept: the corrupted run
    assert abs(result.m_model - result.m_corrupted) > 1e-3  # so f is defined and the two checks differ
    assert any(abs(f - 1) > 1e-3 for f in result.faithfulness[:-1])  # a partial circuit is not the model
    assert result.cpr <= 0.95 + 1e-9 and result.total_edges == len(graph)
    one = run_circuit(lm, pairs, circuit_at(random_scores(graph), result.n_edges[1])).mean().item()
    assert result.m_circuit[1] == pytest.approx(one, abs=1e-5)  # the batched runs are run_circuit's, circuit by circuit


def test_mean_ablation_and_signed_choice():
    lm, pairs = tiny_lm("llama"), id_pairs()
    scores = random_scores(Graph.of(lm), seed=1)
    mean = faithfulness(lm, pairs, scores, budgets=(0.5, 1.0), ablation="mean")
    assert mean.ablation == "mean" and mean.m_corrupted is None
    assert mean.faithfulness[-1] == pytest.approx(1.0, abs=1e-4)
    empty = run_circuit(lm, pairs, scores.top(0), ablation="mean").mean().item()
    assert mean.m_empty == pytest.approx(empty, abs=1e-5)
    both = faithfulness(lm, pairs, [scores, random_scores(Graph.of(lm), seed=2)], budgets=(0.5, 1.0), ablation="mean")
    assert both[0].to_dict() | {"seconds": 0} == mean.to_dict() | {"seconds": 0}  # one curve per scores, same runs
    signed = faithfulness(lm, pairs, scores, budgets=(0.5, 1.0), absolute=False)
    absolute = faithfulness(lm, pairs, scores, budgets=(0.5, 1.0))
    assert signed.absolute is False and signed.m_circuit[0] != pytest.approx(absolute.m_circuit[0], abs=1e-6)


# ---- plots ------------------------------------------------------------------------------------------------------
def test_plots_write_files(tmp_path):
    graph = Graph(2, 4)
    scores = random_scores(graph)
    ax = viz.plot_circuit(graph.edges, scores.scores, keep=scores.top(10).keep)
    assert len(ax.collections[0].get_linewidths()) == 10
    assert {t.get_text() for t in ax.texts} <= set(graph.nodes)  # labels only on nodes a kept edge touches
    curves = [
        Faithfulness("eap", "counterfactual", [0.01, 0.1, 1.0], [1, 17, 173], [0.1, 0.6, 1.0]),
        {"method": "EAP-IG", "budgets": [0.01, 0.1, 1.0], "faithfulness": [0.3, 0.8, 1.0], "cpr": 0.8, "cmd": 0.2},
    ]
    legend = [t.get_text() for t in viz.plot_faithfulness(curves).get_legend().get_texts()]
    assert legend[1] == "EAP-IG (CPR 0.80, CMD 0.20)" and legend[0].startswith("eap (CPR 0.")
    for name, fig in (("graph", ax), ("curves", viz.plot_faithfulness(curves))):
        assert viz.save(fig, tmp_path / name).stat().st_size > 5_000


# ---- the command line, end to end on a tiny model ---------------------------------------------------------------
def test_cli_circuit_on_a_tiny_model(tmp_path, capsys):
    lm = tiny_lm("gpt2")
    task = mock.Mock(return_value=(id_pairs(4), None))
    argv = ["circuit", "--quick", "--out", str(tmp_path), "--json"]
    with mock.patch("interp.load", return_value=lm), mock.patch("interp.tasks.registry.get", return_value=task):
        assert main(argv) == 0
        result = json.loads(capsys.readouterr().out)
        assert main(argv) == 2  # refuses to overwrite earlier results
        assert "already exist" in capsys.readouterr().err
    assert result["n_edges"] == len(Graph.of(lm)) and result["eap_ig_steps"] == 2
    assert -1 <= result["exact_check_r_eap"] <= 1 and result["exact_check_edges"] == 6
    curves = {c["method"]: c for c in result["faithfulness"]}
    assert len(curves) == 2 and all(c["budgets"] == [0.01, 0.1, 1.0] for c in curves.values())
    assert all(c["faithfulness"][-1] == pytest.approx(1.0, abs=1e-4) for c in curves.values())
    assert result["eap_cpr"] == pytest.approx(curves["eap"]["cpr"], abs=1e-4)
    for key in ("png", "faithfulness_png", "circuit_json", "json"):
        assert (tmp_path / result[key].rsplit("/", 1)[-1]).stat().st_size > 1_000
    assert json.loads((tmp_path / "circuit_ioi_edges.json").read_text())["n_edges"] >= 1


def test_cli_circuit_quick_on_gemma(tmp_path, capsys, gemma):
    """The real model: its graph, both curves from the corrupted run (empty) to the model (full), IOI solved, and
    the checked edges' big effects (a head writing the logits among them) with EAP-IG's sign."""
    with mock.patch("interp.load", return_value=gemma):
        assert main(["circuit", "--task", "ioi", "--quick", "--out", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n_edges"], result["n_nodes"], result["n_pairs"]) == (10342, 92, 4)
    for c in result["faithfulness"]:
        assert c["m_model"] > 2 and c["m_corrupted"] < -2  # the clean prompts name IO, the corrupted ones S
        assert c["m_empty"] == pytest.approx(c["m_corrupted"], abs=1e-3)  # the empty circuit: the corrupted run
        assert c["faithfulness"][-1] == pytest.approx(1, abs=1e-4)  # every edge: the model
    big = [e for e in result["exact_check"] if abs(e["exact"]) > 0.5]
    assert len(big) >= 2 and any(e["edge"].endswith("->logits") and abs(e["exact"]) > 1 for e in big), big
    assert all((e["eap_ig"] > 0) == (e["exact"] > 0) for e in big), big
    for key in ("png", "faithfulness_png", "circuit_json", "json"):
        assert (tmp_path / result[key].rsplit("/", 1)[-1]).stat().st_size > 1_000
