"""Engine switches are engine options (issue 21 item 4), and sites resolve once per fit, not once per step.

``with interp.engine.options(backend=..., full=...)`` sets what every verb inside runs on; the old ``backend=`` /
``full=`` keywords still give the same numbers for one release, with a DeprecationWarning naming the option.
"""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from conftest import tiny_lm

import interp
import interp.sites
import reft
from interp import CausalModel, Site, first, last
from interp.engine import configure, current, options
from interp.errors import ConfigError

BASE = torch.randint(3, 97, (3, 6), generator=torch.Generator().manual_seed(0))
SOURCE = torch.randint(3, 97, (3, 6), generator=torch.Generator().manual_seed(1))
SITE = Site("mlp_out", 1, last())


def _verbs(lm):
    """Each public verb that took ``backend=``, as ``name -> fn(**old_keywords) -> a tensor``."""
    pairs = interp.Pairs.of(BASE, SOURCE, base_answer=[5] * 3, source_answer=[6] * 3)
    return {
        "interchange": lambda **kw: interp.interchange(lm, BASE, SOURCE, at=SITE, **kw).logits,
        "intervene": lambda **kw: interp.intervene(lm, BASE, at=SITE, via=interp.Zero(), **kw).logits,
        "run": lambda **kw: interp.run(lm, BASE, **kw).logits,
        "collect": lambda **kw: interp.collect(lm, BASE, at=SITE, **kw),
        "cache": lambda **kw: interp.cache(lm, BASE, at=[SITE], **kw)[SITE],
        "logit_lens": lambda **kw: interp.logit_lens(lm, BASE, layers=[0, 1], **kw).logits,
        "attribution_patch": lambda **kw: interp.attribution_patch(lm, pairs, layers=[0, 1], **kw).effect,
    }


@pytest.mark.parametrize("backend", ["nnsight", "hooks"])
def test_the_option_and_the_old_keyword_give_the_same_numbers_and_the_keyword_warns(backend):
    lm = tiny_lm("llama")
    for name, verb in _verbs(lm).items():
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # the option path warns about nothing
            with options(backend=backend):
                new = verb()
        with pytest.warns(DeprecationWarning, match=rf"{name}\(backend='{backend}'\).*interp\.engine\.options"):
            old = verb(backend=backend)
        torch.testing.assert_close(new, old, atol=0, rtol=0, msg=lambda m, name=name: f"{name}: {m}")
    full = _verbs(lm)["interchange"]
    with options(backend=backend, full=True):
        ref = full()
    with pytest.warns(DeprecationWarning, match=r"full=True"):
        torch.testing.assert_close(full(backend=backend, full=True), ref, atol=0, rtol=0)


def test_the_option_reaches_the_engine_and_is_restored():
    lm = tiny_lm("llama")
    seen = []
    real = interp.dii.execute

    def spy(*args, **kw):
        seen.append((current().backend, current().full, kw.get("backend"), kw.get("full")))
        return real(*args, **kw)

    interp.dii.execute = spy
    try:
        interp.run(lm, BASE)
        with options(backend="hooks"):
            with options(full=True):  # an inner block changes one option and keeps the other
                interp.run(lm, BASE)
            interp.run(lm, BASE)
        interp.run(lm, BASE)
    finally:
        interp.dii.execute = real
    assert seen == [
        ("nnsight", False, None, None),
        ("hooks", True, None, None),
        ("hooks", False, None, None),
        ("nnsight", False, None, None),
    ]


def test_configure_sets_the_default_and_a_thread_sees_its_own_block():
    old = configure(backend="hooks")
    try:
        assert current().backend == "hooks"
        with options(backend="nnsight"):
            got = []
            t = threading.Thread(target=lambda: got.append(current().backend))  # a new thread: the defaults
            t.start()
            t.join(timeout=10)
            assert current().backend == "nnsight" and got == ["hooks"]
    finally:
        configure(backend=old.backend, full=old.full)
    assert current().backend == "nnsight"


@pytest.mark.parametrize(("kw", "named"), [({"backend": "torch"}, "'torch'"), ({"full": "yes"}, "'yes'")])
def test_a_bad_option_is_refused_naming_the_value(kw, named):
    with pytest.raises(ConfigError, match=named):
        with options(**kw):
            pass
    with pytest.raises(ConfigError, match=named):
        configure(**kw)
    assert current() == interp.engine.Options()


def _counting(monkeypatch) -> list:
    calls: list = []
    real = interp.sites.resolve

    def counted(lm, site):
        calls.append(site)
        return real(lm, site)

    monkeypatch.setattr(interp.sites, "resolve", counted)
    return calls


def _pairs():
    model = CausalModel({"a": None, "G": (("a",), lambda a: a >= 50), "O": (("G",), lambda g: 5 if g else 6)})
    data = model.counterfactuals(lambda r: {"a": r.randrange(10, 90)}, variables="G", n=16, seed=0, changed_only=True)
    return data.render(lambda s: [1, s["a"], 7], int, candidates=[5, 6])


@pytest.mark.parametrize("site", [Site("resid_post", 1, last()), Site("resid_post", 0, last())])
def test_a_das_fit_resolves_its_site_a_bounded_number_of_times(monkeypatch, site):
    lm, pairs = tiny_lm("llama"), _pairs()
    calls = _counting(monkeypatch)
    counts = {}
    for steps in (1, 5):
        calls.clear()
        interp.fit_das(lm, pairs, at=site, rank=2, steps=steps, batch_size=4, val_fraction=0, progress=False)
        counts[steps] = len(calls)
    assert counts[1] == counts[5], counts  # not one resolution (or eight) per step
    assert counts[5] <= 8, counts  # a handful: the checks, the basis, the source cache, the final IIA


def test_a_reft_fit_resolves_its_sites_a_bounded_number_of_times(monkeypatch):
    lm = tiny_lm("llama")
    examples = [{"prompt_ids": p, "response_ids": [5, 6]} for p in BASE.tolist()]
    calls = _counting(monkeypatch)
    counts = {}
    for steps in (1, 5):
        rlm = reft.attach(lm, {Site("resid_post", 1, first(1) + last(1)): reft.LoReFT(32, rank=2)})
        calls.clear()
        reft.train_reft(rlm, examples, reft.TrainConfig(steps=steps, batch_size=2, progress=False))
        counts[steps] = len(calls)
    assert counts[1] == counts[5] <= 2, counts  # at attach and the stream cache: none per step
