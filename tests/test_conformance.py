"""The conformance table: every architecture x component x intervention x backend x padding, one check.

Each case runs a 3-row batch of different prompt lengths through the engine with one intervention and checks:
- the backend's logits equal the reference path (hooks, nothing skipped, logits at every position);
- the edit moves the logits (so the check would catch an edit that is never applied);
- the batch equals its rows run one by one, unpadded.
Tolerances: 1e-5 absolute on logits of order 1; every edit here moves them by more than 1e-3.
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
from interp.sites import COMPONENTS, resolve

INTERVENTIONS = ("interchange", "zero", "steer", "loreft")
BACKENDS = ("nnsight", "hooks")
PADDING = ("left", "right")
CASES = list(itertools.product(ARCHS, COMPONENTS, INTERVENTIONS, BACKENDS, PADDING))
LENGTHS = (5, 3, 4)
POS = first(1) + last(2)  # 3 positions on every row here: the sum rule with no truncation


@functools.cache
def model(arch):
    return tiny_lm(arch)


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
    lm = model(arch)
    site = _site(component, POS)
    iv = reft.LoReFT(resolve(lm, site).width, rank=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move W, b away from their init so that the edit is visible
        iv.W.weight.add_(torch.randn(iv.W.weight.shape, generator=g))
        iv.W.bias.add_(torch.randn(iv.W.bias.shape, generator=g))
    return reft.attach(lm, {site: iv})


def _site(component, pos):
    return Site(component, 1, pos, head=1 if component == "head" else None)


def _run(arch, component, kind, base, source, **kw):
    lm = model(arch)
    site = _site(component, POS)
    width = resolve(lm, site).width
    if kind == "interchange":
        return interp.interchange(lm, base, source, at=site, **kw).logits
    if kind == "zero":
        return interp.intervene(lm, base, at=site, via=Zero(), **kw).logits
    if kind == "steer":
        vec = torch.randn(width, generator=torch.Generator().manual_seed(2))
        return interp.intervene(lm, base, at=site, via=Steer(vec, scale=3.0), **kw).logits
    return interp.run(_loreft(arch, component), base, **kw).logits


@pytest.mark.parametrize(("arch", "component", "kind", "backend", "side"), CASES)
def test_conformance(arch, component, kind, backend, side):
    base_rows, src_rows = _rows(0), _rows(1)
    base, source = _pad(base_rows, side), _pad(src_rows, side)
    got = _run(arch, component, kind, base, source, backend=backend)
    ref = _run(arch, component, kind, base, source, backend="hooks", full=True)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    plain = interp.run(model(arch), base, backend=backend).logits
    assert (got - plain).abs().max() > 1e-3, "the edit did not change the logits"
    for b, (row, src) in enumerate(zip(base_rows, src_rows)):
        alone = _run(arch, component, kind, torch.tensor([row]), torch.tensor([src]), backend=backend)
        torch.testing.assert_close(got[b : b + 1], alone, atol=1e-5, rtol=1e-5)


def test_the_table_covers_every_combination():
    assert len(CASES) == len(ARCHS) * len(COMPONENTS) * len(INTERVENTIONS) * len(BACKENDS) * len(PADDING) == 480
