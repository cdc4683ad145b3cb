"""Attribution patching (AtP) against exact activation patching, on tiny random models of every architecture.

- Where the metric is linear in the patched activation, AtP equals exact patching (and patch_grid itself).
- Elsewhere the two differ by a second-order term: moving the source towards the base by ``t`` shrinks
  ``exact - AtP`` like ``t**2``.
- Heads: the per-head first-order terms add up to the attention output's, and match exact head patching as the
  patch shrinks. Both backends give the same numbers.
- On IOI with the real model (slow): AtP agrees with exact patching on attention outputs and at the read-out
  site, and fails where a patch swaps a name in the early residual stream.
"""

from __future__ import annotations

import functools

import matplotlib
import pytest
import torch
from conftest import ARCHS, _tiny, tiny_lm

import interp
from interp import InputError, Site, SiteError, at, attribution_patch, collect, intervene, last
from interp.attribution import compare_with_patching, report
from interp.causal import Pairs
from interp.engine import options
from interp.patching import patch_grid
from interp.sites import architecture

matplotlib.use("Agg")

POSITIONS = {"first": at(0), "mid": at(3), "last": last()}


def _ids(seed: int, n: int = 4, T: int = 6) -> torch.Tensor:
    return torch.randint(3, 97, (n, T), generator=torch.Generator().manual_seed(seed))


def _pairs() -> Pairs:
    return Pairs.of(_ids(1), _ids(2), base_answer=[5] * 4, source_answer=[6] * 4)


@functools.cache
def _linear_head_lm(arch: str) -> interp.LM:
    """The tiny model with its final norm replaced by the identity (and no final softcapping).

    Then the logits are ``W_U h + b`` with ``h`` the last layer's output, so any metric linear in the logits (the
    logit difference, or ``logits @ w``) is linear in the last layer's ``resid_post``, and also in its ``mlp_out``
    (``resid_post = resid_mid + mlp_out``: what the MLP adds goes straight to the unembedding). For a function
    that is linear in ``a``, ``m(a_source) - m(a_base) = (a_source - a_base) . dm/da`` exactly: AtP has no
    second-order term to drop.
    """
    hf = _tiny(arch).eval()
    parent, _, name = architecture(interp.LM(hf)).final_norm.rpartition(".")
    setattr(hf.get_submodule(parent), name, torch.nn.Identity())
    hf.config.final_logit_softcapping = None
    return interp.LM(hf)


def _metric_vector(vocab: int = 97) -> torch.Tensor:
    return torch.randn(vocab, generator=torch.Generator().manual_seed(3))


def _exact(lm, base, source, *, layers, positions, component, metric, ts=(1.0,), heads=None) -> dict:
    """Reference: patch ``a_base + t (a_source - a_base)`` at each cell, one forward per cell and ``t``.

    Returns ``{t: m(patched) - m(base)}``, the raw change of the mean metric: (L, P), or (L, H, P) with ``heads``.
    """
    with options(backend="hooks"):
        return _integrated(lm, base, source, layers, positions, component, heads, metric, ts)


def _integrated(lm, base, source, layers, positions, component, heads, metric, ts):
    m_base = metric(interp.run(lm, base).logits).mean().double()
    sites = [Site(component, l, pos, head=h) for l in layers for h in heads or [None] for pos in positions.values()]
    a_b, a_s = collect(lm, base, at=sites), collect(lm, source, at=sites)
    out = {}
    for t in ts:
        cells = []
        for site, b, s in zip(sites, a_b, a_s):
            res = intervene(lm, base, at=site, sources=[b + t * (s - b)])
            cells.append(metric(res.logits).mean().double() - m_base)
        shape = (len(layers), len(heads), len(positions)) if heads else (len(layers), len(positions))
        out[t] = torch.stack(cells).reshape(shape)
    return out


def _raw(grid) -> torch.Tensor:
    """AtP's first-order change of the mean metric, ``(a_source - a_base) . g``, from its normalised grid."""
    return -grid.effect.double() * (grid.base_metric - grid.source_metric)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("component", ["resid_post", "mlp_out"])
def test_atp_equals_patching_where_the_metric_is_linear_in_the_site(arch, component):
    lm = _linear_head_lm(arch)
    pairs, last_layer = _pairs(), [lm.n_layers - 1]
    atp = attribution_patch(lm, pairs, layers=last_layer, positions=POSITIONS, component=component)
    exact = patch_grid(lm, pairs, layers=last_layer, positions=POSITIONS, component=component, progress=False)
    # The same normalisation and sign as patch_grid: the two grids are equal cell for cell.
    torch.testing.assert_close(atp.effect, exact.effect, atol=1e-4, rtol=0)
    assert atp.base_logit_diff == pytest.approx(exact.base_logit_diff, abs=1e-5)
    assert atp.source_logit_diff == pytest.approx(exact.source_logit_diff, abs=1e-5)
    assert atp.clean_accuracy == exact.clean_accuracy
    if component == "resid_post":  # the last layer at the last token is the source run itself
        assert atp.effect[0, -1].item() == pytest.approx(1.0, abs=1e-4)
    # Any metric that is linear in the logits: a random readout direction.
    w = _metric_vector()
    metric = lambda logits: logits.double() @ w.double()  # noqa: E731
    base, source = pairs.base, pairs.source
    custom = attribution_patch(
        lm, base, source, layers=last_layer, positions=POSITIONS, component=component, metric=metric
    )
    ref = _exact(lm, base, source, layers=last_layer, positions=POSITIONS, component=component, metric=metric)[1.0]
    torch.testing.assert_close(_raw(custom), ref, atol=1e-4, rtol=0)


