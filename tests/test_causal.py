"""CausalModel and counterfactual datasets: labels equal the model run under the same interchange."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from interp.causal import CausalModel, Pairs
from interp.tasks import hierarchical_equality as he
from interp.tasks import ioi_position


def adder():
    return CausalModel(
        {
            "a": None,
            "b": None,
            "c": None,
            "ab": (("a", "b"), lambda a, b: a + b),
            "out": (("ab", "c"), lambda ab, c: ab * c),
        }
    )


def test_run_intervene_interchange():
    m = adder()
    assert m.run({"a": 1, "b": 2, "c": 3}) == {"a": 1, "b": 2, "c": 3, "ab": 3, "out": 9}
    assert m.run({"a": 1, "b": 2, "c": 3}, set={"ab": 10})["out"] == 30
    assert m.interchange({"a": 1, "b": 2, "c": 3}, {"ab": {"a": 5, "b": 5, "c": 0}})["out"] == 30
    assert (
        m.interchange({"a": 1, "b": 2, "c": 3}, {"ab": {"a": 5, "b": 5, "c": 0}, "c": {"a": 0, "b": 0, "c": 2}})["out"]
        == 20
    )
    assert m.inputs == ("a", "b", "c") and m.output == "out"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40))
def test_counterfactual_labels_equal_the_model_under_interchange(seed, n):
    m = he.causal_model()
    data = m.counterfactuals(
        he.sample, variables=["WX", "YZ"], n=n, seed=seed, subsets=[("WX",), ("YZ",), ("WX", "YZ")]
    )
    for i in range(len(data)):
        srcs = dict(zip(data.variables, data.sources_of(i)))
        assert data.label[i] == m.interchange(data.base[i], srcs)["O"]
        assert data.base_label[i] == m.run(data.base[i])["O"]
        # by hand: O = (WX == YZ) with each equality read from its own source
        wx, yz = srcs["WX"]["W"] == srcs["WX"]["X"], srcs["YZ"]["Y"] == srcs["YZ"]["Z"]
        assert data.label[i] == (wx == yz)


def test_ioi_position_labels_are_the_base_name_at_the_source_position():
    pairs = ioi_position.ioi_position_pairs(n=50, seed=3)
    for i in range(len(pairs)):
        b, s = pairs.data.base[i], pairs.data.sources[0][i]
        assert b["P"] != s["P"]  # changed_only: the label differs from the base answer
        assert pairs.labels[i] == " " + [b["N1"], b["N2"]][s["P"]]
        assert pairs.labels[i] != pairs.base_labels[i]
        assert pairs.labels[i].strip() in pairs.base[i]


def test_split_render_and_lengths():
    data = adder().counterfactuals(lambda r: {k: r.randrange(5) for k in "abc"}, variables="ab", n=20, seed=1)
    tr, te = data.split(0.75, seed=0)
    assert len(tr) == 15 and len(te) == 5
    pairs = data.render(lambda s: f"{s['a']}+{s['b']} times {s['c']} =", lambda y: f" {y}")
    assert isinstance(pairs, Pairs) and pairs.base[0].endswith("=") and len(pairs.sources) == 1
    a, b = pairs.split(0.5, seed=2)
    assert sorted(a.base + b.base) == sorted(pairs.base)


def test_same_seed_same_data():
    def sample(r: random.Random):
        return {k: r.randrange(9) for k in "abc"}

    a = adder().counterfactuals(sample, variables=["ab", "c"], n=30, seed=7)
    b = adder().counterfactuals(sample, variables=["ab", "c"], n=30, seed=7)
    assert a == b
