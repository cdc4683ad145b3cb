"""Properties of the subspace edit h + R^T(target - R h) and its bases."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp import BasisError, Boundless, Coordinate, LowRankRotation, Rotation
from interp.subspace import edit

dims = st.integers(2, 24)


@settings(max_examples=25, deadline=None)
@given(d=dims, data=st.data())
def test_interchange_is_confined_idempotent_and_noop_for_same_source(d, data):
    r = data.draw(st.integers(1, d))
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    R = LowRankRotation(d, r)
    h, s = torch.randn(3, d), torch.randn(3, d)
    with torch.no_grad():
        h2 = R.interchange(h, s)
        W = R.weight
        outside = (h2 - h) - (h2 - h) @ W.T @ W  # (I - R^T R)(h' - h)
        torch.testing.assert_close(outside, torch.zeros_like(h), atol=1e-5, rtol=0)
        torch.testing.assert_close(h2 @ W.T, s @ W.T, atol=1e-5, rtol=1e-5)  # R h' = R s
        torch.testing.assert_close(R.interchange(h2, s), h2, atol=1e-5, rtol=1e-5)  # idempotent
        torch.testing.assert_close(R.interchange(h, h), h, atol=1e-5, rtol=1e-5)  # same source: no-op


@settings(max_examples=10, deadline=None)
@given(d=dims)
def test_full_rank_interchange_is_patching(d):
    R = Rotation(d)
    h, s = torch.randn(4, d), torch.randn(4, d)
    with torch.no_grad():
        torch.testing.assert_close(R.interchange(h, s), s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [lambda: LowRankRotation(16, 3), lambda: Rotation(8), lambda: Boundless(8)])
def test_rotations_stay_orthonormal_after_optimiser_steps(make):
    torch.manual_seed(0)
    basis = make()
    opt = torch.optim.AdamW(basis.parameters(), lr=0.05, weight_decay=0.0)
    h, s = torch.randn(32, basis.d_model), torch.randn(32, basis.d_model)
    target = torch.randn(32, basis.d_model)
    start = basis.weight.detach().clone()
    for _ in range(50):
        loss = (basis.interchange(h, s) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    W = basis.weight.detach()
    torch.testing.assert_close(W @ W.T, torch.eye(basis.rank), atol=1e-4, rtol=0)
    assert (W - start).abs().max() > 1e-3  # it did move


def test_coordinate_basis_swaps_exactly_those_dims():
    c = Coordinate(6, dims=[1, 4])
    h, s = torch.zeros(1, 6), torch.arange(6.0)[None]
    assert c.interchange(h, s).tolist() == [[0, 1, 0, 0, 4, 0]]


def test_init_from_a_known_subspace():
    torch.manual_seed(0)
    A = torch.randn(2, 10)
    R = LowRankRotation(10, 2, init=A)
    P = lambda M: M.T @ torch.linalg.pinv(M.T)  # noqa: E731 projector onto the row space
    torch.testing.assert_close(P(R.weight.detach()), P(A), atol=1e-5, rtol=0)


def test_boundless_mask_and_rank():
    # boundary 0.32 * 10 = 3.2 rows: no row sits on the boundary itself (0.3 * 10 lands exactly on sigmoid(0),
    # where float32 rounding decides); rows 0..3 lie below it, 4..9 above, each by 0.2 or more / 0.01 = 20
    B = Boundless(10, init_fraction=0.32, temperature=0.01)
    assert B.effective_rank() == 3
    m = B.mask()
    assert (m[:4] > 0.999).all() and (m[4:] < 0.001).all(), m


def test_mask_scales_the_edit():
    h, R, t = torch.zeros(1, 3), torch.eye(3), torch.ones(1, 3)
    assert edit(h, R, t, torch.tensor([1.0, 0.5, 0.0])).tolist() == [[1.0, 0.5, 0.0]]


def test_numpy_integers_are_integers_everywhere():
    """np.int64 works as a rank, a dim, a layer, a step count; bad values are rows of tests/bad_inputs_numbers.py."""
    import numpy as np

    import reft
    from interp import Site
    from interp.das import DASConfig

    R = LowRankRotation(np.int64(8), np.int64(3))
    assert (R.d_model, R.rank) == (8, 3) and type(R.rank) is int
    assert Coordinate(6, np.array([1, 4])).weight.argmax(-1).tolist() == [1, 4]
    assert Coordinate(6, torch.tensor([1, 4])).rank == 2
    assert reft.LoReFT(np.int64(32), np.int32(4)).rank == 4
    cfg = DASConfig(steps=np.int64(5), lr=np.float32(1e-3), temperature=(np.float64(50), 1))
    assert cfg.steps == 5 and type(cfg.steps) is int and cfg.temperature == (50.0, 1.0)
    assert Site("resid_post", np.int64(1)) == Site("resid_post", 1)
    assert repr(Site("head", np.int16(1), head=np.int64(2))) == "Site('head', 1, last(), head=2)"


def test_boundless_temperature_is_checked_whenever_it_is_set():
    B = Boundless(8, temperature=50)
    B.temperature = 0.1  # fit_das anneals it every step
    assert B.temperature == 0.1 and torch.isfinite(B.mask()).all()
    with pytest.raises(BasisError):
        B.temperature = 0.0
    assert B.temperature == 0.1


def test_an_init_of_independent_rows_is_accepted_however_scaled():
    A = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    for scale in (1e-3, 1.0, 1e3):
        R = LowRankRotation(16, 3, init=A * scale)
        torch.testing.assert_close(R.weight @ R.weight.T, torch.eye(3), atol=1e-5, rtol=0)