# Queries and attention probabilities move the logits measurably only in the tiny Gemma (the others' attention is
# near uniform at these weights, so their gap at t = 1 is below the nonlinearity check).
SECOND_ORDER = [(a, c) for a in ARCHS for c in ("resid_pre", "attn_out", "mlp_out", "v", "mlp_hidden")]
SECOND_ORDER += [("gemma3", "q"), ("gemma3", "attn_pattern")]


@pytest.mark.parametrize("arch,component", SECOND_ORDER)
def test_atp_differs_from_patching_by_a_second_order_term(arch, component):
    """With sources ``a_base + t (a_source - a_base)``, AtP's estimate is ``t`` times its ``t = 1`` value, and
    ``exact(t) - t AtP`` is the dropped second-order term: it shrinks like ``t**2``.

    The model runs in float64, but the RMSNorms of Llama, Qwen2 and Gemma compute in float32, so a difference of
    two runs carries round-off of about 1e-8; every check allows 1e-7 per cell. Over the whole grid the gap drops
    100-fold from ``t = 0.1`` to ``t = 0.01``; in each cell it drops by more than the 10-fold a first-order error
    would give.
    """
    lm = interp.LM(_tiny(arch).double().eval())
    pairs = _pairs()
    kw = dict(layers=[0, 1], positions=POSITIONS, component=component)
    atp = _raw(attribution_patch(lm, pairs, **kw))
    metric = lambda logits: logits[:, 5] - logits[:, 6]  # noqa: E731  (= the default logit difference)
    exact = _exact(lm, pairs.base, pairs.source, metric=metric, ts=(1, 0.1, 0.01), **kw)
    gaps = {t: (e - t * atp).abs() for t, e in exact.items()}
    assert gaps[1].max() > 1e-4, "the model is nonlinear at these sites: AtP should not be exact at t = 1"
    noise = 1e-7 * gaps[0.1].numel() ** 0.5  # round-off over the grid
    big, small = gaps[0.1].norm().item(), gaps[0.01].norm().item()
    assert big / 10**2.2 - noise < small < big / 10**1.8 + noise, f"exact - AtP fell {big / small:.1f}-fold, not 100"
    assert (gaps[0.01] <= 0.03 * gaps[0.1] + 1e-7).all(), f"a cell whose gap is not second order: {gaps}"
    assert (gaps[0.01] <= 1e-3 * atp.abs().max() + 1e-7).all()  # at t = 0.01 AtP is all but exact


