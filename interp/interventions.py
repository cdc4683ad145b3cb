"""Interventions: what to do with the vectors selected at a site.

Each is a small object called on the selected vectors ``h`` (B, k, w), with the source's vectors at the same
site when it needs them, and returns the edited vectors. They all reduce to the subspace edit
``h + R^T (target - R h)`` of :mod:`interp.subspace`; ``via=None`` means the whole vector (R = I).

Example:
    >>> h, s = torch.randn(2, 1, 32), torch.randn(2, 1, 32)     # (B, k, w) vectors at a site: base, source
    >>> torch.equal(Interchange()(h, s), s)                     # activation patching: take the source's vector
    True
    >>> R = LowRankRotation(32, 4)
    >>> out = Interchange(R)(h, s)                              # DII along a 4-dim subspace
    >>> torch.allclose(R.project(out), R.project(s), atol=1e-5) # the source's coordinates in it, h's elsewhere
    True
    >>> Zero()(h).abs().sum()                                   # zero ablation
    tensor(0.)
    >>> v = torch.randn(32)
    >>> torch.allclose(Steer(v, scale=4.0)(h), h + 4 * v)       # additive steering
    True
    >>> mean = collect(lm, prompts, at=site).mean((0, 1))       # (d_model,): the mean over some prompts
    >>> intervene(lm, base, at=site, via=Mean(mean)).logits.shape   # mean ablation in a run
    torch.Size([4, 97])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .checks import as_float, finite
from .errors import SiteError
from .subspace import Basis, BasisError


class Intervention:
    """Base class. Subclasses set ``needs_source`` and implement ``__call__(h, source)``."""

    needs_source = False
    via: Basis | None = None

    def __call__(self, h: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def check(self, width: int) -> None:
        """Raise before any forward pass if this intervention cannot edit vectors of ``width``."""
        if self.via is not None:
            self.via.check_width(width, "site's vectors")

    def __post_init__(self):  # the dataclass interventions: checked when built, not inside a forward pass
        if isinstance(self.via, torch.Tensor):  # a direction or rows given as they are: say how, not its numbers
            shape = tuple(self.via.shape)
            raise TypeError(
                f"{type(self).__name__}(via=...) must be None (the whole vector) or a Basis; got a tensor of shape "
                f"{shape}: wrap rows or a direction as interp.Fixed(vectors) (orthonormalised, not trained)"
            )
        if self.via is not None and not isinstance(self.via, Basis):
            raise TypeError(
                f"{type(self).__name__}(via=...) must be None (the whole vector) or a Basis such as "
                f"LowRankRotation(lm.d_model, rank=4); got {type(self.via).__name__}: {self.via!r}"
            )


def _vector(v, what: str) -> torch.Tensor:
    """A finite (w,) vector of numbers (a tensor, or a list or array of numbers)."""
    if not isinstance(v, torch.Tensor):
        try:
            v = torch.as_tensor(v, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise BasisError(f"{what} must be a (width,) tensor of numbers; got {type(v).__name__}: {v!r}") from None
    if v.is_meta:
        raise BasisError(
            f"{what} is on the meta device: a shape with no values (as from a model built under init_empty_weights "
            "or device_map='meta'); compute it from a model whose weights are loaded, e.g. "
            "collect(lm, prompts, at=site).mean((0, 1))"
        )
    if v.dim() != 1 or v.dtype == torch.bool:
        raise BasisError(
            f"{what} must be a (width,) tensor of numbers, e.g. collect(lm, prompts, at=site).mean((0, 1)); got a "
            f"{v.dtype} tensor of shape {tuple(v.shape)}"
        )
    return finite(v, what, error=BasisError)


def _replace(h, target_full, via):
    """Set the ``via`` part of ``h`` to that of ``target_full`` (the whole vector when via is None)."""
    if target_full.shape[-1] != h.shape[-1]:  # at an attn_pattern site: a source of another length
        raise SiteError(
            f"the source's vectors have {target_full.shape[-1]} entries but the base's {h.shape[-1]}: the source was "
            "taken at another site, or (attn_pattern: one entry per key column) from prompts of another length"
        )
    if via is None:
        return target_full.to(h.device, h.dtype).expand_as(h)
    return via.interchange(h, target_full)


@dataclass(eq=False)
class Interchange(Intervention):
    """DII: the ``via`` subspace of the base vector is replaced by the source's (all of it if via=None)."""

    via: Basis | None = None
    needs_source = True

    def __call__(self, h, source=None):
        if source is None:
            raise ValueError("Interchange needs source activations")
        return _replace(h, source, self.via)


@dataclass(eq=False)
class Zero(Intervention):
    """Zero ablation of the ``via`` subspace (of the whole vector if via=None)."""

    via: Basis | None = None

    def __call__(self, h, source=None):
        return _replace(h, torch.zeros_like(h), self.via)


@dataclass(eq=False)
class Mean(Intervention):
    """Mean ablation: the ``via`` part set to that of ``mean`` (a (w,) vector, e.g. from :func:`collect`)."""

    mean: torch.Tensor
    via: Basis | None = None

    def __post_init__(self):
        super().__post_init__()
        self.mean = _vector(self.mean, "Mean ablation vector")

    def __call__(self, h, source=None):
        return _replace(h, self.mean.to(h.device, h.dtype), self.via)

    def check(self, width):
        if self.mean.shape != (width,):
            raise BasisError(f"Mean ablation vector has shape {tuple(self.mean.shape)}; expected ({width},)")
        super().check(width)


@dataclass(eq=False)
class Steer(Intervention):
    """Additive steering: ``h + scale * vector``."""

    vector: torch.Tensor
    scale: float = 1.0

    def __post_init__(self):
        self.vector = _vector(self.vector, "steering vector")
        self.scale = as_float(self.scale, "Steer scale", error=BasisError, hint="; try scale=4.0")

    def __call__(self, h, source=None):
        v = self.vector.to(h.device)  # added in the vector's dtype (float32 by default), back in h's
        v = v if v.is_floating_point() else v.to(h.dtype)
        return (h.to(v.dtype) + self.scale * v).to(h.dtype)

    def check(self, width):
        if self.vector.shape != (width,):
            raise BasisError(f"steering vector has shape {tuple(self.vector.shape)}; expected ({width},)")


def as_intervention(via) -> Intervention:
    """``None`` -> full interchange; a Basis -> interchange along it; an Intervention as is."""
    if via is None:
        return Interchange()
    if isinstance(via, Basis):
        return Interchange(via)
    if isinstance(via, Intervention):
        return via
    hint = f" of shape {tuple(via.shape)}: wrap it as interp.Fixed(vectors)" if torch.is_tensor(via) else ""
    raise TypeError(f"via must be None, a Basis or an Intervention; got {type(via).__name__}{hint}")
