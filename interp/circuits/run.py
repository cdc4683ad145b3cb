"""Run the model with edges patched: a circuit's metric (counterfactual or mean ablation), and exact edge effects.

Placeholder: the names are the contract; the code lands with :mod:`interp.engine.edges`.
"""

from __future__ import annotations

import torch


def run_circuit(lm, pairs, circuit, *, ablation: str = "counterfactual", means=None, metric=None) -> torch.Tensor:
    """The per-pair metric of the model with every edge outside ``circuit`` patched (not yet implemented)."""
    raise NotImplementedError("run_circuit lands with interp.engine.edges (issue 24)")


def exact_edge_effects(lm, pairs, graph, edges) -> torch.Tensor:
    """The change in the mean metric when each listed edge alone is patched (not yet implemented)."""
    raise NotImplementedError("exact_edge_effects lands with interp.engine.edges (issue 24)")


__all__ = ["exact_edge_effects", "run_circuit"]
