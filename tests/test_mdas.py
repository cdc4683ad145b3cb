"""MDAS on a planted model where the answer is known: DAS trained for Cause alone moves the other attribute too
(Isolate near 0, as on RAVEL), MDAS keeps it at the base (Isolate near 1) with Cause still high."""

from __future__ import annotations

import pytest
import torch

import interp
from interp.causal import CausalModelError, Pairs
from interp.das import fit_das
from interp.das_objective import interchange_loss
from interp.errors import DASError
from interp.mdas import cause_isolate, fit_mdas, mdas_pairs, widen
from interp.tasks.two_attributes import HIDDEN_SITE, TwoAttributes, attribute_pairs

FIT = dict(steps=100, eval_every=0, lr=1e-2, progress=False)  # no early stop: the fit's own optimum


@pytest.fixture(scope="module")
def planted():
    net = TwoAttributes(seed=0)  # a == b for every entity; answers lean on the other attribute's direction
    lm = interp.LM(net)

    def pairs(n, seed, interchange="A", ask=None):
        return attribute_pairs(net, n, seed=seed, interchange=interchange, ask=ask)

    return net, lm, pairs


def test_mdas_isolates_where_das_does_not(planted):
    net, lm, pairs = planted
    cause, iso = {"A": pairs(128, 1)}, {"A": pairs(128, 3, ask="B")}
    test = dict(cause={"A": pairs(100, 2)}, isolate={"A": pairs(100, 4, ask="B")})
    das = fit_das(lm, cause["A"], at=HIDDEN_SITE, rank=1, **FIT)
    mdas = fit_mdas(lm, cause, iso, at=HIDDEN_SITE, rank=1, **FIT)
    d, m = cause_isolate(das, **test), cause_isolate(mdas, **test)
    assert d["cause"]["A"] >= 0.9 and m["cause"]["A"] >= 0.9  # both move A
    assert d["isolate"]["A"] <= 0.3  # DAS for Cause alone moves B as well
    assert m["isolate"]["A"] >= 0.9 and m["isolate"]["A"] - d["isolate"]["A"] >= 0.5
    assert m["disentangle"] - d["disentangle"] >= 0.25
    # why: DAS's direction leans toward v (B's direction, which carries A on correlated entities); MDAS's is u's
    u, v = net.directions
    assert abs(float(das.rotation[0] @ v)) > 0.3 > abs(float(mdas.rotation[0] @ v))


def test_two_variables_get_their_own_rows(planted):
    _, lm, pairs = planted
    cause = {v: pairs(96, 1, interchange=v) for v in "AB"}
    iso = {"A": pairs(96, 3, interchange="A", ask="B"), "B": pairs(96, 3, interchange="B", ask="A")}
    mdas = fit_mdas(lm, cause, iso, at=HIDDEN_SITE, rank=2, **FIT)
    assert mdas.variables == ("A", "B") and mdas.splits == (1, 1)
    s = cause_isolate(mdas, {v: pairs(80, 2, interchange=v) for v in "AB"},
                      {"A": pairs(80, 4, ask="B"), "B": pairs(80, 4, interchange="B", ask="A")})  # fmt: skip
    assert min(s["cause"]["A"], s["cause"]["B"], s["isolate"]["A"], s["isolate"]["B"]) >= 0.9


def test_one_variable_is_das_on_cause_plus_isolation(planted):
    _, lm, pairs = planted
    cause, iso = pairs(64, 1), pairs(64, 3, ask="B")
    mdas = fit_mdas(lm, {"A": cause}, {"A": iso}, at=HIDDEN_SITE, rank=1, steps=5, progress=False)
    das = fit_das(lm, cause + widen(iso, "A", ["A"], isolate=True), at=HIDDEN_SITE, rank=1, steps=5, progress=False)
    assert torch.equal(mdas.rotation, das.rotation)
    assert [h["loss"] for h in mdas.history] == [h["loss"] for h in das.history]


def test_joint_pairs_feed_other_variables_the_base(planted):
    _, _, pairs = planted
    cause = {v: pairs(6, 1, interchange=v) for v in "AB"}
    iso = {"A": pairs(4, 3, ask="B")}
    iso["A"].labels = [1 - x for x in iso["A"].labels]  # labels are ignored: isolation keeps the base's answer
    joint = mdas_pairs(cause, iso, isolate_weight=0.5)
    assert joint.variables == ("A", "B") and len(joint) == 16
    assert joint.sources[1][:6] == joint.base[:6]  # A's cause pairs: B's rows take the base as their source
    assert joint.sources[0][6:12] == joint.base[6:12] and joint.sources[1][6:12] == cause["B"].sources[0]
    assert joint.labels[12:] == iso["A"].base_labels and joint.labels[:6] == cause["A"].labels
    assert joint.weights == [1.0] * 12 + [0.5] * 4
    assert joint[[0, 15]].weights == [1.0, 0.5]  # indexing (and so split) keeps the weights


def test_per_example_weights_scale_each_cross_entropy(planted):
    _, lm, pairs = planted
    p = pairs(8, 1)
    src = interp.batches.collect_sources(lm, p, [HIDDEN_SITE])[0]
    base, labels = interp.batches.rows(lm, p.base), interp.metrics.label_ids(lm, p.labels)
    iv = interp.das.Alignment(interp.LowRankRotation(8, 1))
    args = (lm, base, src, labels)
    plain = interchange_loss(*args, at=HIDDEN_SITE, via=iv)
    w = torch.tensor([2.0] * 4 + [0.0] * 4)
    first = interchange_loss(lm, interp.batches.rows(lm, p.base[:4]), src[:4], labels[:4], at=HIDDEN_SITE, via=iv)
    assert torch.allclose(interchange_loss(*args, at=HIDDEN_SITE, via=iv, weights=torch.ones(8)), plain)
    assert torch.allclose(interchange_loss(*args, at=HIDDEN_SITE, via=iv, weights=w), first, atol=1e-6)


def test_concat_and_add(planted):
    _, _, pairs = planted
    a, b = pairs(5, 1), pairs(3, 2)
    both = a + b.weighted(2.0)
    assert len(both) == 8 and both.base == a.base + b.base and both.weights == [1.0] * 5 + [2.0] * 3
    assert (a + b).weights is None and Pairs.concat(a).base == a.base
    with pytest.raises(CausalModelError, match=r"part 1 interchanges \('B',\)"):
        a + pairs(3, 2, interchange="B")
    with pytest.raises(CausalModelError, match=r"weights\[1\] is -1"):
        Pairs(("A",), a.base[:2], [a.sources[0][:2]], a.labels[:2], a.base_labels[:2], weights=[1, -1])


def test_bad_mdas_inputs_fail_before_work(planted):
    _, lm, pairs = planted
    cause = {"A": pairs(8, 1)}
    with pytest.raises(DASError, match=r"\['C'\], which are not among the variables \('A',\)"):
        fit_mdas(lm, cause, {"C": pairs(8, 3, ask="B")}, at=HIDDEN_SITE, rank=1)
    with pytest.raises(DASError, match=r"cause\['A'\] must be interp.causal.Pairs; got list"):
        fit_mdas(lm, {"A": [1, 2]}, at=HIDDEN_SITE, rank=1)
    with pytest.raises(DASError, match="non-empty mapping"):
        fit_mdas(lm, {}, at=HIDDEN_SITE, rank=1)
    with pytest.raises(DASError, match="isolate_weight"):
        fit_mdas(lm, cause, at=HIDDEN_SITE, rank=1, isolate_weight=float("nan"))
