"""What fit_das trains and minimises for a given basis: its trainable parameter groups, the temperature schedule
of a masked basis, and the weighted interchange cross-entropy plus the basis's own penalty.

Example:
    >>> groups = param_groups(Boundless(32, init_fraction=0.1), DASConfig(boundary_lr=0.05))
    >>> [g.get("lr") for g in groups]                       # the rotation at the run's lr, the boundary at its own
    [None, 0.05]
    >>> param_groups(LowRankRotation(32, 2).requires_grad_(False), DASConfig())
    Traceback (most recent call last):
    interp.errors.DASError: the basis LowRankRotation has no trainable parameters (...); ...
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from .das_config import DASConfig
from .errors import DASError
from .metrics import das_logits
from .subspace import Basis, Boundless


def param_groups(basis: Basis, cfg: DASConfig) -> list[dict]:
    """AdamW groups of the basis's parameters that require grad (no weight decay: it would shrink ``R`` toward 0
    and switch the edit off); a Boundless ``boundary`` at ``cfg.boundary_lr``. DASError when nothing trains."""
    named = [(n, p) for n, p in basis.named_parameters() if p.requires_grad]
    if not named:
        raise DASError(
            f"the basis {type(basis).__name__} has no trainable parameters (a Fixed basis, or one frozen with "
            "requires_grad_(False)); there is nothing to fit: score it with interp.metrics.iia(lm, pairs, at=site, "
            "via=basis), or train a Mask over it (interp.featurizers.Mask)"
        )
    boundary = [p for n, p in named if n == "boundary" and isinstance(basis, Boundless)]
    groups = [{"params": [p for n, p in named if not any(p is b for b in boundary)]}]
    if boundary:
        groups.append({"params": boundary, "lr": cfg.boundary_lr})
    return [g for g in groups if g["params"]]


def annealer(basis: Basis, cfg: DASConfig) -> Callable[[int], None] | None:
    """For a basis with a ``temperature`` attribute (Boundless, a DBM Mask): ``step -> None`` setting it on a
    geometric schedule from ``cfg.temperature[0]`` to ``[1]`` over ``cfg.steps``; None for any other basis."""
    if not hasattr(basis, "temperature"):
        return None
    t0, t1 = cfg.temperature

    def anneal(step: int) -> None:
        basis.temperature = t0 * (t1 / t0) ** (step / max(1, cfg.steps - 1))

    return anneal


def interchange_loss(lm, base, sources, labels, *, at, via, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of ``labels`` under the interchange, each example's multiplied by its weight if given."""
    logits = das_logits(lm, base, sources, at=at, via=via, grad=True)
    if weights is None:
        return F.cross_entropy(logits.float(), labels)
    return (F.cross_entropy(logits.float(), labels, reduction="none") * weights).mean()


def regulariser(basis: Basis, cfg: DASConfig) -> Callable[[], torch.Tensor] | None:
    """The basis's own terms added to each step's loss: ``cfg.penalty_weight * basis.penalty()`` when it defines
    ``penalty()`` (a DBM Mask's sparsity), and Boundless's ``cfg.boundary_weight`` times its boundary; or None."""
    penalty = getattr(basis, "penalty", None)
    terms = []
    if callable(penalty) and cfg.penalty_weight:
        terms.append(lambda: cfg.penalty_weight * penalty())
    if isinstance(basis, Boundless) and cfg.boundary_weight:
        terms.append(lambda: cfg.boundary_weight * basis.boundary.clamp(0, 1))
    if not terms:
        return None
    return lambda: sum(t() for t in terms)


__all__ = ["param_groups", "annealer", "interchange_loss", "regulariser"]
