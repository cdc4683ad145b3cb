"""Orthonormal bases of linear subspaces, and the one edit that DII, DAS and ReFT share.

    edit(h) = h + R^T (m * (target - R h))

``R`` is a ``rank x d`` matrix with orthonormal rows and ``m`` an optional soft mask over its rows
(Boundless DAS, Wu et al. 2023); with ``target = R s`` this is a distributed interchange intervention
(Geiger et al. 2023): the part of ``h`` in the row space of ``R`` is replaced by the source's, the rest is
kept. A full-rank basis makes it activation patching; LoReFT uses ``target = W h + b`` (Wu et al. 2024).

Example:
    >>> R = LowRankRotation(32, rank=4)          # trainable, rows stay orthonormal under optimisation
    >>> h, s = torch.randn(3, 32), torch.randn(3, 32)
    >>> h2 = R.edit(h, R.project(s))             # interchange the 4-dim subspace of s into h
    >>> torch.allclose(R.project(h2), R.project(s), atol=1e-5)                # R h' = R s ...
    True
    >>> torch.allclose(h2 - h, (h2 - h) @ R.weight.T @ R.weight, atol=1e-5)   # ... and the rest of h is kept
    True
    >>> Coordinate(6, dims=[0, 2]).weight        # neuron-aligned basis: rows of the identity
    tensor([[1., 0., 0., 0., 0., 0.],
            [0., 0., 1., 0., 0., 0.]])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrizations

from .checks import as_float, as_int, finite, is_int
from .errors import BasisError  # noqa: F401  (defined in interp.errors, re-exported here)


def edit(h: torch.Tensor, R: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    """``h + R^T (mask * (target - R h))``.  h: (..., d), R: (r, d), target: (..., r), mask: (r,).

    Computed in R's dtype and on R's device (a float32 basis edits bf16 activations in float32); the result
    comes back in h's dtype, on h's device.

    Example:
        >>> R = LowRankRotation(8, rank=2).weight                 # float32
        >>> h = torch.randn(3, 8, dtype=torch.bfloat16)          # activations of a bf16 model
        >>> edit(h, R, torch.zeros(3, 2)).dtype
        torch.bfloat16
    """
    x = h.to(R.device, R.dtype)  # (..., d) in the basis's dtype
    delta = target.to(x.device, x.dtype) - x @ R.T  # (..., r)
    if mask is not None:
        delta = delta * mask.to(x.device, x.dtype)
    return (x + delta @ R).to(h.device, h.dtype)  # (..., d)


class Basis(nn.Module):
    """A ``rank x d_model`` matrix with orthonormal rows (``weight``), optionally with a soft mask."""

    d_model: int
    rank: int
    linear = True  # the edit is h + R^T (m * (target - R h)); False: the basis defines interchange() itself

    @property
    def weight(self) -> torch.Tensor:
        raise NotImplementedError

    def mask(self) -> torch.Tensor | None:
        return None

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Coordinates of ``h`` in the subspace: (..., d) -> (..., rank)."""
        self.check_width(h.shape[-1])
        W = self.weight
        return (h.to(W.device, W.dtype) @ W.T).to(h.device, h.dtype)  # in the basis's dtype, back in h's

    def edit(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Set the subspace coordinates of ``h`` to ``target`` (masked where the basis has a mask)."""
        self.check_width(h.shape[-1])
        return edit(h, self.weight, target, self.mask())

    def interchange(self, h: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """DII: the subspace part of ``h`` replaced by that of ``source``."""
        self.check_width(h.shape[-1])
        R = self.weight
        return edit(h, R, source.to(R.device, R.dtype) @ R.T, self.mask())  # (..., d) -> (..., r) -> (..., d)

    def check_width(self, width: int, what: str = "vectors") -> None:
        if width != self.d_model:
            raise BasisError(
                f"{type(self).__name__} has width {self.d_model} but the {what} have width {width}; "
                f"build the basis with d_model={width} (interp.sites.resolve(lm, site).width gives a site's "
                "width: lm.d_model for residual sites, lm.spec.head_dim for a head, the module's own for Site.module)"
            )

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, rank={self.rank}"


class Coordinate(Basis):
    """Neuron-aligned subspace: the coordinate axes ``dims`` (no learning).

    Example:
        >>> Coordinate(640, dims=range(320)).weight.shape
        torch.Size([320, 640])
    """

    def __init__(self, d_model: int, dims):
        super().__init__()
        d_model = as_int(d_model, "Coordinate d_model", low=1, error=BasisError)
        given = [d.item() if isinstance(d, torch.Tensor) and d.numel() == 1 else d for d in dims]
        ok = given and all(is_int(d) and 0 <= d < d_model for d in given)  # 1.7 is not neuron 1: no truncation
        if not ok or len(set(given)) != len(given):
            raise BasisError(f"Coordinate dims must be distinct integers in [0, {d_model}); got {given}")
        dims = torch.as_tensor([int(d) for d in given], dtype=torch.long)
        self.d_model, self.rank = d_model, dims.numel()
        self.register_buffer("_weight", torch.eye(d_model)[dims])

    @property
    def weight(self):
        return self._weight


def independent_rows(R: torch.Tensor) -> int:
    """The numerical rank of ``R``: singular values above 1e-5 of the largest (0 for an all-zero matrix)."""
    s = torch.linalg.svdvals(R.detach().double().cpu())  # largest first
    return int((s > s[0] * 1e-5).sum()) if s.numel() and s[0] > 0 else 0


def orthonormal_rows(R: torch.Tensor) -> torch.Tensor:
    """Orthonormal rows spanning the rows of ``R`` (k, d), by QR; row i keeps the sign of R's row i's new part
    (a single row comes back as ``R / |R|``)."""
    q, r = torch.linalg.qr(R.T)  # (d, k), (k, k)
    sign = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(q.dtype)
    return (q * sign).T.contiguous() + 0.0  # + 0.0: no -0. entries


class Fixed(Basis):
    """A frozen basis: the row space of given vectors, orthonormalised by QR; nothing in it trains.

    ``rows`` is a (k, d) matrix or a (d,) vector (one row), e.g. a difference of class means or a probe's
    direction (:mod:`interp.featurizers` returns these). Use it as ``via=`` of any interchange, or under a
    :class:`interp.featurizers.Mask`.

    Example:
        >>> B = Fixed(torch.tensor([3.0, 4.0, 0.0]))   # one direction: normalised to length 1
        >>> B
        Fixed(d_model=3, rank=1)
        >>> B.weight
        tensor([[0.6000, 0.8000, 0.0000]])
        >>> Fixed(torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])).weight @ torch.tensor([0.0, 0.0, 5.0])
        tensor([0., 0.])
    """

    def __init__(self, rows):
        super().__init__()
        if isinstance(rows, Basis):
            rows = rows.weight.detach()
        if not isinstance(rows, torch.Tensor):
            try:
                rows = torch.as_tensor(rows, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                raise BasisError(
                    f"Fixed(rows) takes a (k, d) tensor of rows or a (d,) vector; got {type(rows).__name__}"
                ) from None
        if rows.dim() == 1:
            rows = rows[None]
        if rows.dim() != 2 or rows.shape[0] < 1 or rows.shape[1] < 1 or rows.dtype == torch.bool:
            raise BasisError(
                f"Fixed(rows) takes a (k, d) tensor of rows or a (d,) vector of numbers; got a {rows.dtype} tensor "
                f"of shape {tuple(rows.shape)}"
            )
        if rows.is_meta:
            raise BasisError("Fixed(rows) got a tensor on the meta device (a shape with no values); pass real rows")
        rows = rows.detach().to(torch.float64 if rows.dtype == torch.float64 else torch.float32)
        finite(rows, f"Fixed(rows) of shape {tuple(rows.shape)}", error=BasisError)
        k, d = rows.shape
        if k > d:
            raise BasisError(f"Fixed(rows) got {k} rows of width {d}: at most {d} independent rows fit in width {d}")
        found = independent_rows(rows)
        if found < k:
            raise BasisError(
                f"Fixed(rows) needs {k} linearly independent rows; got a rank-deficient {k} x {d} matrix (numerical "
                f"rank {found}: zero, repeated or dependent rows); drop the dependent rows or keep {max(found, 1)}"
            )
        self.d_model, self.rank = d, k
        self.register_buffer("_weight", orthonormal_rows(rows.cpu()).to(rows.device))

    @property
    def weight(self):
        return self._weight


class LowRankRotation(Basis):
    """A trainable ``rank``-dim subspace; its rows stay orthonormal under any optimiser (parametrisation).

    Example:
        >>> R = LowRankRotation(640, rank=4)
        >>> torch.allclose(R.weight @ R.weight.T, torch.eye(4), atol=1e-5)
        True
        >>> R = LowRankRotation(lm.d_model, rank=4, init=das.basis.weight)   # start from a known subspace
        >>> torch.allclose(R.weight.T @ R.weight, das.rotation.T @ das.rotation, atol=1e-5)   # the same one
        True
    """

    def __init__(self, d_model: int, rank: int, *, init: torch.Tensor | None = None, dtype=torch.float32):
        super().__init__()
        d_model = as_int(d_model, f"{type(self).__name__} d_model", low=1, error=BasisError)
        rank = as_int(rank, "rank", low=1, high=d_model, error=BasisError, hint=f" (d_model={d_model})")
        self.d_model, self.rank = d_model, rank
        lin = nn.Linear(self.d_model, self.rank, bias=False, dtype=dtype)
        nn.init.orthogonal_(lin.weight)
        self.proj = parametrizations.orthogonal(lin)
        if init is not None:
            self.set_weight(init)

    @property
    def weight(self):
        return self.proj.weight  # (rank, d_model), orthonormal rows

    def set_weight(self, R: torch.Tensor) -> None:
        """Point the basis at the row space of ``R`` (orthonormalised by QR first); its rows must be independent."""
        R = torch.as_tensor(R, dtype=self.proj.weight.dtype)
        if R.shape != (self.rank, self.d_model):
            raise BasisError(f"init must have shape ({self.rank}, {self.d_model}); got {tuple(R.shape)}")
        finite(R, "init", error=BasisError)
        found = independent_rows(R)
        if found < self.rank:
            raise BasisError(
                f"init must have {self.rank} linearly independent rows to span a {self.rank}-dim subspace; got a "
                f"rank-deficient matrix (numerical rank {found} of {self.rank}: zero, repeated or dependent rows); "
                f"pass rows that span the subspace, or build the basis with rank={max(found, 1)}"
            )
        q, _ = torch.linalg.qr(R.T)  # (d, r) with orthonormal columns spanning the rows of R
        with torch.no_grad():
            self.proj.weight = q.T.contiguous()


class Rotation(LowRankRotation):
    """A full ``d x d`` rotation: with no mask, interchange along it equals activation patching."""

    def __init__(self, d_model: int, *, init: torch.Tensor | None = None, dtype=torch.float32):
        super().__init__(d_model, d_model, init=init, dtype=dtype)


class Annealed:
    """A basis with a soft mask ``sigmoid(x / temperature)`` that the trainer anneals (Boundless DAS, DBM's Mask).

    Example:
        >>> B = Boundless(8, temperature=50.0)
        >>> B.temperature = 0.5                        # what fit_das does step by step (DASConfig.temperature)
        >>> B.temperature
        0.5
    """

    @property
    def temperature(self) -> float:
        """The mask's temperature (> 0; the mask is ``sigmoid(x / temperature)``)."""
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = as_float(
            value,
            f"{type(self).__name__} temperature",
            low=0,
            open_low=True,
            error=BasisError,
            hint="; anneal it toward 0 (e.g. 50 -> 0.1) but never to 0, where the mask's logits are NaN",
        )


class Boundless(Annealed, LowRankRotation):
    """Boundless DAS: a full rotation plus a learned soft mask ``sigmoid((b*d - i) / temperature)``.

    The boundary ``b`` in [0, 1] is the fraction of rotated dimensions interchanged; anneal
    ``temperature`` toward 0 during training to make the mask hard.

    Example:
        >>> B = Boundless(640, init_fraction=0.1, temperature=50.0)
        >>> B.effective_rank()
        64
    """

    def __init__(self, d_model: int, *, init_fraction: float = 0.5, temperature: float = 1.0, dtype=torch.float32):
        super().__init__(d_model, d_model, dtype=dtype)
        init_fraction = as_float(init_fraction, "init_fraction", low=0, high=1, open_low=True, error=BasisError)
        self.boundary = nn.Parameter(torch.tensor(init_fraction, dtype=dtype))
        self.temperature = temperature

    def mask(self):
        idx = torch.arange(self.d_model, dtype=self.boundary.dtype, device=self.boundary.device)
        return torch.sigmoid((self.boundary.clamp(0, 1) * self.d_model - idx) / self.temperature)

    def effective_rank(self) -> int:
        return int(round(float(self.boundary.detach().clamp(0, 1)) * self.d_model))
