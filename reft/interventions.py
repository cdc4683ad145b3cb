"""ReFT interventions: presets of the subspace edit ``h + R^T (target(h) - R h)`` from :mod:`interp.subspace`.

Example:
    >>> iv = LoReFT(640, rank=4)                  # h + R^T (W h + b - R h),  R with orthonormal rows
    >>> iv(torch.randn(2, 3, 640)).shape
    torch.Size([2, 3, 640])

Every form in the ablation table of Wu et al. (NeurIPS 2024, "ReFT: Representation Finetuning for Language
Models") is one choice of basis ``R`` and of ``target``:

    LoReFT    h + R^T (W h + b - R h)     R orthonormal                target = W h + b
    NoReFT    h + R^T (W h + b - R h)     R unconstrained              target = W h + b
    DiReFT    h + W2^T (W1 h + b)         W2 unconstrained             target = W1 h + b + W2 h
    LoBiReFT  h + R^T b                   R orthonormal                target = R h + b
    ConsReFT  h + R^T (b - R h)           R orthonormal                target = b
    LoDiReFT  h + R^T (W h + b)           R orthonormal                target = W h + b + R h

Your own: subclass :class:`ReftIntervention`, build parameters in ``__init__`` and return the rank-dim
target in ``target(h)`` (see its docstring). Saving, loading, serving and training then work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from interp.checks import as_int
from interp.errors import ReftError  # noqa: F401  (defined in interp.errors, re-exported here)
from interp.interventions import Intervention
from interp.subspace import BasisError, LowRankRotation, edit

REGISTRY: dict[str, type[ReftIntervention]] = {}  # the one registry: class name -> class (every subclass)


class ReftIntervention(nn.Module, Intervention):
    """Base class: ``h + R^T (target(h) - R h)`` with ``R = self.basis_weight()`` (rank x d_model).

    Example (a new intervention in one small class, registered for save/load by subclassing):
        >>> class GatedReFT(ReftIntervention):
        ...     '''h + R^T (g(h) * (W h + b) - R h) with a scalar gate g(h) = sigmoid(v . h).'''
        ...     def __init__(self, d_model, rank, *, dtype=torch.float32):
        ...         super().__init__(d_model, rank, dtype=dtype)
        ...         self.W = nn.Linear(d_model, rank, dtype=dtype)
        ...         self.gate = nn.Linear(d_model, 1, dtype=dtype)
        ...     def target(self, h):                                   # (..., d) -> (..., rank)
        ...         return torch.sigmoid(self.gate(h)) * self.W(h)
        >>> GatedReFT(640, 4)(torch.randn(2, 640)).shape
        torch.Size([2, 640])

    The default basis is an orthonormal :class:`~interp.subspace.LowRankRotation` (``self.R``); set
    ``orthogonal=False`` for a plain linear map. Extra constructor options go through ``super().__init__``
    as keywords so that :func:`reft.save` can record them (``self.options``).
    """

    needs_source = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls

    def __init__(self, d_model: int, rank: int, *, orthogonal: bool = True, dtype=torch.float32, **options):
        super().__init__()
        name = type(self).__name__
        d_model = as_int(d_model, f"{name} d_model", low=1, error=ReftError, hint="; use lm.d_model")
        rank = as_int(
            rank,
            f"{name} rank",
            low=1,
            high=d_model,
            error=ReftError,
            hint=f" (d_model={d_model}); ReFT ranks are small (1-32)",
        )
        if not isinstance(orthogonal, bool):
            raise ReftError(f"{name}: orthogonal must be True or False; got {orthogonal!r}")
        self.d_model, self.rank = d_model, rank
        self.options = dict(options)
        if orthogonal:
            self.R = LowRankRotation(d_model, rank, dtype=dtype)  # (rank, d), orthonormal rows
        else:
            self.R = nn.Linear(d_model, rank, bias=False, dtype=dtype)

    def basis_weight(self) -> torch.Tensor:
        """The (rank, d_model) matrix the edit writes along."""
        return self.R.weight

    def target(self, h: torch.Tensor) -> torch.Tensor:
        """The rank-dim coordinates the edit sets along the basis: (..., d) -> (..., rank)."""
        raise NotImplementedError(f"{type(self).__name__} must define target(h)")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return edit(h, self.basis_weight(), self.target(h))  # (..., d) -> (..., d)

    def __call__(self, h, source=None):  # interp.Intervention's signature; source is unused by ReFT
        """The edit of ``h`` (..., d), computed in this intervention's dtype and on its device (float32
        parameters edit a bf16 model's activations in float32); the result is in ``h``'s dtype, on its device.

        Example:
            >>> LoReFT(8, rank=2)(torch.randn(3, 8, dtype=torch.bfloat16)).dtype
            torch.bfloat16
        """
        p = next(self.parameters(), None)
        x = h if p is None else h.to(p.device, p.dtype)  # (..., d) in the intervention's dtype
        return nn.Module.__call__(self, x).to(h.device, h.dtype)

    def check(self, width: int) -> None:
        if width != self.d_model:
            raise BasisError(
                f"{type(self).__name__} has d_model={self.d_model} but the site's vectors have width {width}; "
                f"build it with d_model={width} (lm.d_model for residual sites)"
            )

    def no_decay_parameters(self) -> list[nn.Parameter]:
        """Parameters that must not get weight decay: the basis (decay shrinks R and turns the edit off)."""
        return list(self.R.parameters())

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild it (saved as JSON by :func:`reft.save`)."""
        return {"d_model": self.d_model, "rank": self.rank, **self.options}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, rank={self.rank}"


