"""AtP* (interp.atp_star) against exact patching, on tiny random models of every architecture.

- Where only one attention score per query row moves (a key patched in the last layer) and the metric is linear
  in the attention output (no MLP after it, identity norms), AtP* equals exact patching; AtP does not.
- On two-layer models every residual-stream cell is exact: the patched column and the read column run exactly,
  and no layer lies between them.
- GradDrop: a magnitude per cell, |effect| where no layer above the cell can be dropped.
"""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, _tiny

import interp
from interp import at, attribution_patch, last
from interp.causal import Pairs
from interp.patching import patch_grid
from interp.sites import Site, architecture, resolve
from interp.tasks import IOI_POSITIONS, ioi_pairs

POSITIONS = {f"p{i}": at(i) for i in range(5)} | {"last": last()}


def _pairs() -> Pairs:
    ids = lambda seed: torch.randint(3, 97, (4, 7), generator=torch.Generator().manual_seed(seed))  # noqa: E731
    return Pairs.of(ids(1), ids(2), base_answer=[5] * 4, source_answer=[6] * 4)


def _one_score_lm(arch: str) -> interp.LM:
    """The tiny model with its last layer's MLP writing zero, identity norms after attention and at the end, and
    sharp keys: the logits are linear in the last layer's attention output, whose softmax saturates."""
    hf = _tiny(arch).eval()
    lm = interp.LM(hf)
    L, a = lm.n_layers - 1, architecture(lm)
    with torch.no_grad():
        down = hf.get_submodule(resolve(lm, Site("mlp_hidden", L)).path)
        down.weight.zero_()
        if getattr(down, "bias", None) is not None:
            down.bias.zero_()
        attn = hf.get_submodule(f"{a.layers}.{L}.{a.attn}")
        if hasattr(attn, "k_norm"):
            attn.k_norm.weight.fill_(7.0)
        else:
            k = resolve(lm, Site("k", L))
            proj = hf.get_submodule(k.path)
            cols = [slice(x, y) for x, y in k.cols] if k.cols else [slice(None)]
            for c in cols:  # GPT-2's Conv1D keeps (in, out); a Linear (out, in)
                w = proj.weight[:, c] if type(proj).__name__ == "Conv1D" else proj.weight[c]
                w.mul_(8.0)
    layer = hf.get_submodule(f"{a.layers}.{L}")
    for name in ("post_attention_layernorm",):
        if arch == "gemma3" and hasattr(layer, name):
            setattr(layer, name, torch.nn.Identity())
    parent, _, name = a.final_norm.rpartition(".")
    setattr(hf.get_submodule(parent), name, torch.nn.Identity())
    hf.config.final_logit_softcapping = None
    return interp.LM(hf)


@pytest.mark.parametrize("arch", ARCHS)
def test_atp_star_is_exact_where_one_attention_score_moves(arch):
    lm, pp = _one_score_lm(arch), _pairs()
    kw = dict(layers=[lm.n_layers - 1], positions=POSITIONS, component="k")
    exact = patch_grid(lm, pp, progress=False, **kw).effect
    star = attribution_patch(lm, pp, method="atp*", **kw)
    atp = attribution_patch(lm, pp, **kw).effect
    assert star.method == "atp*"
    assert torch.allclose(star.effect, exact, atol=2e-4), (star.effect - exact).abs().max()
    assert (atp - exact).abs().max() > 20 * (star.effect - exact).abs().max()  # AtP's linearised softmax misses


@pytest.mark.parametrize("arch", ARCHS)
def test_atp_star_is_exact_on_two_layers_in_the_residual_stream(arch):
    lm, pp = interp.LM(_tiny(arch).eval()), _pairs()
    exact = patch_grid(lm, pp, positions=POSITIONS, progress=False).effect
    star = attribution_patch(lm, pp, positions=POSITIONS, method="atp*").effect
    atp = attribution_patch(lm, pp, positions=POSITIONS).effect
    assert torch.allclose(star, exact, atol=2e-4), (star - exact).abs().max()
    assert (atp - exact).abs().max() > 1e-2


def test_graddrop_ranks_by_magnitude():
    lm, pp = interp.LM(_tiny("llama").eval()), _pairs()
    g = attribution_patch(lm, pp, positions=POSITIONS, component="resid_pre", method="atp*", grad_drop=True)
    assert g.graddrop.shape == g.effect.shape and (g.graddrop >= 0).all() and g.grad_drop
    plain = attribution_patch(lm, pp, positions=POSITIONS, component="resid_pre", method="atp*")
    assert torch.equal(plain.effect, g.effect)  # GradDrop never changes the signed estimate
    assert not torch.allclose(g.graddrop[0], g.effect[0].abs())  # dropping layer 1 changes layer 0's estimate
    last_layer = attribution_patch(lm, pp, layers=[1], positions=POSITIONS, method="atp*", grad_drop=True)
    assert torch.allclose(last_layer.graddrop, last_layer.effect.abs())  # nothing above it to drop: |effect|


@pytest.mark.slow
def test_atp_star_recovers_the_name_swaps_atp_misses_on_ioi(gemma):
    """On IOI (Gemma-3-270M), patching S2's early residual stream flips the answer; AtP gives the wrong sign there
    (the softmax of the duplicate-name heads saturates), AtP* the right one and most of the size."""
    pairs = ioi_pairs(8)
    positions = {k: IOI_POSITIONS[k] for k in ("IO", "S2", "end")}
    kw = dict(layers=[2, 14], positions=positions)
    exact = patch_grid(gemma, pairs, progress=False, **kw).effect
    star = attribution_patch(gemma, pairs, method="atp*", **kw).effect
    atp = attribution_patch(gemma, pairs, **kw).effect
    s2 = list(positions).index("S2")
    assert exact[0, s2] > 0.8 and atp[0, s2] < 0 < 0.7 < star[0, s2]
    r = lambda a: torch.corrcoef(torch.stack([a.flatten(), exact.flatten()]))[0, 1].item()  # noqa: E731
    assert r(star) > 0.9 > r(atp) + 0.3, (r(star), r(atp))
