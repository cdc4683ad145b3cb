"""DAS tasks: the hierarchical-equality MLP through the LM path, and behaviour on the real Gemma-3-270M."""

from __future__ import annotations

import pytest
import torch

from interp import Rotation, Site
from interp.causal import Pairs
from interp.das import DASConfig, fit_das, neuron_aligned
from interp.inputs import InputError
from interp.metrics import iia, task_accuracy
from interp.tasks import capitals, gender, ioi_position
from interp.tasks import hierarchical_equality as he


@pytest.fixture(scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_equality_mlp_learns_and_das_beats_neurons(one_thread):
    mlp, acc = he.train_equality_mlp(seed=0, steps=3000, n_test=2000)
    assert acc > 0.95, acc
    assert mlp.spec.d_model == 16 and mlp.spec.n_layers == 3
    pairs = he.equality_pairs(mlp, n=3000, seed=1)
    assert task_accuracy(mlp, pairs.base[:500], pairs.base_labels[:500]) > 0.95  # the LM path agrees
    train, test = pairs.split(0.67, seed=0)
    das = fit_das(mlp, train, at=he.FIRST_HIDDEN, via=Rotation(16), splits=(8, 8), test=test, steps=400,
                  batch_size=256, lr=1e-2, eval_every=100, patience=0, progress=False)  # fmt: skip
    neurons = iia(mlp, test, at=he.FIRST_HIDDEN, via=neuron_aligned(16, (8, 8)))
    assert das.iia_test > 0.7 and das.iia_test > neurons + 0.1, (das.iia_test, neurons)


@pytest.mark.slow
def test_equality_das_reaches_the_published_iia(one_thread):
    """Issue 3's claim at full scale (the CLI defaults, ~80 s): MLP accuracy 1.00, DAS IIA >= 0.95 on 10,000
    held-out counterfactuals. Seed 0 is the default; other MLP seeds find less separable solutions (NOTES)."""
    mlp, acc = he.train_equality_mlp(seed=0)
    assert acc >= 0.999, acc
    train, test = he.equality_pairs(mlp, n=20_000, seed=1).split(0.5, seed=0)
    assert len(test) >= 10_000
    cfg = DASConfig(steps=2000, batch_size=256, lr=5e-3, eval_every=250, patience=0, eval_batch_size=4096,
                    progress=False)  # fmt: skip
    das = fit_das(mlp, train, at=he.FIRST_HIDDEN, via=Rotation(16), splits=(8, 8), test=test, config=cfg)
    neurons = iia(mlp, test, at=he.FIRST_HIDDEN, via=neuron_aligned(16, (8, 8)), batch_size=4096)
    assert das.iia_test >= 0.95 and neurons < 0.85, (das.iia_test, neurons)


def test_gemma_multi_token_label_fails_before_training(gemma):
    bad = Pairs(("C",), ["The capital of Andorra is"], [["The capital of Spain is"]], [" Andorra la Vella"], [" x"])
    with pytest.raises(InputError, match="Andorra la Vella"):
        fit_das(gemma, bad, at=Site("resid_post", 3), rank=1)


def test_gemma_solves_the_task_prompts(gemma):
    g = gender.gender_pairs(gemma, n=48, seed=0)
    assert task_accuracy(gemma, g.base, g.base_labels, candidates=g.candidates) > 0.95
    p = ioi_position.ioi_position_pairs(gemma, n=32, seed=0)
    assert task_accuracy(gemma, p.base, p.base_labels) > 0.9
    known = capitals.known_countries(gemma, among=["France", "Germany", "Italy", "Egypt", "Russia", "Spain"])
    assert len(known) >= 4 and known.get("France", "Paris") == "Paris"
