"""Module weights as a save stores them: each orthogonal basis as its rank x d rows only, restored bit for bit.

Example:
    >>> {k: tuple(v.shape) for k, v in compact_state(LowRankRotation(640, rank=1)).items()}
    {'proj.weight': (1, 640)}
    >>> check_orthonormal(torch.ones(2, 4), "R")
    Traceback (most recent call last):
    interp.errors.FormatError: R: the rows are not orthonormal (max |R R^T - I| = 4 > 0.001); ...
"""

from __future__ import annotations

import torch

from ..errors import FormatError

ORTHONORMAL_TOL = {torch.float16: 3e-2, torch.bfloat16: 3e-2}  # others (float32, float64): 1e-3


def tolerance(dtype: torch.dtype) -> float:
    """How far from orthonormal stored rows may be: max |R R^T - I| <= 1e-3 (saves in float32 reach 5e-7),
    3e-2 for rows stored in float16 or bfloat16 (rounding alone reaches about 2e-3)."""
    return ORTHONORMAL_TOL.get(dtype, 1e-3)


def check_orthonormal(R: torch.Tensor, name: str, tol: float | None = None) -> None:
    """Refuse rows ``R`` (rank x d) that are not orthonormal within ``tol`` (default :func:`tolerance` of its
    dtype): all-zero rows, rows of another length, or rows that are not at right angles."""
    tol = tolerance(R.dtype) if tol is None else tol
    r = R.detach().to(torch.float64)
    err = float((r @ r.T - torch.eye(r.shape[0], dtype=torch.float64)).abs().max()) if r.numel() else 0.0
    if not err <= tol:
        zero = " (all zero)" if not bool(r.any()) else ""
        raise FormatError(
            f"{name}: the rows are not orthonormal{zero} (max |R R^T - I| = {err:.3g} > {tol:g}); a saved basis "
            "keeps them orthonormal, so the file was edited or is damaged; save the result again"
        )


_ORIGINAL = "parametrizations.weight.original"
_BASE = "parametrizations.weight.0.base"


def compact_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each orthogonal parametrisation stored as its (rank, d) matrix ``R`` only
    (``<prefix>.weight``): torch keeps a (d, d) ``base`` per parametrisation (1.6 MB at d = 640)."""
    out = {}
    for k, v in module.state_dict().items():
        if k.endswith(_BASE):
            continue
        if k.endswith(_ORIGINAL):
            prefix = k[: -len(_ORIGINAL)]
            v = module.get_submodule(prefix.rstrip(".")).weight  # the materialised R
            k = prefix + "weight"
            try:
                check_orthonormal(v, k)
            except FormatError:  # a save refuses what its load would refuse
                raise FormatError(
                    f"cannot save basis {k!r}: its rows are not orthonormal (NaN or inf in its parameters, or a "
                    "diverged run), and a load would refuse it; training stops at the first non-finite loss "
                    "(NonFiniteError): save from before it"
                ) from None
        out[k] = v.detach().contiguous().cpu()
    return out


@torch.no_grad()
def load_compact(module: torch.nn.Module, state: dict[str, torch.Tensor], *, tol: float | None = None) -> None:
    """Inverse of :func:`compact_state`, reproducing each R bit for bit; ``state`` must have exactly its keys, and
    each basis's rows must be orthonormal (:func:`check_orthonormal`, within ``tol``: default by dtype).

    An orthogonal parametrisation of a wide R computes ``R^T = base @ Q(original)``; with ``original = -I``
    the Householder map gives ``Q = [I; 0]`` exactly, so R^T is the first ``rank`` columns of ``base``: set
    them to the saved R^T and complete ``base`` to an orthogonal matrix, so training can continue from there.
    A square R (a full rotation) is ``base @ matrix_exp(original)``: ``base = R`` and ``original = 0``.
    """
    want = {k: tuple(v.shape) for k, v in compact_state(module).items()}
    if set(state) != set(want) or any(tuple(state[k].shape) != want[k] for k in want):
        raise FormatError(
            f"saved weights do not fit {type(module).__name__}: expected { {k: list(s) for k, s in want.items()} }, "
            f"got { {k: list(v.shape) for k, v in state.items()} }"
        )
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise FormatError(f"{k}: holds non-finite values (NaN or inf): a run that diverged, or a damaged file")
    plain = {}
    for k, v in state.items():
        prefix = k[: -len("weight")].rstrip(".") if k == "weight" or k.endswith(".weight") else None
        mod = None if prefix is None else module.get_submodule(prefix) if prefix else module
        par = getattr(getattr(mod, "parametrizations", None), "weight", None)
        if par is not None and hasattr(par[0], "base"):
            check_orthonormal(v, k, tol)  # before any QR: all-zero or edited rows are refused
            R = v.to(par.original.dtype)  # (r, d)
            r, d = R.shape
            if r == d:  # a full rotation: not transposed, and matrix_exp(0) = I, so R = base
                par[0].base.copy_(R)
                par.original.zero_()
                continue
            q, _ = torch.linalg.qr(torch.cat([R.T, torch.randn(d, d - r, dtype=R.dtype)], 1))
            par[0].base.copy_(torch.cat([R.T, q[:, r:]], 1))  # (d, d): R^T, then an orthonormal complement
            par.original.copy_(-torch.eye(r, d, dtype=R.dtype))  # wide R, Householder map: Q(-I) = [I; 0]
            continue
        plain[k] = v
    missing, unexpected = module.load_state_dict(plain, strict=False)
    missing = [m for m in missing if not m.endswith((_ORIGINAL, _BASE))]
    if missing or unexpected:
        raise FormatError(
            f"saved weights do not fit {type(module).__name__}: missing {missing}, unexpected {unexpected}"
        )


def same_rng():
    """Building modules to load into draws random numbers: keep the caller's random state as it was."""
    return torch.random.fork_rng(devices=[])


__all__ = ["compact_state", "load_compact", "same_rng", "check_orthonormal", "tolerance"]
