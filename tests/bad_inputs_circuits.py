"""Bad-input rows: circuits (faithfulness budgets and ablations, ``interp circuit``). Joined by test_bad_inputs.

Every row is refused before any forward: the faithfulness rows pass a model whose forward would fail.
"""

from __future__ import annotations

import torch
from bad_inputs_cli import interp
from test_bad_inputs import CLI, Bad

from interp.causal import Pairs
from interp.circuits.edge_scores import EdgeScores
from interp.circuits.faithfulness import faithfulness
from interp.circuits.graph import Graph
from interp.errors import InputError


class _NoForward:
    """Stands in for a model: any use beyond the checks fails the row."""

    def __getattr__(self, name):
        raise AssertionError(f"faithfulness used the model ({name}) before refusing its input")


PAIRS = Pairs.of([[3, 4, 5]] * 2, [[3, 9, 5]] * 2, base_answer=[5, 5], source_answer=[6, 6])
SCORES = EdgeScores(Graph(2, 4), torch.zeros(len(Graph(2, 4))), method="eap")


def faith(**kw):
    return lambda env: faithfulness(_NoForward(), kw.pop("pairs", PAIRS), kw.pop("scores", SCORES), **kw)


CIRCUIT = ("circuit", "--out", lambda env: env.tmp / "out")

ROWS = [
    Bad("faithfulness budget above 1", faith(budgets=(0.5, 1.5)), InputError, r"budgets \[0.5, 1.5\]: 1.5 is not"),
    Bad("faithfulness budget 0", faith(budgets=(0, 1)), InputError, r"budgets \[0.0, 1\]: 0.0 is not a fraction"),
    Bad("faithfulness budget NaN", faith(budgets=(0.1, float("nan"))), InputError, r"nan is not a fraction"),
    Bad("faithfulness budgets decreasing", faith(budgets=(0.5, 0.1)), InputError, r"\[0.5, 0.1\]: not strictly"),
    Bad("faithfulness one budget", faith(budgets=(1.0,)), InputError, r"budgets \[1\]: need at least two"),
    Bad("faithfulness budgets not numbers", faith(budgets="ab"), InputError, r"budgets 'ab': expected fractions"),
    Bad("faithfulness ablation", faith(ablation="zero"), InputError, r"ablation 'zero': expected one of"),
    Bad("faithfulness scores a tensor", faith(scores=torch.zeros(3)), InputError, r"scores is a Tensor; expected"),
    Bad("faithfulness pairs a list", faith(pairs=[[1, 2]]), InputError, r"pairs is a list; expected interp.Pairs"),
    Bad("interp circuit --budgets 2", interp(*CIRCUIT, "--budgets", "0.1,2"), CLI, r"--budgets \[0.1, 2\]: 2 is"),
    Bad("interp circuit --budgets x", interp(*CIRCUIT, "--budgets", "0.1,x"), CLI, r"--budgets '0.1,x': expected"),
    Bad("interp circuit --steps 0", interp(*CIRCUIT, "--steps", "0"), CLI, r"--steps 0: expected a positive"),
    Bad("interp circuit --sample 0", interp(*CIRCUIT, "--sample", "0"), CLI, r"--sample 0: expected a positive"),
    Bad("interp circuit --ablation", interp(*CIRCUIT, "--ablation", "zero"), CLI, r"--ablation: invalid choice"),
]