class LoReFT(ReftIntervention):
    """Low-rank linear subspace ReFT: ``h + R^T (W h + b - R h)``, R with orthonormal rows.

    Example:
        >>> iv = LoReFT(640, rank=4)
        >>> sum(p.numel() for p in iv.parameters())      # R, W: 4 x 640 each, b: 4
        5124
    """

    def __init__(self, d_model: int, rank: int, *, dtype=torch.float32):
        super().__init__(d_model, rank, dtype=dtype)
        self.W = nn.Linear(d_model, rank, dtype=dtype)  # W h + b

    def target(self, h):
        return self.W(h)  # (..., d) -> (..., r)


class NoReFT(LoReFT):
    """LoReFT without the orthogonality constraint on R: ``h + R^T (W h + b - R h)``."""

    def __init__(self, d_model: int, rank: int, *, dtype=torch.float32):
        ReftIntervention.__init__(self, d_model, rank, orthogonal=False, dtype=dtype)
        self.W = nn.Linear(d_model, rank, dtype=dtype)


class DiReFT(ReftIntervention):
    """Direct ReFT: ``h + W2^T (W1 h + b)``, no orthogonality and no subtraction (cheaper, as in the paper).

    Example:
        >>> DiReFT(640, rank=4)(torch.zeros(1, 640)).abs().sum() > 0     # b != 0 moves even h = 0
        tensor(True)
    """

    def __init__(self, d_model: int, rank: int, *, dtype=torch.float32):
        super().__init__(d_model, rank, orthogonal=False, dtype=dtype)  # self.R plays W2
        self.W = nn.Linear(d_model, rank, dtype=dtype)  # W1 h + b
        nn.init.uniform_(self.W.bias, -0.1, 0.1)

    def forward(self, h):
        return h + self.W(h) @ self.R.weight.to(h.dtype)  # (..., r) @ (r, d): the edit with target = W1 h + b + W2 h

    def target(self, h):
        return self.W(h) + h @ self.R.weight.to(h.dtype).T


class LoBiReFT(ReftIntervention):
    """Ablation: a learned bias in the subspace, ``h + R^T b``."""

    def __init__(self, d_model: int, rank: int, *, dtype=torch.float32):
        super().__init__(d_model, rank, dtype=dtype)
        self.b = nn.Parameter(torch.zeros(rank, dtype=dtype))

    def target(self, h):
        return h @ self.R.weight.to(h.dtype).T + self.b.to(h.dtype)


class ConsReFT(ReftIntervention):
    """Ablation: set the subspace coordinates to a learned constant, ``h + R^T (b - R h)``."""

    def __init__(self, d_model: int, rank: int, *, dtype=torch.float32):
        super().__init__(d_model, rank, dtype=dtype)
        self.b = nn.Parameter(torch.zeros(rank, dtype=dtype))

    def target(self, h):
        return self.b.to(h.dtype).expand(*h.shape[:-1], self.rank)


class LoDiReFT(ReftIntervention):
    """Ablation: LoReFT without the subtraction, ``h + R^T (W h + b)``, R orthonormal."""

    def __init__(self, d_model: int, rank: int, *, dtype=torch.float32):
        super().__init__(d_model, rank, dtype=dtype)
        self.W = nn.Linear(d_model, rank, dtype=dtype)

    def target(self, h):
        return self.W(h) + h @ self.R.weight.to(h.dtype).T


KINDS = tuple(name.lower() for name in REGISTRY)  # the paper's kinds, by the name the CLI takes: ("loreft", ...)


def lookup(name: str) -> type[ReftIntervention]:
    """The registered class called ``name``, in any case: ``lookup("loreft") is LoReFT``; a subclass defined
    anywhere registers itself under its class name.

    Example:
        >>> lookup("LoReFT") is lookup("loreft") is LoReFT
        True
    """
    if not isinstance(name, str):
        raise ReftError(f"kind must be a name such as 'loreft'; got {name!r}; known: {', '.join(KINDS)}")
    found = REGISTRY.get(name) or {k.lower(): c for k, c in REGISTRY.items()}.get(name.lower())
    if found is None:
        raise ReftError(f"unknown intervention kind {name!r}; known: {', '.join(KINDS)} (or a registered class name)")
    return found


def make(kind: str, d_model: int, rank: int, *, dtype=torch.float32) -> ReftIntervention:
    """Build an intervention by name (the CLI's ``--kind``): ``make("loreft", lm.d_model, 4)``."""
    return lookup(kind)(d_model, rank, dtype=dtype)
