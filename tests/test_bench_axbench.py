"""AxBench Concept10 (interp.benchmarks.axbench): ROC AUC against a hand count, refusals before any model work,
and the quick run on the real data with the embedded Gemma-3-270M."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_lm

from interp.benchmarks import axbench
from interp.benchmarks.axbench_detect import roc_auc, text_scores
from interp.benchmarks.data import data_root
from interp.errors import BenchmarkDataError, BenchmarkOptionError, ConfigError, InputError

DATA = data_root(None) / "axbench_concept10" / "prod_2b_l10_v1"


def test_roc_auc_by_hand_and_against_pairs():
    # pairs (pos, neg): (0.9, 0.4) 1, (0.9, 0.1) 1, (0.4, 0.4) a tie: 1/2, (0.4, 0.1) 1 -> 3.5 / 4
    assert float(roc_auc(torch.tensor([0.9, 0.4, 0.4, 0.1]), torch.tensor([1, 1, 0, 0]))) == 0.875
    assert float(roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([1, 0]))) == 0.0
    assert float(roc_auc(torch.ones(6), torch.tensor([1, 0, 1, 0, 1, 0]))) == 0.5  # all tied
    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (40,), generator=g).float()  # many ties
    y = torch.randint(0, 2, (40,), generator=g)
    p, n = s[y == 1], s[y == 0]
    pairs = ((p[:, None] > n[None]).float() + 0.5 * (p[:, None] == n[None]).float()).mean()
    assert float(roc_auc(s, y)) == pytest.approx(float(pairs), abs=1e-6)
    with pytest.raises(InputError, match="both classes"):
        roc_auc(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))


def test_text_scores_max_and_mean_over_tokens():
    w = torch.tensor([1.0, 0.0])
    mx, mn = text_scores([torch.tensor([[1.0, 5.0], [-3.0, 0.0]])], w)
    assert mx.tolist() == [1.0] and mn.tolist() == [-1.0]
    mx, mn = text_scores([torch.tensor([[1.0, 5.0], [-3.0, 0.0]])], w, relu=True, offset=0.5)
    assert mx.tolist() == [0.5] and mn.tolist() == [0.25]


def test_missing_data_names_the_repository_before_loading(tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(axbench, "load_model", no_model)
    with pytest.raises(BenchmarkDataError) as e:
        axbench.run(data=tmp_path, quick=True, progress=False)
    assert "stanfordnlp/axbench" in str(e.value) and "train_data.parquet" in str(e.value)
    with pytest.raises(ConfigError, match="'sae'"):
        axbench.run(data=tmp_path, quick=True, methods=["diffmean", "sae"])


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_dir(), reason=f"AxBench Concept10 data not found at {DATA}")
def test_quick_run_on_real_data(gemma):
    out = axbench.run(gemma, quick=True, progress=False)
    json.dumps(out)  # JSON-able
    assert {r["method"] for r in out["table"]} == set(axbench.METHODS)
    assert len(out["table"]) == 2 * len(axbench.METHODS)  # 2 concepts x 5 methods
    for r in out["table"]:
        assert 0.0 <= r["auroc_max"] <= 1.0 and 0.0 <= r["auroc_mean"] <= 1.0
    assert [m["method"] for m in out["means"]] == list(axbench.METHODS)
    steer = out["steering"]
    assert [r["method"] for r in steer] == ["none", "diffmean", "reft-r1"]
    assert all(r["strength"] > 0 for r in steer[1:])  # a steering unit that is not zero
    assert any(r["concept_ll_delta"] != 0 for r in steer[1:])  # the edit reached the model
    assert out["sizes"]["layers"] == [gemma.n_layers // 2] and out["sizes"]["concepts"] == 2
    assert "PROXY" in out["steering_note"] and out["published"]["lesson"]


@pytest.mark.skipif(not DATA.is_dir(), reason=f"AxBench Concept10 data not found at {DATA}")
def test_bad_layer_is_refused_before_collecting():
    with pytest.raises(BenchmarkOptionError, match=r"layers \[5\]"):
        axbench.run(tiny_lm("llama"), quick=True, layers=[5], progress=False)
