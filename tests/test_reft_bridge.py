"""ReFT <-> DII/DAS bridge: a ReFT's R as an interp basis, a DAS basis as a ReFT's R, principal angles."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_lm

import interp
import reft
from interp import Site, last
from reft import as_basis, init_basis, principal_angles


def _projector(R):
    R = R.detach().double()
    return R.T @ torch.linalg.pinv(R @ R.T) @ R  # onto the row space, for any full-rank R


@pytest.mark.parametrize("kind", ["loreft", "noreft", "direft", "consreft"])
def test_as_basis_spans_the_rows_the_edit_writes_along(kind):
    torch.manual_seed(0)
    iv = reft.make(kind, 24, 3)
    B = as_basis(iv)
    torch.testing.assert_close(B.weight @ B.weight.T, torch.eye(3), atol=1e-5, rtol=0)
    P = _projector(B.weight)
    torch.testing.assert_close(P, _projector(iv.basis_weight()), atol=1e-6, rtol=0)
    h = torch.randn(5, 24)
    with torch.no_grad():
        delta = (iv(h) - h).double()
    torch.testing.assert_close(delta @ P, delta, atol=1e-5, rtol=0)  # the edit lies in the basis' row space
    assert not any(p.requires_grad for p in B.parameters())


def test_loreft_with_source_coordinates_as_target_is_the_interchange():
    """h + R^T (b - R h) with b = R s (ConsReFT, W = 0) equals DII along as_basis(iv) with source s."""
    torch.manual_seed(1)
    iv = reft.ConsReFT(16, 4)
    h, s = torch.randn(6, 16), torch.randn(16)
    with torch.no_grad():
        iv.b.copy_(iv.basis_weight() @ s)
        torch.testing.assert_close(iv(h), as_basis(iv).interchange(h, s.expand(6, 16)), atol=1e-5, rtol=0)


def test_init_basis_round_trips_a_das_subspace():
    torch.manual_seed(2)
    R = torch.linalg.qr(torch.randn(32, 4)).Q.T  # (4, 32)
    das_like = interp.LowRankRotation(32, 4, init=R)
    iv = init_basis(reft.LoReFT(32, 4), das_like)
    assert principal_angles(iv.R.weight, R).max() < 0.1
    assert principal_angles(as_basis(iv), das_like).max() < 0.1


def test_principal_angles_known_cases():
    e = torch.eye(6)
    torch.testing.assert_close(principal_angles(e[:2], e[1:3]), torch.tensor([0.0, 90.0]), atol=1e-3, rtol=0)
    Q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0))).Q
    mixed = torch.randn(3, 3) @ Q[:3]  # another basis of the same row space
    assert principal_angles(Q[:3], mixed).max() < 1e-2
    assert principal_angles(Q[:3], Q[3:]).min() > 89.99
    g = torch.Generator().manual_seed(3)
    rand = principal_angles(torch.randn(4, 640, generator=g), torch.randn(4, 640, generator=g))
    assert rand.min() > 60  # random small subspaces of a wide space are nearly orthogonal


def test_interchange_accepts_a_trained_reft_subspace_on_a_model():
    """interp.interchange along as_basis(iv) changes h only inside R's row space and moves the logits."""
    lm = tiny_lm("llama")
    site = Site("resid_post", 0, last())
    iv = reft.LoReFT(lm.d_model, 4)
    base = torch.randint(3, 90, (3, 5), generator=torch.Generator().manual_seed(0))
    source = torch.randint(3, 90, (3, 5), generator=torch.Generator().manual_seed(1))
    B = as_basis(iv)
    out = interp.interchange(lm, base, source, at=site, via=B)
    plain = interp.interchange(lm, base, base, at=site, via=B)  # same source: a no-op
    ref = lm.hf(input_ids=base).logits[:, -1]
    torch.testing.assert_close(plain.logits, ref, atol=1e-5, rtol=1e-5)
    assert (out.logits - ref).abs().max() > 1e-4
