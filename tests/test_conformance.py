"""The conformance table: every architecture x component x intervention x backend x padding, one check.

Each case runs a 3-row batch of different prompt lengths through the engine with one intervention and checks:
- the backend's logits equal the reference path (hooks, nothing skipped, logits at every position);
- the edit moves the logits (so the check would catch an edit that is never applied);
- the batch equals its rows run one by one, unpadded.
Tolerances: 1e-5 absolute on logits of order 1; every edit here moves them by more than 1e-3.

The sites inside attention and MLPs are in the table too (q at query head 1, k at key/value head 0, v as the whole
projection, mlp_hidden). ``attn_pattern`` (head 1) takes only interchange and zero: its vectors are probabilities
over the batch's key columns, so a steering vector or a LoReFT of a fixed width has no meaning there (the width
is the prompt length).
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from conftest import ARCHS, tiny_lm

import interp
import reft
from interp import Site, Steer, Zero, first, last
from interp.engine import options
from interp.sites import COMPONENTS, INNER_COMPONENTS, resolve

INTERVENTIONS = ("interchange", "zero", "steer", "loreft")
BACKENDS = ("nnsight", "hooks")
PADDING = ("left", "right")
ONLY = {"attn_pattern": ("interchange", "zero")}  # probabilities over T keys: no fixed-width edits
CASES = [
    case
    for case in itertools.product(ARCHS, COMPONENTS + INNER_COMPONENTS, INTERVENTIONS, BACKENDS, PADDING)
    if case[2] in ONLY.get(case[1], INTERVENTIONS)
]
LENGTHS = (5, 3, 4)
POS = first(1) + last(2)  # 3 positions on every row here: the sum rule with no truncation


@functools.cache
def model(arch, sharp=False):
    """The tiny model; ``sharp``: with q and k scaled up (attention scores x 25), for the q, k and pattern cases.

    The random init (weights of std 0.02) gives attention scores near 0, so attention is near uniform and an edit
    of q, k or the pattern moves the logits by under 1e-3; sharper attention makes the check that an edit lands
    meaningful. The columns scaled are the ones the q and k sites resolve to, so fused projections are covered.
    """
    lm = tiny_lm(arch)
    if sharp:
        with torch.no_grad():
            for layer in range(lm.n_layers):
                for c in ("q", "k"):
                    t = resolve(lm, Site(c, layer))
                    proj = lm.hf.get_submodule(t.path)
                    cols = torch.cat([torch.arange(a, b) for a, b in t.cols]) if t.cols else slice(None)
                    w = proj.weight if isinstance(proj, torch.nn.Linear) else proj.weight.T  # (out, in)
                    w[cols] *= 5.0
                    if proj.bias is not None:
                        proj.bias[cols] *= 5.0
    return lm


SHARP = {"q", "k", "attn_pattern"}


def _rows(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 97, (n,), generator=g).tolist() for n in LENGTHS]


def _pad(rows, side):
    T = max(map(len, rows))
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, r in enumerate(rows):
        s = T - len(r) if side == "left" else 0
        ids[b, s : s + len(r)], mask[b, s : s + len(r)] = torch.tensor(r), 1
    return {"input_ids": ids, "attention_mask": mask}


@functools.cache
def _loreft(arch, component):
    lm = model(arch, component in SHARP)
    site = _site(component, POS)
    iv = reft.LoReFT(resolve(lm, site).width, rank=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move W, b away from their init so that the edit is visible
        iv.W.weight.add_(torch.randn(iv.W.weight.shape, generator=g))
        iv.W.bias.add_(torch.randn(iv.W.bias.shape, generator=g))
    return reft.attach(lm, {site: iv})


HEAD = {"head": 1, "q": 1, "k": 0, "attn_pattern": 1}  # v: the whole projection


def _site(component, pos):
    return Site(component, 1, pos, head=HEAD.get(component))


def _run(arch, component, kind, base, source, *, backend, full=False):
    with options(backend=backend, full=full):
        return _edited(arch, component, kind, base, source)


def _edited(arch, component, kind, base, source):
    lm = model(arch, component in SHARP)
    site = _site(component, POS)
    width = resolve(lm, site).width
    if kind == "interchange":
        return interp.interchange(lm, base, source, at=site).logits
    if kind == "zero":
        return interp.intervene(lm, base, at=site, via=Zero()).logits
    if kind == "steer":
        vec = torch.randn(width, generator=torch.Generator().manual_seed(2))
        return interp.intervene(lm, base, at=site, via=Steer(vec, scale=3.0)).logits
    return interp.run(_loreft(arch, component), base).logits


@pytest.mark.parametrize(("arch", "component", "kind", "backend", "side"), CASES)
def test_conformance(arch, component, kind, backend, side):
    base_rows, src_rows = _rows(0), _rows(1)
    base, source = _pad(base_rows, side), _pad(src_rows, side)
    got = _run(arch, component, kind, base, source, backend=backend)
    ref = _run(arch, component, kind, base, source, backend="hooks", full=True)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    with options(backend=backend):
        plain = interp.run(model(arch, component in SHARP), base).logits
    assert (got - plain).abs().max() > 1e-3, "the edit did not change the logits"
    for b, (row, src) in enumerate(zip(base_rows, src_rows)):
        alone = _run(arch, component, kind, torch.tensor([row]), torch.tensor([src]), backend=backend)
        torch.testing.assert_close(got[b : b + 1], alone, atol=1e-5, rtol=1e-5)


def test_the_table_covers_every_combination():
    per = len(ARCHS) * len(BACKENDS) * len(PADDING)
    kinds = sum(len(ONLY.get(c, INTERVENTIONS)) for c in COMPONENTS + INNER_COMPONENTS)
    assert len(CASES) == per * kinds == 480 + 4 * 80 + 40


def test_the_pattern_run_restores_the_attention_implementation():
    lm = model("llama")
    before = lm.hf.config._attn_implementation
    _run("llama", "attn_pattern", "zero", torch.tensor([_rows(0)[0]]), None, backend="nnsight")
    assert lm.hf.config._attn_implementation == before
