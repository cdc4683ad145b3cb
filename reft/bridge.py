"""The bridge between ReFT and DII/DAS: the same rows ``R`` read as an ``interp`` basis, and back.

Example:
    >>> das = fit_das(lm, pairs, at=Site("resid_post", 1, last()), rank=4, steps=2)
    >>> iv = init_basis(LoReFT(lm.d_model, 4), das.basis)            # a LoReFT that starts in the DAS subspace
    >>> rlm = attach(lm, {Site("resid_post", 1, last()): iv}); hist = train_reft(rlm, examples, TrainConfig(steps=2))
    >>> out = interchange(lm, base, source, at=Site("resid_post", 1, last()), via=as_basis(iv))   # DII along it
    >>> out.logits.shape
    torch.Size([4, 97])
    >>> principal_angles(iv.basis_weight(), das.rotation).shape     # degrees, smallest first: one per rank
    torch.Size([4])

A LoReFT edit ``h + R^T (W h + b - R h)`` and an interchange ``h + R^T (R s - R h)`` (DESIGN.md) share ``R``:
DAS finds a subspace that carries a causal variable, which can seed a ReFT's ``R``; a trained ReFT's ``R`` can
be probed with DII, swapping only those coordinates between two inputs, to test which variable it encodes.
"""

from __future__ import annotations

import torch

from interp.subspace import Basis, LowRankRotation

from .interventions import ReftError, ReftIntervention


def as_basis(iv: ReftIntervention) -> LowRankRotation:
    """A frozen copy of the subspace ``iv`` writes along, as a basis for :func:`interp.interchange`.

    Example:
        >>> iv = LoReFT(640, rank=4)
        >>> B = as_basis(iv)
        >>> torch.allclose(B.weight.T @ B.weight, iv.R.weight.T @ iv.R.weight, atol=1e-5)   # same projector
        True

    The rows are orthonormalised (QR), so bases that are not orthonormal (NoReFT, DiReFT's ``W2``) give the
    orthonormal basis of their row space. The copy does not follow later training of ``iv``.
    """
    if not isinstance(iv, ReftIntervention):
        raise ReftError(f"as_basis expects a ReftIntervention (LoReFT, DiReFT, ...); got {type(iv).__name__}")
    R = iv.basis_weight().detach().float().cpu()  # (rank, d)
    if torch.linalg.matrix_rank(R) < iv.rank:
        raise ReftError(f"{type(iv).__name__}'s basis has rank below {iv.rank}; it spans no {iv.rank}-dim subspace")
    basis = LowRankRotation(iv.d_model, iv.rank, init=R)
    basis.requires_grad_(False)
    return basis


def init_basis(iv: ReftIntervention, basis: Basis | torch.Tensor) -> ReftIntervention:
    """Point ``iv``'s ``R`` at the row space of ``basis`` (a DAS result's basis, or a (rank, d) tensor); returns ``iv``.

    Example:
        >>> R = torch.linalg.qr(torch.randn(640, 4)).Q.T                 # any 4-dim subspace
        >>> iv = init_basis(LoReFT(640, rank=4), R)
        >>> principal_angles(iv.R.weight, R).max() < 1e-2
        tensor(True)

    Only interventions with an orthonormal basis (LoReFT and the ablation forms built on one) qualify; the
    rank must match.
    """
    R = basis.weight if isinstance(basis, Basis) else torch.as_tensor(basis)
    R = R.detach()
    if not isinstance(getattr(iv, "R", None), LowRankRotation):
        raise ReftError(
            f"{type(iv).__name__} has no orthonormal basis to initialise; use LoReFT (or an ablation form built on "
            "a LowRankRotation)"
        )
    if R.shape != (iv.rank, iv.d_model):
        raise ReftError(
            f"the basis has shape {tuple(R.shape)} but {type(iv).__name__} needs ({iv.rank}, {iv.d_model}); "
            "fit DAS with the same rank as the intervention"
        )
    dtype = iv.R.weight.dtype
    iv.R.set_weight(R.to(device=iv.R.weight.device, dtype=dtype))
    return iv


def principal_angles(A: torch.Tensor | Basis, B: torch.Tensor | Basis) -> torch.Tensor:
    """Principal angles in degrees (smallest first) between the row spaces of ``A`` (r1, d) and ``B`` (r2, d).

    Example:
        >>> principal_angles(torch.eye(4)[:2], torch.eye(4)[1:3])        # one shared axis, one orthogonal pair
        tensor([ 0., 90.])

    0 degrees means a shared direction, 90 an orthogonal one; ``min(r1, r2)`` angles are returned. For random
    subspaces of small rank in ``d`` dimensions the smallest angle is close to 90 (e.g. about 80 for rank 4
    against rank 4 in d = 640), so angles well below that mean the two subspaces share directions.
    """
    a = (A.weight if isinstance(A, Basis) else A).detach().double().cpu()
    b = (B.weight if isinstance(B, Basis) else B).detach().double().cpu()
    if a.shape[-1] != b.shape[-1]:
        raise ReftError(f"subspaces live in different widths: {a.shape[-1]} and {b.shape[-1]}")
    qa = torch.linalg.qr(a.T).Q  # (d, r1) orthonormal columns
    qb = torch.linalg.qr(b.T).Q  # (d, r2)
    s = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)  # cosines, largest first
    return torch.rad2deg(torch.arccos(s)).float()


__all__ = ["as_basis", "init_basis", "principal_angles"]
