"""The RAVEL runner (interp bench ravel): the data read in place, the entity-end position, refusals before any work,
and --quick on the real data with the embedded model (skipped only when the data folder is missing)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch

from interp.batches import rows
from interp.benchmarks import ravel, ravel_data, ravel_pairs
from interp.benchmarks.data import DEFAULT
from interp.errors import BenchmarkDataError, BenchmarkOptionError, PositionError

DATA = DEFAULT / "ravel" / "data.tgz"
needs_data = pytest.mark.skipif(not DATA.is_file(), reason=f"RAVEL data {DATA} is missing")


class Loaded(BaseException):
    """A refused run got as far as loading the model or building pairs."""


def _no_work(*args, **kwargs):
    raise Loaded("the runner did work before refusing")


def test_missing_data_names_the_repository_and_path_before_loading(tmp_path):
    with mock.patch.object(ravel, "load", _no_work), pytest.raises(BenchmarkDataError) as e:
        ravel.run(data=tmp_path, quick=True, progress=False)
    msg = str(e.value)
    assert "explanare/ravel" in msg and "data.tgz" in msg and str(tmp_path) in msg


def test_a_broken_archive_says_what_to_fetch(tmp_path):
    (tmp_path / "ravel").mkdir()
    (tmp_path / "ravel" / "data.tgz").write_bytes(b"not a tar archive")
    with pytest.raises(BenchmarkDataError, match="explanare/ravel"):
        ravel_data.load_city(tmp_path)


@pytest.mark.parametrize(
    "options, named",
    [
        ({"methods": ["das", "sae2"]}, "sae2"),
        ({"methods": "das"}, "'das'"),
        ({"methods": []}, "[]"),
        ({"layers": [3, -1]}, "-1"),
        ({"layers": 7}, "7"),
    ],
)
def test_bad_options_are_refused_before_any_work(options, named):
    with mock.patch.object(ravel, "load", _no_work), mock.patch.object(ravel, "load_city", _no_work):
        with pytest.raises(BenchmarkOptionError) as e:
            ravel.run(quick=True, progress=False, **options)
    assert named in str(e.value)


@needs_data
@pytest.mark.slow
def test_layers_beyond_the_model_are_refused_before_building(gemma):
    with mock.patch.object(ravel, "build", _no_work), pytest.raises(BenchmarkOptionError, match="99"):
        ravel.run(gemma, quick=True, layers=[3, 99], progress=False)


@needs_data
def test_city_data_is_read_in_place_with_its_splits():
    city = ravel_data.load_city()
    assert city.attributes["Aalborg"]["Country"] == "Denmark"
    train, val, test = (set(city.entities(s)) for s in ravel_pairs.SPLITS)
    assert len(train) > 1000 and not train & test and not train & val and not val & test
    tpls = city.templates("Country", "train")
    assert tpls and all(t.count("%s") == 1 for t in tpls)
    with pytest.raises(BenchmarkDataError, match="Population"):
        city.templates("Population", "train")


def test_separator_follows_the_template():
    assert ravel_data.separator('{"city": "%s", "country": "') == ""
    assert ravel_data.separator("SF has a latitude of ") == ""
    assert ravel_data.separator("%s is a city in the country of") == " "


@pytest.mark.slow
def test_entity_end_finds_the_entity_at_a_different_index_per_prompt(gemma):
    tok = gemma.tokenizer
    pos = ravel_data.EntityEnd(tok)
    prompts = [pos.add('[{"city": "%s", "country": "', "Aalborg"), pos.add("People in %s usually speak", "New York")]
    batch = rows(gemma, prompts)  # left-padded as every runner pads
    idx = pos.resolve(batch.attention_mask, batch.input_ids, tok)
    ends = [tok.decode(batch.input_ids[b, : idx[b, 0] + 1]) for b in range(2)]
    assert ends[0].endswith("Aalborg") and ends[1].endswith("New York")
    assert idx[0, 0] != idx[1, 0]  # a different column in each row (one mentions the city later)
    other = rows(gemma, ["Paris is nice"])
    with pytest.raises(PositionError, match="EntityEnd.add"):
        pos.resolve(other.attention_mask, other.input_ids, tok)


@needs_data
@pytest.mark.slow
def test_quick_run_on_the_real_data(gemma):
    torch.set_num_threads(1)
    result = ravel.run(gemma, quick=True, progress=False)
    json.dumps(result)  # JSON-able as the CLI writes it
    table = result["table"]
    assert {r["method"] for r in table} == set(ravel.DEFAULT_METHODS)
    assert {r["layer"] for r in table} == set(ravel.SETTINGS["quick"]["layers"])
    for r in table:
        assert 0 <= r["cause"] <= 1 and 0 <= r["isolate"] <= 1 and r["n_cause"] > 0 and r["n_isolate"] > 0
        assert r["disentangle"] == pytest.approx((r["cause"] + r["isolate"]) / 2, abs=1e-3)
        assert r["rank"] == (gemma.d_model if r["method"] == "full" else ravel.SETTINGS["quick"]["rank"])
    by = {r["method"]: r for r in table}
    # the whole vector carries the source city: it causes its country and cannot isolate another attribute;
    # random directions of the same rank do neither harm nor good: no cause, the base's answers stay
    assert by["full"]["cause"] >= 0.6 and by["full"]["isolate"] <= 0.2
    assert by["random"]["cause"] <= 0.2 and by["random"]["isolate"] >= 0.6
    assert set(result["lesson"]) == {"best_layer", "mdas_minus_das_disentangle"}
    assert result["published"]["rows"][0]["disentangle"] == 0.51
    assert result["sizes"]["cause_pairs"]["test"] > 0 and result["sizes"]["entities"]["train"] > 0


@needs_data
@pytest.mark.slow
def test_the_filter_keeps_what_the_model_answers(gemma):
    city = ravel_data.load_city()
    inst = ravel_pairs.build(gemma, city, sizes=ravel_pairs.QUICK, seed=1, progress=False)
    cause, iso = inst.cause["test"], inst.isolate["test"]
    # every base is a prompt the model gets right: its next token is the base label
    assert ravel_pairs.predictions(gemma, cause.base) == list(cause.base_labels)
    assert ravel_pairs.predictions(gemma, iso.base) == list(iso.labels)
    assert all(a != b for a, b in zip(cause.labels, cause.base_labels))  # the source's value differs
    assert list(iso.labels) == list(iso.base_labels)  # isolation keeps the base's own value
