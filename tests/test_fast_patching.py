"""The cached patching grid (interp.fastpatch) equals the full one: every architecture x padding x component x via.

Each case patches a 4-row batch of different prompt lengths at both layers and four positions (the first token,
an inner one, the last, and one counted from the end), so cells start their window at different columns per row.
Tolerance: 1e-4 on effects (normalised logit differences of order 1).
"""

from __future__ import annotations

import functools
import itertools
import warnings

import pytest
import torch
from conftest import ARCHS, tiny_lm

from interp import LowRankRotation, Zero, at, fastpatch, last
from interp.causal import Pairs
from interp.inputs import encode
from interp.patching import patch_grid

COMPONENTS = ("resid_pre", "resid_mid", "attn_out", "mlp_out", "resid_post")
CASES = list(itertools.product(ARCHS, ("left", "right"), COMPONENTS, ("whole", "basis")))
POSITIONS = {"first": at(0), "inner": at(2), "second_last": at(-2), "last": last()}
LENGTHS = (6, 4, 5, 6)


@functools.cache
def model(arch):
    return tiny_lm(arch)


def _pairs(lm, side):
    g = torch.Generator().manual_seed(1)
    base = [torch.randint(3, 97, (n,), generator=g).tolist() for n in LENGTHS]
    source = [torch.randint(3, 97, (n,), generator=g).tolist() for n in LENGTHS]
    b, s = encode(lm, base, padding_side=side), encode(lm, source, padding_side=side)
    return Pairs.of(b, s, base_answer=[5] * len(LENGTHS), source_answer=[6] * len(LENGTHS))


@pytest.mark.parametrize("arch,side,component,via", CASES)
def test_cached_grid_equals_full(arch, side, component, via):
    lm = model(arch)
    pairs = _pairs(lm, side)
    basis = LowRankRotation(lm.d_model, 16) if via == "basis" else None
    kw = dict(positions=POSITIONS, component=component, via=basis, progress=False)
    full = patch_grid(lm, pairs, method="full", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the cached path must not have fallen back
        cached = patch_grid(lm, pairs, **kw)
    assert cached.meta["method"] == "cached" and full.meta["method"] == "full"
    assert full.effect.abs().max() > 1e-2  # the grid measures something
    torch.testing.assert_close(cached.effect, full.effect, atol=1e-4, rtol=0)


def test_per_site_bases_and_layer_subset():
    lm = model("llama")
    pairs = _pairs(lm, "left")
    via = {(layer, name): LowRankRotation(lm.d_model, 2) for layer in (1,) for name in POSITIONS}
    kw = dict(layers=[1], positions=POSITIONS, via=via, progress=False)
    torch.testing.assert_close(patch_grid(lm, pairs, **kw).effect, patch_grid(lm, pairs, method="full", **kw).effect)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("component", ("q", "k", "v", "mlp_hidden"))
def test_inner_components(arch, component):
    lm = model(arch)
    kw = dict(positions=POSITIONS, component=component, progress=False)
    pairs = _pairs(lm, "left")
    cached = patch_grid(lm, pairs, **kw)
    assert cached.meta["method"] == "cached"
    torch.testing.assert_close(cached.effect, patch_grid(lm, pairs, method="full", **kw).effect, atol=1e-4, rtol=0)


def test_what_falls_back():
    lm = model("gpt2")
    assert fastpatch.supported(lm, "resid_post") is None
    assert "key columns" in fastpatch.supported(lm, "attn_pattern")
    assert "key columns" in fastpatch.supported(lm, "module")


def test_model_left_unchanged():
    lm = model("gemma3")
    layers = [type(m) for m in lm.hf.model.layers]
    hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.hf.modules()]
    patch_grid(lm, _pairs(lm, "right"), positions=POSITIONS, progress=False)
    assert [type(m) for m in lm.hf.model.layers] == layers
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in lm.hf.modules()] == hooks


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("component", ("resid_post", "attn_out"))
def test_cells_whose_source_equals_the_base(arch, component):
    """Base and source share their first two tokens: patching there is the clean run (effect exactly 0, no forward),
    and the other cells still equal the full path; a Zero ablation there is no interchange and still runs."""
    lm = model(arch)
    g = torch.Generator().manual_seed(2)
    base = [torch.randint(3, 97, (5,), generator=g).tolist() for _ in range(4)]
    source = [b[:2] + torch.randint(3, 97, (3,), generator=g).tolist() for b in base]
    pairs = Pairs.of(encode(lm, base), encode(lm, source), base_answer=[5] * 4, source_answer=[6] * 4)
    kw = dict(positions=POSITIONS, component=component, progress=False)
    cached, full = patch_grid(lm, pairs, **kw), patch_grid(lm, pairs, method="full", **kw)
    assert cached.meta["method"] == "cached"
    assert cached.effect[:, 0].abs().max() == 0 and cached.effect[:, 2:].abs().max() > 1e-2
    torch.testing.assert_close(cached.effect, full.effect, atol=1e-4, rtol=0)
    zero = dict(kw, via=Zero())
    ablated = patch_grid(lm, pairs, method="full", **zero).effect
    assert ablated[:, 0].abs().max() > 2e-4  # zeroing the first token does something, which a skip would miss
    torch.testing.assert_close(patch_grid(lm, pairs, **zero).effect, ablated, atol=2e-5, rtol=0)


def test_groups_share_forwards_only_where_it_pays():
    starts = [0, 14, 13, 1, 7]
    groups = fastpatch.plan_groups(starts, rows=16, tokens=15)
    assert sorted(i for g in groups for i in g) == list(range(len(starts)))  # every cell once
    assert fastpatch.plan_groups(starts, rows=16, tokens=15, overhead=0) == [[0], [3], [4], [2], [1]]
    assert fastpatch.plan_groups(starts, rows=16, tokens=15, overhead=10**9, cap=32) == [[0, 3], [4], [2, 1]]
    assert fastpatch.plan_groups(starts, rows=16, tokens=15, overhead=10**9) == [[0, 3, 4, 2, 1]]


def test_bad_method():
    lm = model("gpt2")
    with pytest.raises(ValueError, match="method must be one of"):
        patch_grid(lm, _pairs(lm, "left"), method="fast", progress=False)
