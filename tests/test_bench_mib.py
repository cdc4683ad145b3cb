"""The MIB causal variable track runners (interp bench mib-mcqa / mib-ioi): causal models, the IOI metric on
known numbers, the cached one-token cells against full interchanges, refusals before work, and --quick on the
real data with the embedded model (skipped only when the data folder is missing)."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from conftest import tiny_lm

import interp
from interp.benchmarks import mib_ioi, mib_mcqa
from interp.benchmarks.data import DEFAULT
from interp.benchmarks.mib_engine import Prepared, interchange_fn
from interp.errors import BenchmarkDataError, BenchmarkOptionError
from interp.inputs import encode
from interp.positions import last
from interp.sites import Site
from interp.subspace import LowRankRotation

DATA = DEFAULT / "mib_variable_track"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"MIB data folder {DATA} is missing")


class Loaded(BaseException):
    """A refused run got as far as loading the model."""


def _no_load(*args, **kwargs):
    raise Loaded("the runner loaded the model before refusing")


# ------------------------------------------------------------------------------------------- IOI metric
def test_ioi_linear_model_recovers_known_coefficients_and_mib_signals():
    # MIB's regression inputs per counterfactual set (ioi_learn_linear_params.py's data_to_X), from the causal model
    base = {"template": "{name_A} and {name_B} went to the {place}. {name_C} gave a {object} to", "place": "store",
            "object": "ring", "name_A": "Mary", "name_B": "John", "name_C": "John"}  # fmt: skip
    got = {k: mib_ioi.signals(base, mib_ioi.source(base, k)) for k in mib_ioi.SIGNALS}
    assert got == {"same": (1, 1), "s1_io_flip": (-1, 1), "s2_io_flip": (-1, -1), "s1_ioi_flip_s2_ioi_flip": (1, -1)}
    x = np.array([mib_ioi.SIGNALS[k] for k in mib_ioi.SIGNALS] * 3)
    y = 0.3 + 2.0 * x[:, 0] + 0.7 * x[:, 1] + np.tile([0.1, -0.1, 0.1, -0.1], 3) * 0  # exact: no noise
    fit = mib_ioi.fit_linear(x, y)
    assert fit == {"bias": 0.3, "token_coeff": 0.7, "position_coeff": 2.0, "r2": 1.0}
    # the target of an interchange, and the MSE of measured logit differences against it
    m = mib_ioi.causal_model(fit["bias"], fit["token_coeff"], fit["position_coeff"])
    flip = mib_ioi.source(base, "s2_io_flip")
    assert m.interchange(base, {"output_token": flip})["logit_diff"] == pytest.approx(0.3 - 0.7 + 2.0)
    assert m.interchange(base, {"output_position": flip})["logit_diff"] == pytest.approx(0.3 + 0.7 - 2.0)
    assert mib_ioi.mse(torch.tensor([1.6, 0.0, 3.0]), torch.tensor([1.6, 1.0, 1.0])) == pytest.approx(5 / 3)


def test_mcqa_causal_model_and_counterfactuals():
    import random

    items = [{"object": o, "color": c} for o, c in [("lemon", "yellow"), ("apple", "red"), ("sky", "blue"),
                                                    ("grass", "green"), ("coal", "black")]]  # fmt: skip
    rng, m = random.Random(0), mib_mcqa.causal_model()
    for _ in range(20):
        b = mib_mcqa.sample_base(rng, items)
        pos = mib_mcqa.counterfactual(rng, b, "answerPosition")
        let = mib_mcqa.counterfactual(rng, b, "randomLetter")
        assert m.run(pos)["answer_pointer"] != m.run(b)["answer_pointer"] and pos["question"] == b["question"]
        assert m.run(let)["answer_pointer"] == m.run(b)["answer_pointer"]
        # pointer from the source: the base's symbol at the source's pointer; answer: the source's letter
        assert m.interchange(b, {"answer_pointer": pos})["answer"] == " " + "ABCD"[m.run(pos)["answer_pointer"]]
        assert m.interchange(b, {"answer": let})["answer"] == m.run(let)["answer"]
    assert mib_mcqa.prompt(b).endswith("\nAnswer:") and "D. " in mib_mcqa.prompt(b)


# ------------------------------------------------------------------------------ the cached one-token cells
def test_cells_equal_full_interchanges_on_a_tiny_model():
    lm = tiny_lm("llama")
    g = torch.Generator().manual_seed(0)
    base = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (5, 7, 6)]
    src = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (6, 5, 7)]
    b, s = Prepared.of(lm, base, layers=[0, 1], keep=True), Prepared.of(lm, src, layers=[0, 1])
    assert torch.equal(b.top, interp.run(lm, base).logits.argmax(-1))
    R = LowRankRotation(lm.d_model, 3)
    for layer in (0, 1):
        for basis in (None, R):
            got = b.logits(lm, 0, layer=layer, edit=interchange_fn(basis, s.vectors[layer]))
            want = interp.interchange(
                lm, encode(lm, base), encode(lm, src), at=Site("resid_post", layer, last()), via=basis
            ).logits
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(
        b.logits(lm, 0, layer=0, edit=interchange_fn(None, s.vectors[0])), interp.run(lm, base).logits, atol=1e-3
    )  # fmt: skip  (the edit did something)


# ------------------------------------------------------------------------------- refusals before any work
@pytest.mark.parametrize("runner", [mib_mcqa, mib_ioi])
def test_missing_data_names_the_public_repository(runner, tmp_path):
    with mock.patch(f"{runner.__name__}.load", _no_load), pytest.raises(BenchmarkDataError) as e:
        runner.run(data=tmp_path, progress=False)
    assert "aaronmueller/MIB" in str(e.value) and "MIB-causal-variable-track/tasks/" in str(e.value)


@pytest.mark.parametrize("runner", [mib_mcqa, mib_ioi])
@pytest.mark.parametrize(
    "options, names",
    [({"methods": ["DAS", "SAE-ish"]}, "SAE-ish"), ({"methods": "DAS"}, "'DAS'"), ({"methods": []}, r"\[\]"),
     ({"layers": [-1]}, r"-1"), ({"layers": 3}, "3"), ({"layers": [2.5]}, r"2\.5")],
)  # fmt: skip
def test_bad_options_are_refused_before_loading(runner, options, names, tmp_path):
    with mock.patch(f"{runner.__name__}.load", _no_load), pytest.raises(BenchmarkOptionError, match=names):
        runner.run(data=tmp_path, progress=False, **options)


def test_a_layer_beyond_the_model_is_refused_before_any_forward():
    lm = tiny_lm("llama")  # 2 layers
    with pytest.raises(BenchmarkOptionError, match=r"\[5\].*\[0, 2\)"):
        mib_ioi.run(lm, layers=[5], progress=False)


# ---------------------------------------------------------------------------- --quick on the real data
@pytest.mark.slow
@needs_data
def test_mcqa_quick_on_the_real_data(gemma):
    r = mib_mcqa.run(gemma, quick=True, progress=False)
    layers = r["sizes"]["layers"]
    assert {(row["method"], row["variable"], row["layer"]) for row in r["table"] if row["counterfactual"] == "all"} \
        == {(m, v, x) for m in ("full_vector", "DAS") for v in mib_mcqa.VARIABLES for x in layers}  # fmt: skip
    assert all(0.0 <= row["iia"] <= 1.0 and row["n"] > 0 for row in r["table"])
    assert set(r["layer_average"]) == {"full_vector", "DAS"} and "Gemma-2-2B" in r["published"]
    assert set(r["sizes"]["filter"]["kept_share"]) == set(mib_mcqa.SETS)


@pytest.mark.slow
@needs_data
def test_ioi_quick_on_the_real_data(gemma):
    r = mib_ioi.run(gemma, quick=True, progress=False)
    assert r["sizes"]["task_accuracy"] > 0.7  # Gemma-3-270M does IOI (MIB filters to the examples it gets right)
    lin = r["linear_model"]
    assert lin["token_coeff"] > 0 and np.isfinite([lin["bias"], lin["position_coeff"], lin["r2"]]).all()
    rows = [row for row in r["table"] if row["counterfactual"] == "all"]
    assert {(row["method"], row["variable"]) for row in rows} == {
        (m, v) for m in ("full_vector", "DAS") for v in mib_ioi.VARIABLES
    }
    assert all(row["mse"] >= 0 and row["n"] > 0 for row in r["table"]) and "GPT-2 small" in r["published"]
