"""DAS on tiny random models: planted variables are recovered, saved alignments reload, bad input fails early."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
from conftest import ARCHS, tiny_lm
from torch.nn import functional as F

from interp import Boundless, Coordinate, LowRankRotation, Site, at, interchange, last, paircache
from interp.batches import collect_rows, collect_sources, rows
from interp.causal import CausalModel, Pairs
from interp.das import Alignment, DASConfig, DASResult, fit_das
from interp.engine import StandIn
from interp.errors import DASError
from interp.grid import Grid
from interp.metrics import das_loss, iia, task_accuracy
from interp.paircache import PairCache
from interp.probe import fit_probe, probe_sweep
from interp.replay import PrefixCache
from interp.subspace import Fixed
from interp.sweep import SweepResult, sweep_das

GROUP_A, GROUP_B = list(range(10, 30)), list(range(30, 50))
YES, NO = 5, 6


def planted(seed: int = 1):
    """Tiny GPT-2 whose input tokens carry a binary variable G along a random unit direction u of the residual
    stream, and whose answer (token 5 or 6) reads that direction: a known variable in a random 1-dim subspace."""
    lm = tiny_lm("gpt2")
    u = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    u /= u.norm()
    with torch.no_grad():
        W = lm.hf.transformer.wte.weight  # tied with the unembedding
        for t in GROUP_A + GROUP_B:
            W[t] += ((3.0 if t in GROUP_A else -3.0) - W[t] @ u) * u
        W[YES], W[NO] = 5 * u, -5 * u
    model = CausalModel({"a": None, "G": (("a",), lambda a: a in GROUP_A), "O": (("G",), lambda g: YES if g else NO)})
    data = model.counterfactuals(lambda r: {"a": r.choice(GROUP_A + GROUP_B)}, variables="G", n=300, seed=0,
                                 changed_only=True)  # fmt: skip
    return lm, u, data.render(lambda s: [s["a"]], int)


FAST = dict(steps=60, batch_size=32, lr=1e-2, eval_every=20, patience=2, progress=False)


@pytest.fixture(scope="module")
def fitted():
    lm, u, pairs = planted()
    train, test = pairs.split(0.7, seed=0)
    das = fit_das(lm, train, at=Site("resid_post", 0, last()), rank=1, test=test, **FAST)
    return lm, u, train, test, das


def test_planted_variable_is_recovered_fast(fitted):
    lm, u, train, test, das = fitted
    assert task_accuracy(lm, test.base, test.base_labels) == 1.0
    assert das.iia_test > 0.95 and das.iia_train > 0.95
    # speed is the bench's job (bench/bench_das.py prints ratios); here: converged within FAST's 60 steps
    assert das.history[-1]["step"] <= FAST["steps"]
    R = das.rotation
    torch.testing.assert_close(R @ R.T, torch.eye(1), atol=1e-5, rtol=0)  # still orthonormal after training
    # a random direction does not do it: IIA near the no-op floor (every label flips, so ~0)
    assert iia(lm, test, at=das.site, via=LowRankRotation(32, 1)) < das.iia_test - 0.3
    assert [h["step"] for h in das.history] == sorted(h["step"] for h in das.history)


@pytest.mark.parametrize("arch", ARCHS)
def test_iia_via_none_is_whole_vector_patching(arch):
    """via=None interchanges the whole vector, as a full-rank Coordinate basis does; at the last layer's final
    token that makes the base run the source run, so labels read off the source run score IIA 1."""
    lm = tiny_lm(arch)
    base, source = torch.randint(3, 97, (2, 24, 5), generator=torch.Generator().manual_seed(0)).tolist()
    src = rows(lm, source)
    labels = interchange(lm, src, src, at=Site("resid_post", 0, last())).predictions().tolist()  # the source run
    pairs = Pairs(("x",), base, [source], labels, labels)
    for layer in (0, lm.n_layers - 1):
        site = Site("resid_post", layer, last())
        whole, full_rank = iia(lm, pairs, at=site, via=None), iia(lm, pairs, at=site, via=Coordinate(32, range(32)))
        assert whole == pytest.approx(full_rank, abs=1 / len(pairs))  # one near-tie may flip
    assert whole == 1.0


def test_reuse_in_dii_and_probe(fitted):
    lm, u, train, test, das = fitted
    base, src = rows(lm, test.base), rows(lm, test.sources[0])
    out = interchange(lm, base, src, at=das.site, via=das.basis)
    want = torch.tensor([YES if y == YES else NO for y in test.labels])
    assert (out.predictions() == want).float().mean() > 0.95
    values = [b["a"] in GROUP_A for b in train.data.base]
    pr = fit_probe(lm, train.base, values, at=das.site)
    assert pr.accuracy_test == 1.0
    ps = probe_sweep(lm, train.base, values, layers=[0, 1], positions={"last": last()})
    assert ps.accuracy.shape == (2, 1)


def test_save_reload_identical(fitted, tmp_path):
    lm, u, train, test, das = fitted
    path = das.save(tmp_path / "planted")
    again = DASResult.load(path, lm)
    assert again.iia(test) == das.iia(test) == das.iia_test
    torch.testing.assert_close(again.rotation, das.rotation, atol=0, rtol=0)
    assert again.site == das.site and again.config == das.config and again.history == das.history
    das.save(path, overwrite=True)  # refusals (no overwrite, another model): tests/bad_inputs_io.py
    assert torch.equal(DASResult.load(path, lm).rotation, das.rotation)


def test_step_equals_unoptimised_path():
    """Cached sources + logits at the last token + backward to the site == full source and base forwards with
    plain PyTorch hooks (no nnsight), logits everywhere."""
    lm, u, pairs = planted()
    batch = pairs[:8]
    site = Site("resid_post", 1, last())
    R = LowRankRotation(32, 2)
    labels = torch.tensor(batch.labels)
    src = collect_sources(lm, batch, [site])[0]
    loss = das_loss(lm, rows(lm, batch.base), src, labels, at=site, via=Alignment(R))
    loss.backward()
    g_fast = R.proj.parametrizations.weight.original.grad.clone()
    R.zero_grad()

    layer = lm.hf.transformer.h[1]
    seen = {}
    hook = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("s", o[:, -1].detach().clone()))
    lm.hf(input_ids=torch.tensor(batch.sources[0]))
    hook.remove()

    def edit(m, i, o):
        W = R.weight
        h = o[:, -1]
        o = o.clone()
        o[:, -1] = h + (seen["s"] @ W.T - h @ W.T) @ W
        return o

    hook = layer.register_forward_hook(edit)
    logits = lm.hf(input_ids=torch.tensor(batch.base)).logits  # (B, T, V): every position
    hook.remove()
    ref = F.cross_entropy(logits[:, -1], labels)
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_fast, R.proj.parametrizations.weight.original.grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "resid_post"])
@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_replay_equals_the_full_run(arch, component):
    """Replaying the cached stream below the site gives the loss and gradient of running every layer, under left
    padding and in any row order, and puts the real layers back afterwards."""
    lm = tiny_lm(arch)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (5, 7, 4, 7, 6)]
    site = Site(component, 1, last())
    R = LowRankRotation(32, 2)
    idx = [3, 0, 2]  # a minibatch drawn out of order, padded to its own length
    base = rows(lm, [prompts[i] for i in idx])
    src = collect_rows(lm, prompts[1:4], [site])  # sources of another length and padding
    labels = torch.tensor([5, 6, 7])

    def loss_and_grad(replay):
        R.zero_grad()
        with replay:
            loss = das_loss(lm, base, src[0], labels, at=site, via=Alignment(R))
        loss.backward()
        return loss.detach(), R.proj.parametrizations.weight.original.grad.clone()

    full = loss_and_grad(contextlib.nullcontext())
    cache = PrefixCache.collect(lm, prompts, layer=1, batch_size=2)  # collected under other padding
    fast = loss_and_grad(cache.replay(lm, idx, base))
    torch.testing.assert_close(fast[0], full[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fast[1], full[1], atol=1e-6, rtol=1e-4)
    assert not any(isinstance(m, StandIn) for m in lm.hf.modules())
    with pytest.raises(ValueError, match="not the ones"):
        with cache.replay(lm, [4, 0, 2], base):  # prompt 4 has 6 tokens, prompt 3 has 7
            pass


def test_boundless_and_multi_variable_alignment():
    lm, u, pairs = planted()
    train, test = pairs.split(0.7, seed=0)
    das = fit_das(lm, train, at=Site("resid_post", 0, last()), via=Boundless(32, init_fraction=0.25),
                  test=test, **FAST)  # fmt: skip
    assert das.iia_test > 0.9
    # two variables on one site: rows beyond the splits keep the base; one variable == plain interchange
    R = LowRankRotation(32, 4)
    h, s1, s2 = torch.randn(3, 5, 1, 32).unbind(0)
    out = Alignment(R, (1, 2))(h, torch.cat([s1, s2], -1))
    W = R.weight.detach()
    torch.testing.assert_close(out @ W[0], s1 @ W[0])
    torch.testing.assert_close(out @ W[1:3].T, s2 @ W[1:3].T)
    torch.testing.assert_close(out @ W[3], h @ W[3])
    torch.testing.assert_close(Alignment(R)(h, s1), R.interchange(h, s1), atol=0, rtol=0)


def test_sweep_grid():
    lm, u, pairs = planted()
    train, test = pairs.split(0.7, seed=0)
    sw = sweep_das(lm, train, test, layers=[0, 1], positions={"last": last()}, ranks=[1], progress=False,
                   **{k: v for k, v in FAST.items() if k != "progress"} | {"steps": 20})  # fmt: skip
    assert sw.iia.shape == sw.iia_train.shape == (1, 2, 1) and sw.best()["iia"] == float(sw.iia.max())
    assert set(sw.to_dict()) >= {"layers", "positions", "ranks", "iia", "iia_train", "best"}
    again = Grid.from_dict(json.loads(json.dumps(sw.to_dict())))
    torch.testing.assert_close(again.iia_train, sw.iia_train, atol=0, rtol=0)
    assert again.axes == sw.axes and again.component == "resid_post" and again.best() == sw.best()
    ax = sw.plot()
    assert ax.get_title()


# ------------------------------------------ issue 23: one cache for many fits, any featurizer basis, kept results


def test_pair_cache_serves_later_fits_without_collecting(monkeypatch):
    lm, u, pairs = planted()
    train, test = pairs.split(0.7, seed=0)
    site, opts = Site("resid_post", 1, last()), FAST | {"steps": 6}
    plain = fit_das(lm, train, at=site, rank=2, test=test, **opts)
    cache = PairCache(lm)
    first = fit_das(lm, train, at=site, rank=2, test=test, cache=cache, **opts)
    torch.testing.assert_close(cache.sources(train, site), collect_sources(lm, train, [site])[0], atol=1e-5, rtol=0)
    calls = []
    real_rows, real_prefix = paircache.collect_rows, PrefixCache.collect.__func__
    monkeypatch.setattr(paircache, "collect_rows", lambda *a, **k: calls.append("rows") or real_rows(*a, **k))
    monkeypatch.setattr(PrefixCache, "collect", classmethod(lambda c, *a, **k: calls.append("prefix") or
                                                           real_prefix(c, *a, **k)))  # fmt: skip
    second = fit_das(lm, train, at=site, rank=2, test=test, cache=cache, **opts)
    assert calls == []  # sources, streams (train, held-out, test): all from the cache
    assert torch.equal(plain.rotation, first.rotation) and torch.equal(first.rotation, second.rotation)
    assert plain.iia_test == second.iia_test and plain.iia_train == second.iia_train
    fit_das(lm, train, at=Site("resid_post", 1, at(0)), rank=1, cache=cache, **opts)  # same layer, new position
    assert calls == ["rows"]  # its sources are new; the stream entering layer 1 is not
    assert repr(cache).startswith("PairCache(2 sites, 1 layer,")
    with pytest.raises(DASError, match="one cache per model"):
        fit_das(tiny_lm("gpt2"), train, at=site, rank=1, cache=cache, **opts)


def test_score_train_off_and_sweep_keeps_its_fits():
    lm, u, pairs = planted()
    train, test = pairs.split(0.7, seed=0)
    das = fit_das(lm, train, at=Site("resid_post", 0, last()), rank=1, score_train=False, **FAST | {"steps": 3})
    assert (
        das.iia_train is None
        and das.iia_test is None
        and DASConfig(score_train=False).to_dict()["score_train"] is False
    )
    opts = {k: v for k, v in FAST.items() if k != "progress"} | {"steps": 5}
    sw = sweep_das(lm, train, test, layers=[0, 1], positions={"last": last()}, ranks=[1, 2], progress=False, **opts)
    assert isinstance(sw, SweepResult) and sorted(sw.results) == [(l, "last", r) for l in (0, 1) for r in (1, 2)]
    res = sw.results[(1, "last", 2)]
    assert res.rotation.shape == (2, 32) and res.site == Site("resid_post", 1, last())
    assert res.iia(test) == float(sw.iia[1, 1, 0])  # the kept basis is the one that was scored
    quick = sweep_das(lm, train, test, layers=[0], positions=[last()], progress=False, score_train=False, **opts)
    assert torch.isnan(quick.iia_train).all() and not torch.isnan(quick.iia).any()


class Annealed(LowRankRotation):
    """A basis with a temperature (recorded as it is set) and a constant penalty: what fit_das must use."""

    def __init__(self, d: int, rank: int):
        super().__init__(d, rank)
        self.temps: list[float] = []

    @property
    def temperature(self) -> float:
        return self.temps[-1] if self.temps else 1.0

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.temps.append(value)

    def penalty(self) -> torch.Tensor:
        return torch.tensor(100.0)


def test_any_basis_with_a_temperature_is_annealed_and_its_penalty_added():
    lm, u, pairs = planted()
    site, opts = Site("resid_post", 0, last()), FAST | {"steps": 5, "eval_every": 0, "temperature": (8.0, 0.5)}
    torch.manual_seed(0)
    a = Annealed(32, 1)
    fa = fit_das(lm, pairs, at=site, via=a, penalty_weight=0.5, **opts)
    torch.manual_seed(0)
    b = Annealed(32, 1)
    fb = fit_das(lm, pairs, at=site, via=b, penalty_weight=0.0, **opts)
    assert a.temps[0] == 8.0 and a.temps[-1] == pytest.approx(0.5) and len(a.temps) == 5
    assert all(x > y for x, y in zip(a.temps, a.temps[1:]))  # geometric, as Boundless's
    for x, y in zip(fa.history, fb.history):  # a constant penalty moves no parameter: only the loss differs
        assert x["loss"] - y["loss"] == pytest.approx(50.0, abs=1e-4)
    torch.testing.assert_close(fa.rotation, fb.rotation, atol=0, rtol=0)


def test_only_parameters_that_require_grad_train():
    lm, u, pairs = planted()
    site, opts = Site("resid_post", 0, last()), FAST | {"steps": 5}
    with pytest.raises(DASError, match="LowRankRotation has no trainable parameters"):
        fit_das(lm, pairs, at=site, via=LowRankRotation(32, 1).requires_grad_(False), **opts)
    with pytest.raises(DASError, match="Fixed has no trainable parameters .* score it with"):
        fit_das(lm, pairs, at=site, via=Fixed(u), **opts)
    B = Boundless(32, init_fraction=0.25)
    for name, p in B.named_parameters():
        p.requires_grad_(name == "boundary")  # the rotation frozen: only the mask's boundary learns
    before = B.weight.detach().clone()
    boundary = float(B.boundary.detach())
    fit_das(lm, pairs, at=site, via=B, **opts)
    assert torch.equal(B.weight.detach(), before) and float(B.boundary.detach()) != boundary


class Doubling(LowRankRotation):
    """Not a linear edit: its interchange is its own (here: twice the source)."""

    linear = False

    def interchange(self, h, source):
        return 2 * source


def test_alignment_defers_to_a_nonlinear_featurizer():
    h, s = torch.randn(2, 3, 1, 8).unbind(0)
    torch.testing.assert_close(Alignment(Doubling(8, 2))(h, s), 2 * s, atol=0, rtol=0)
    with pytest.raises(DASError, match="not a linear edit .* aligns one variable; got splits=\\(1, 1\\)"):
        Alignment(Doubling(8, 2), (1, 1))