@pytest.mark.parametrize("arch", ARCHS)
def test_heads_add_up_and_match_exact_head_patching_to_first_order(arch):
    lm = interp.LM(_tiny(arch).double().eval())
    pairs = _pairs()
    heads = attribution_patch(lm, pairs, positions=POSITIONS, component="head")
    n_heads = lm.spec.n_heads
    assert heads.effect.shape == (lm.n_layers, n_heads, len(POSITIONS))
    assert heads.axes == {"layers": [0, 1], "heads": list(range(n_heads)), "positions": list(POSITIONS)}
    if arch != "gemma3":  # attn_out is the output projection's output (Gemma normalises it again: not linear)
        attn = attribution_patch(lm, pairs, positions=POSITIONS, component="attn_out")
        torch.testing.assert_close(heads.effect.sum(1), attn.effect, atol=1e-6, rtol=1e-6)
    metric = lambda logits: logits[:, 5] - logits[:, 6]  # noqa: E731
    t = 1e-3  # a central difference: (m(+t) - m(-t)) / 2t = dm/dt + O(t^2), and float32 norms' round-off / t
    kw = dict(layers=[0, 1], positions=POSITIONS, component="head", metric=metric, heads=list(range(n_heads)))
    exact = _exact(lm, pairs.base, pairs.source, ts=(t, -t), **kw)
    torch.testing.assert_close((exact[t] - exact[-t]) / (2 * t), _raw(heads), atol=2e-5, rtol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_backends_agree_and_every_component_runs(arch):
    lm = tiny_lm(arch)
    pairs = _pairs()
    for component in ("resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post", "head", "k", "attn_pattern"):
        with options(backend="nnsight"):
            a = attribution_patch(lm, pairs, positions=POSITIONS, component=component)
        with options(backend="hooks"):
            b = attribution_patch(lm, pairs, positions=POSITIONS, component=component)
        torch.testing.assert_close(a.effect, b.effect, atol=1e-5, rtol=1e-5)
        assert torch.isfinite(a.effect).all() and a.method == "atp" and a.component == component


def test_padding_and_positions_resolve_per_side():
    """Left-padded prompts of different lengths: positions resolve on base and source separately."""
    lm = tiny_lm("llama")
    g = torch.Generator().manual_seed(0)
    base = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (6, 4, 5)]
    source = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (5, 6, 4)]
    pairs = Pairs.of(base, source, base_answer=[5] * 3, source_answer=[6] * 3)
    atp = attribution_patch(lm, pairs, positions={"first": at(0), "last": last()})
    rows = [attribution_patch(lm, pairs[i : i + 1], positions={"first": at(0), "last": last()}) for i in range(3)]
    # The mean metric's first-order change is the mean of the rows' changes.
    torch.testing.assert_close(_raw(atp), sum(_raw(r) for r in rows) / 3, atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_refused_before_any_forward():
    lm, pairs = tiny_lm("llama"), _pairs()
    with pytest.raises(InputError, match="no source"):
        attribution_patch(lm, pairs.base)
    with pytest.raises(InputError, match="no metric and no answers"):
        attribution_patch(lm, pairs.base, pairs.source)
    with pytest.raises(InputError, match="at least one layer"):
        attribution_patch(lm, pairs, layers=[])
    with pytest.raises(SiteError, match="out of range"):
        attribution_patch(lm, pairs, layers=[5])
    with pytest.raises(SiteError, match="unknown component"):
        attribution_patch(lm, pairs, component="resid")
    with pytest.raises(InputError, match="4 base prompts but 3 source"):
        attribution_patch(lm, pairs.base, pairs.source[:3], metric=lambda x: x[:, 0])
    with pytest.raises(InputError, match="does not depend"):
        attribution_patch(lm, pairs.base, pairs.source, metric=lambda x: torch.ones(4))
    with pytest.raises(InputError, match="same metric value"):
        attribution_patch(lm, Pairs.of(pairs.base, pairs.base, base_answer=[5] * 4, source_answer=[6] * 4))


def test_compare_with_patching_reports_agreement():
    lm = _linear_head_lm("gpt2")
    (c,) = compare_with_patching(lm, _pairs(), components=["mlp_out"], layers=[1], positions=POSITIONS, k=2)
    assert c.pearson == pytest.approx(1.0, abs=1e-4) and c.overlap == 2  # the linear case: the same grid
    assert c.worst(1)[0]["exact"] == pytest.approx(c.worst(1)[0]["atp"], abs=1e-4)
    assert "mlp_out" in report([c])


def test_plot_atp_vs_exact():
    from interp.viz import plot_atp_vs_exact

    ax = plot_atp_vs_exact(
        {"a": torch.rand(3, 4), "b": torch.rand(3, 4)}, {"a": torch.rand(3, 4), "b": torch.rand(3, 4)}
    )
    assert ax.get_ylabel() == "AtP estimate" and len(ax.collections) == 2
    with pytest.raises(ValueError, match="same grid"):
        plot_atp_vs_exact([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same names"):
        plot_atp_vs_exact({"a": [0.1]}, {"b": [0.1]})


# ---- the real model ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ioi_atp_tracks_exact_patching_except_at_name_swaps(gemma):
    """AtP against exact patching on IOI (8 pairs, 6 layers x 3 token roles, 36 exact cells).

    The attention outputs agree (Pearson r about 0.99), as does the residual stream where the answer is read out
    (the last layer at the last token). Where a patch swaps a name in the early residual stream, AtP fails:
    at S2 it has the wrong sign (the patch changes which name is repeated, which a first-order estimate through
    the attention pattern cannot see), and at IO it misses most of the effect. ``compare_with_patching`` on the
    whole 18 x 15 grid prints the same picture (see ``experiments/atp_vs_exact.py``).
    """
    from interp.tasks import IOI_POSITIONS, ioi_pairs

    positions = {k: IOI_POSITIONS[k] for k in ("IO", "S2", "end")}
    comps = compare_with_patching(
        gemma, ioi_pairs(8), components=["attn_out", "resid_post"], layers=[0, 3, 9, 12, 15, 17], positions=positions
    )
    print("\n" + report(comps))
    attn, resid = comps
    assert attn.pearson > 0.9  # (no timing check: wall times on a shared CI machine are too noisy to assert)
    exact, atp = resid.exact.effect, resid.atp.effect  # (layers, [IO, S2, end])
    assert abs(exact[-1, 2] - atp[-1, 2]) < 0.1 and exact[-1, 2] > 0.9
    assert exact[0, 1] > 0.8 and atp[0, 1] < 0  # S2: the wrong sign
    assert exact[0, 0] > 0.8 and atp[0, 0] < 0.5 * exact[0, 0]  # IO: most of the effect missed
